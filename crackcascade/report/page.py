"""The self-contained HTML report: summary, per-scale sections and a gallery of overlays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crackcascade.labels import get_task
from crackcascade.report.images import CLASS_COLORS, LIGHT_BLUE, png_data_uri, thumbnail
from crackcascade.report.markup import bar_chart_svg, escape, html_table, relative_href
from crackcascade.report.sentences import (
    count_of,
    describe,
    format_number,
    human,
    predicted_class,
    record_scale,
    size_phrases,
    summarize,
)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;max-width:1200px;
padding:0 1em;color:#222;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0 1.2em}caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#eef3f7}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:middle;
border:1px solid #888}
svg.chart{margin:.4em 1.2em .8em 0;font-size:11px;background:#fafafa;border:1px solid #ddd}
svg.chart text{fill:#333}svg.chart .chart-title{font-weight:600;font-size:12px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:1em}
figure{margin:0;padding:.6em;border:1px solid #ddd;border-radius:4px;background:#fcfcfc}
figure img{display:block;max-width:100%;height:auto;margin:0 auto .4em;image-rendering:auto}
figcaption .name{font-family:monospace;font-size:.85em;word-break:break-all;color:#555}
figcaption .sentence{margin:.3em 0;font-weight:500}figcaption .numbers{font-size:.85em;color:#444}
.noimage{height:120px;display:flex;align-items:center;justify-content:center;background:#eee;color:#777}
details{font-size:.8em;margin-top:.3em}details table{margin:.3em 0}
"""


def _key_numbers(record: Mapping[str, Any]) -> list[str]:
    numbers = []
    scale = record_scale(record)
    if scale is not None:
        probability = ((record.get("tasks") or {}).get("scene") or {}).get("probability")
        numbers.append(f"scale {human(scale)}" + (f" ({probability:.2f})" if probability is not None else ""))
    gate = record.get("gate")
    if gate is not None:
        verdict = "passed" if gate.get("passed") else "rejected"
        score, threshold = gate.get("score"), gate.get("threshold")
        if score is not None and threshold is not None:
            verdict += f" ({score:.2f} vs {threshold:.2f})"
        numbers.append(f"gate {verdict}")
    measurements = record.get("measurements")
    if measurements:
        numbers.append(count_of(int(measurements.get("count") or 0), "crack"))
        numbers.extend(size_phrases(measurements))
        if measurements.get("mean_width_px") is not None:
            numbers.append(f"mean width {format_number(measurements['mean_width_px'], 1)} px")
    for name, fraction in (record.get("fractions") or {}).items():
        numbers.append(f"{human(name)} {100 * float(fraction):.2f}% of pixels")
    if record.get("height") and record.get("width"):
        numbers.append(f"{record['width']}×{record['height']} px")
    return numbers


def _predictions_table(record: Mapping[str, Any]) -> str:
    tasks = record.get("tasks") or {}
    if not tasks:
        return ""
    rows = [
        {
            "task": get_task(name).title if _known_task(name) else name,
            "class": human(str(entry.get("class"))),
            "probability": entry.get("probability"),
        }
        for name, entry in tasks.items()
    ]
    return f"<details><summary>all predictions</summary>{html_table(rows)}</details>"


def _known_task(name: str) -> bool:
    try:
        get_task(name)
    except KeyError:
        return False
    return True


def _gallery_item(
    record: Mapping[str, Any],
    folder: Path,
    overlays: Mapping[str, str],
    thumbnails: Mapping[str, np.ndarray],
    max_side: int,
) -> str:
    path = str(record.get("path", ""))
    href = relative_href(overlays[path], folder) if path in overlays else None
    if path in thumbnails:
        picture = thumbnails[path]
        if max(picture.shape[:2]) > max_side:
            picture = thumbnail(picture, max_side)
        body = (
            f'<img src="{png_data_uri(picture)}" width="{picture.shape[1]}" height="{picture.shape[0]}" '
            f'alt="{escape(path)}">'
        )
    else:
        body = '<div class="noimage">no preview</div>'
    if href is not None:
        body = f'<a href="{escape(href)}" title="open the full-size overlay">{body}</a>'
    name = escape(path) if href is None else f'<a href="{escape(href)}">{escape(path)}</a>'
    numbers = " · ".join(escape(n) for n in _key_numbers(record))
    return (
        f'<figure>{body}<figcaption><div class="name">{name}</div>'
        f'<p class="sentence">{escape(describe(record))}</p><div class="numbers">{numbers}</div>'
        f"{_predictions_table(record)}</figcaption></figure>"
    )


def _summary_section(summary: Mapping[str, Any]) -> str:
    length = f"{format_number(summary['total_length_px'], 0)} px"
    if summary["total_length_mm"] is not None:
        length += f" ({format_number(summary['total_length_mm'], 1)} mm over the images measured in mm)"
    rows = [
        {"quantity": "images", "value": summary["images"]},
        *({"quantity": f"{human(s)} scale", "value": c["images"]} for s, c in summary["per_scale"].items()),
        {"quantity": "segmented", "value": summary["segmented"]},
        {"quantity": "gated out", "value": summary["gated_out"]},
        {"quantity": "with cracks", "value": summary["with_cracks"]},
        {"quantity": "cracks", "value": summary["cracks"]},
        {"quantity": "total crack length", "value": length},
    ]
    return '<section id="summary"><h2>Run summary</h2>' + html_table(rows) + "</section>"


def _scale_section(records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    per_scale = summary["per_scale"]
    if not per_scale:
        return ""
    scales = list(per_scale)
    rows = [
        {
            "scale": human(s),
            "images": c["images"],
            "segmented": c["segmented"],
            "gated out": c["gated_out"],
            "with cracks": c["with_cracks"],
            "cracks": c["cracks"],
            "total length px": round(c["total_length_px"]),
        }
        for s, c in per_scale.items()
    ]
    series = ("images", "segmented", "gated out", "with cracks")
    keys = ("images", "segmented", "gated_out", "with_cracks")
    figures = [
        bar_chart_svg(
            "Images per scale", [human(s) for s in scales], series, [[per_scale[s][k] for k in keys] for s in scales]
        ),
    ]
    levels = get_task("damage_level").classes
    counts = {s: dict.fromkeys(levels, 0) for s in scales}
    found = False
    for record in records:
        level = predicted_class(record, "damage_level")
        if level in levels:
            counts[record_scale(record) or "unknown"][level] += 1
            found = True
    if found:
        figures.append(
            bar_chart_svg(
                "Predicted damage level per scale",
                [human(s) for s in scales],
                [human(level) for level in levels],
                [[counts[s][level] for level in levels] for s in scales],
            )
        )
    return (
        '<section id="scales"><h2>Per scale</h2>' + html_table(rows) + "<div>" + "".join(figures) + "</div></section>"
    )


def write_report(
    path: Path,
    records: Sequence[Mapping[str, Any]],
    *,
    title: str = "crackcascade predictions",
    tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    overlays: Mapping[str, str] | None = None,
    thumbnails: Mapping[str, np.ndarray] | None = None,
    max_thumbnail_side: int = 256,
) -> Path:
    """Write a run's self-contained HTML report: summary, tables, per-scale figures and a gallery.

    The file needs no server, script or network: CSS and SVG figures are inline, thumbnails
    are embedded as ``data:image/png`` URIs and link to the overlay files by paths relative to
    the report's folder. All text (file names included) is HTML-escaped.

    Args:
        path: HTML file to write; its folder is created.
        records: Per-image prediction records (see the module docstring), in gallery order.
        title: Page title and heading.
        tables: Extra tables by caption, each a list of rows (mappings) whose keys are the
            columns, e.g. ungated-vs-gated evaluation rows per scale; floats show 3 decimals.
        overlays: Overlay image file of a record, by record ``"path"``; an absolute path, or
            a relative one (see :func:`relative_href`).
        thumbnails: Thumbnail image (uint8 array) of a record, by record ``"path"``, e.g.
            from :func:`overlay_thumbnail`; larger ones are shrunk to ``max_thumbnail_side``.
        max_thumbnail_side: Largest side of an embedded thumbnail in pixels.

    Returns:
        ``path``.
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarize(records)
    legend = "".join(
        f'<span style="background:rgb{color}"></span>{escape(name)}'
        for name, color in (("photo (tinted)", LIGHT_BLUE), *CLASS_COLORS.items())
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _summary_section(summary),
    ]
    for caption, rows in (tables or {}).items():
        parts.append(f'<section class="table"><h2>{escape(caption)}</h2>{html_table(rows)}</section>')
    parts.append(_scale_section(records, summary))
    parts.append(f'<section id="gallery"><h2>Images</h2><p class="legend">Overlays:{legend}</p><div class="gallery">')
    parts.extend(_gallery_item(r, folder, overlays or {}, thumbnails or {}, max_thumbnail_side) for r in records)
    parts.append("</div></section></body></html>\n")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
