"""Outputs of the cascade for people: crack overlays, one-sentence summaries and a self-contained HTML report.

Everything here is a pure function of numpy arrays and plain (JSON-serializable) prediction
records, so the ``predict`` command, notebooks and tests can use it alike:

* :func:`overlay` tints a photo light blue and paints mask pixels (cracks pure red, spalling
  orange), as in the paper's figures;
* :func:`describe` turns a record into one sentence, e.g. ``"Column, object level: shear cracks,
  3 cracks, total length 412 px, max width 7 px (moderate damage)."``;
* :func:`write_report` writes one HTML file (inline CSS and SVG, thumbnails as ``data:`` URIs, no
  script, no external URL) that opens in any browser without a server.

A record is the per-image dict of the cascade; every key is optional except ``"path"``::

    {"path": "photos/a.jpg", "height": 3000, "width": 4000,
     "tasks": {"scene": {"class": "object", "probability": 0.91, "probabilities": {...}}, ...},
     "scale": "object",
     "gate": {"task": "damage_type", "classes": [...], "threshold": 0.5, "score": 0.83, "passed": True},
     "segmented": True, "classes": ["crack"],
     "measurements": {"count": 3, "total_length_px": 412.0, "max_width_px": 7.0, "px_per_mm": None, ...},
     "fractions": {"crack": 0.012}}
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from crackcascade.labels import CRACK_DAMAGE_TYPES, SCALES, get_task

LIGHT_BLUE: tuple[int, int, int] = (173, 216, 230)
"""Tint of the photo in overlays (the light-blue background of the paper's figures)."""

CLASS_COLORS: dict[str, tuple[int, int, int]] = {"crack": (255, 0, 0), "spalling": (255, 165, 0)}
"""Overlay colour of each known mask class: cracks pure red, spalling orange."""

_FALLBACK_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 255),
    (0, 160, 0),
    (128, 0, 128),
    (0, 0, 255),
    (255, 255, 0),
)
"""Colours of mask classes not in :data:`CLASS_COLORS`, by their position in ``classes``."""

_HUMAN_WORDS: dict[str, str] = {
    "non_collapse": "no collapse",
    "non_spalling": "no spalling",
    "combined": "combined flexural-shear",
}

_CHART_COLORS: tuple[str, ...] = ("#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#b279a2")


# ----------------------------------------------------------------------------- images


def class_color(classes: Sequence[str], index: int) -> tuple[int, int, int]:
    """Return the overlay colour of mask class ``classes[index]``.

    Args:
        classes: Mask classes in mask-value order (value ``i + 1`` is ``classes[i]``).
        index: Position of the class in ``classes``.
    """
    name = classes[index]
    return CLASS_COLORS.get(name, _FALLBACK_COLORS[index % len(_FALLBACK_COLORS)])


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    classes: Sequence[str] = ("crack",),
    alpha: float = 0.5,
) -> np.ndarray:
    """Paint a class mask over a photo: the photo tinted light blue, cracks pure red, spalling orange.

    Mask pixels are painted in their class's full colour (no blending, blurring or resizing), so
    even one-pixel-wide cracks stay visible at full resolution.

    Args:
        image: Photo, uint8 array of shape ``(H, W, 3)``.
        mask: Class map of shape ``(H, W)``: 0 is background, ``i + 1`` is ``classes[i]``; a
            boolean mask means ``classes[0]``.
        classes: Mask classes in mask-value order.
        alpha: Strength of the light-blue tint of background pixels, from 0 (photo unchanged)
            to 1 (plain light blue, as in the paper's mask figures).

    Returns:
        The overlay, uint8 array of shape ``(H, W, 3)``.

    Raises:
        ValueError: If the image is not uint8 RGB, the mask's shape differs from the image's,
            a mask value has no class, or ``alpha`` is outside [0, 1].
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"overlay needs a uint8 (H, W, 3) image, got {image.dtype} of shape {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if mask.size and int(mask.max()) > len(classes):
        raise ValueError(
            f"mask value {int(mask.max())} has no class (classes: {', '.join(classes)}); "
            "a 0/255 mask PNG must be divided by 255 first"
        )
    tint = np.asarray(LIGHT_BLUE, dtype=np.float32)
    out = np.rint(image.astype(np.float32) * (1.0 - alpha) + tint * alpha).astype(np.uint8)
    for index in range(len(classes)):
        out[mask == index + 1] = class_color(classes, index)
    return out


def thumbnail(image: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Shrink an image so that its longer side is at most ``max_side``, keeping its aspect ratio.

    Images already small enough are returned unchanged (as a copy); images are never enlarged.

    Args:
        image: uint8 array of shape ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``.
        max_side: Largest allowed height or width in pixels.

    Returns:
        The thumbnail, uint8 array with the input's number of channels.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    image = np.asarray(image)
    height, width = image.shape[:2]
    scale = max_side / max(height, width, 1)
    if scale >= 1.0:
        return image.copy()
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def overlay_thumbnail(
    image: np.ndarray,
    mask: np.ndarray,
    classes: Sequence[str] = ("crack",),
    max_side: int = 256,
    alpha: float = 0.5,
) -> np.ndarray:
    """Return a small overlay in which thin cracks stay visible.

    Shrinking a full-size overlay averages a one-pixel crack away; here the photo is shrunk and
    the mask is shrunk so that a thumbnail pixel shows a class when any pixel it covers has it
    (cracks drawn over spalling).

    Args:
        image: Photo, uint8 array of shape ``(H, W, 3)``.
        mask: Class map of shape ``(H, W)`` as for :func:`overlay`.
        classes: Mask classes in mask-value order.
        max_side: Largest height or width of the thumbnail.
        alpha: Strength of the light-blue tint, as for :func:`overlay`.

    Returns:
        uint8 array of shape ``(h, w, 3)`` with ``max(h, w) <= max_side``.
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    small = thumbnail(image, max_side)
    size = (small.shape[1], small.shape[0])
    small_mask = np.zeros(small.shape[:2], dtype=np.uint8)
    # Crack (class 1) last, so that it wins where classes meet.
    for value in range(len(classes), 0, -1):
        present = Image.fromarray(((mask == value) * 255).astype(np.uint8)).resize(size, Image.Resampling.BOX)
        small_mask[np.asarray(present) > 0] = value
    return overlay(small, small_mask, classes, alpha)


def png_data_uri(array: np.ndarray) -> str:
    """Encode an image as a ``data:image/png;base64,...`` URI for embedding in HTML.

    Args:
        array: uint8 (or boolean) array of shape ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        raise ValueError(f"png_data_uri needs a uint8 image, got {array.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------- sentences


def human(name: str) -> str:
    """Return a class or task name in plain words (``"non_collapse"`` -> ``"no collapse"``)."""
    return _HUMAN_WORDS.get(name, name.replace("_", " "))


def _predicted(record: Mapping[str, Any], task: str) -> str | None:
    entry = (record.get("tasks") or {}).get(task)
    if not entry:
        return None
    return entry.get("class")


def record_scale(record: Mapping[str, Any]) -> str | None:
    """Return the scale of a record: its ``"scale"``, else the scene head's class, else ``None``."""
    return record.get("scale") or _predicted(record, "scene")


def _number(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def count_of(count: int, noun: str) -> str:
    """``"1 crack"``, ``"3 cracks"``: a count with its noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _sizes(measurements: Mapping[str, Any]) -> list[str]:
    length_mm, width_mm = measurements.get("total_length_mm"), measurements.get("max_width_mm")
    if length_mm is not None and width_mm is not None:
        return [f"total length {_number(length_mm, 1)} mm", f"max width {_number(width_mm, 2)} mm"]
    parts = []
    if measurements.get("total_length_px") is not None:
        parts.append(f"total length {_number(measurements['total_length_px'], 0)} px")
    if measurements.get("max_width_px") is not None:
        parts.append(f"max width {_number(measurements['max_width_px'], 1)} px")
    return parts


def _gate_rejection(gate: Mapping[str, Any]) -> str:
    task = gate.get("task")
    if task == "damage_type":
        return "no crack damage found"
    if task == "damage_state":
        return "no damage found"
    classes = gate.get("classes") or []
    return f"no {' or '.join(human(c) for c in classes)} found" if classes else "no damage found"


def _crack_findings(record: Mapping[str, Any]) -> list[str]:
    damage_type = _predicted(record, "damage_type")
    crack_type = damage_type if damage_type in CRACK_DAMAGE_TYPES else None
    gate = record.get("gate")
    if gate is not None and not gate.get("passed", True):
        return [_gate_rejection(gate)]
    measurements = record.get("measurements")
    if record.get("segmented") and measurements is not None:
        count = int(measurements.get("count") or 0)
        if count == 0:
            return [f"{human(crack_type)} damage predicted but no crack masked" if crack_type else "no crack masked"]
        parts = [f"{human(crack_type)} cracks"] if crack_type else []
        return [*parts, count_of(count, "crack"), *_sizes(measurements)]
    # A plain classifier run (or an image the cascade did not segment): the damage-type head only.
    if crack_type:
        return [f"{human(crack_type)} damage"]
    if damage_type is not None:
        return ["no crack damage predicted"]
    return []


def _other_findings(record: Mapping[str, Any]) -> list[str]:
    parts = []
    fraction = (record.get("fractions") or {}).get("spalling")
    if fraction:
        parts.append(f"spalling on {_number(100 * fraction, 1)}% of the image")
    elif _predicted(record, "spalling") == "spalling":
        parts.append("spalling")
    collapse = _predicted(record, "collapse")
    if collapse is not None and collapse != "non_collapse":
        parts.append(human(collapse))
    return parts


def _severity(record: Mapping[str, Any]) -> str | None:
    level = _predicted(record, "damage_level")
    if level is None:
        level = _predicted(record, "damage_state")
    if level is None:
        return None
    return human(level) if level in ("undamaged", "damaged") else f"{human(level)} damage"


def describe(record: Mapping[str, Any]) -> str:
    """Summarize one prediction record in one sentence.

    The sentence names the component (only at object scale, the scale the component head is
    labelled for) and the scale, then the crack findings (crack type, count, total length and
    maximum width, in mm when the record was measured with a pixel size), spalling and collapse,
    and ends with the damage level in parentheses. Tasks missing from the record are left out.

    Examples:
        ``"Column, object level: shear cracks, 3 cracks, total length 412 px, max width 7 px (moderate damage)."``,
        ``"Wall, object level: no crack damage found (undamaged)."`` (rejected by the gate),
        ``"Beam, object level: flexural damage predicted but no crack masked (minor damage)."``.

    Args:
        record: Per-image prediction record (see the module docstring).

    Returns:
        The sentence, starting with a capital letter and ending with a full stop.
    """
    scale = record_scale(record)
    component = _predicted(record, "component")
    subject = []
    if component is not None and scale in (None, "object"):
        material = _predicted(record, "material")
        name = "component" if component == "other" else human(component)
        subject.append(f"steel {name}" if material == "steel" else name)
    if scale is not None:
        subject.append(f"{human(scale)} level")
    findings = _crack_findings(record) + _other_findings(record)
    severity = _severity(record)
    if not findings:
        findings = ["no damage findings"] if severity is None else []
    text = ", ".join(subject)
    body = ", ".join(findings)
    text = f"{text}: {body}" if text and body else text or body
    if severity is not None:
        text = f"{text} ({severity})" if text else severity
    return text[:1].upper() + text[1:] + "."


# ----------------------------------------------------------------------------- run summary


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Count a run's images overall and per scale.

    Args:
        records: Per-image prediction records.

    Returns:
        ``{"images", "segmented", "gated_out", "with_cracks", "cracks", "total_length_px",
        "total_length_mm", "per_scale": {scale: {same counts}}}``: ``gated_out`` counts images
        the gate rejected, ``with_cracks`` those with at least one measured crack, ``cracks``
        the measured cracks; ``total_length_mm`` sums the records measured in mm (``None`` when
        none was). Scales come in the order pixel, object, structural, then others (``"unknown"``
        for records without a scale).
    """

    def empty() -> dict[str, Any]:
        keys = ("images", "segmented", "gated_out", "with_cracks", "cracks")
        return {**dict.fromkeys(keys, 0), "total_length_px": 0.0, "total_length_mm": None}

    total = empty()
    per_scale: dict[str, dict[str, Any]] = {}
    for record in records:
        scale = record_scale(record) or "unknown"
        for counts in (total, per_scale.setdefault(scale, empty())):
            counts["images"] += 1
            gate = record.get("gate")
            counts["gated_out"] += int(gate is not None and not gate.get("passed", True))
            counts["segmented"] += int(bool(record.get("segmented")))
            measurements = record.get("measurements") or {}
            count = int(measurements.get("count") or 0)
            counts["with_cracks"] += int(count > 0)
            counts["cracks"] += count
            counts["total_length_px"] += float(measurements.get("total_length_px") or 0.0)
            if measurements.get("total_length_mm") is not None:
                counts["total_length_mm"] = (counts["total_length_mm"] or 0.0) + float(measurements["total_length_mm"])
    order = [s for s in SCALES if s in per_scale] + sorted(s for s in per_scale if s not in SCALES)
    total["per_scale"] = {s: per_scale[s] for s in order}
    return total


# ----------------------------------------------------------------------------- HTML


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def format_cell(value: Any) -> str:
    """Format a table value for people: floats with 3 decimals, booleans as yes/no, ``None`` empty."""
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.3f}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def html_table(rows: Sequence[Mapping[str, Any]], caption: str | None = None) -> str:
    """Render rows as an HTML table whose columns are the rows' keys (in order of first appearance).

    Args:
        rows: One mapping per row; missing keys leave empty cells.
        caption: Optional table caption.

    Returns:
        The escaped ``<table>`` element.
    """
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    parts = ["<table>"]
    if caption:
        parts.append(f"<caption>{_esc(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in columns) + "</tr></thead><tbody>")
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            attribute = ' class="num"' if _is_number(value) else ""
            cells.append(f"<td{attribute}>{_esc(format_cell(value))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def bar_chart_svg(title: str, groups: Sequence[str], series: Sequence[str], values: Sequence[Sequence[float]]) -> str:
    """Draw a grouped bar chart as inline SVG (no plotting library, no script).

    Args:
        title: Chart title, drawn above the bars.
        groups: Group labels along the x axis.
        series: Series names (one bar per series in each group), shown in the legend.
        values: ``values[g][s]`` is the height of series ``s`` in group ``g``.

    Returns:
        The escaped ``<svg>`` element.
    """
    bar, gap, left, top, plot_height = 18, 24, 44, 46, 160
    group_width = max(1, len(series)) * bar + gap
    legend_width = left + sum(28 + 7 * len(name) for name in series)
    width = max(left + len(groups) * group_width + 12, legend_width, 7 * len(title) + left)
    height = top + plot_height + 28
    peak = max((float(v) for row in values for v in row), default=0.0) or 1.0
    parts = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_esc(title)}">',
        f'<text x="{left}" y="14" class="chart-title">{_esc(title)}</text>',
    ]
    x = left
    for index, name in enumerate(series):
        color = _CHART_COLORS[index % len(_CHART_COLORS)]
        parts.append(f'<rect x="{x}" y="22" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{x + 14}" y="31">{_esc(name)}</text>')
        x += 14 + 7 * len(name) + 14
    base = top + plot_height
    parts.append(f'<line x1="{left}" y1="{base}" x2="{width - 6}" y2="{base}" stroke="#555"/>')
    parts.append(f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{_esc(_number(peak, 1))}</text>')
    parts.append(f'<text x="{left - 6}" y="{base}" text-anchor="end">0</text>')
    for g, (group, row) in enumerate(zip(groups, values, strict=True)):
        x0 = left + g * group_width + gap // 2
        for s, value in enumerate(row):
            h = round(plot_height * float(value) / peak, 1)
            color = _CHART_COLORS[s % len(_CHART_COLORS)]
            parts.append(
                f'<rect x="{x0 + s * bar}" y="{base - h}" width="{bar - 2}" height="{h}" fill="{color}">'
                f"<title>{_esc(f'{group}, {series[s]}: {_number(float(value), 3)}')}</title></rect>"
            )
        center = x0 + len(row) * bar / 2
        parts.append(f'<text x="{center}" y="{base + 16}" text-anchor="middle">{_esc(group)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def relative_href(target: str | os.PathLike[str], folder: Path) -> str:
    """Return a URL-quoted link from files in ``folder`` to ``target``.

    An absolute target is made relative to ``folder``. A relative target is taken as relative
    to ``folder`` when it exists there, else as relative to the working directory when it exists
    there (and made relative to ``folder``), else used as given.
    """
    path = Path(target)
    if not path.is_absolute() and not (folder / path).exists() and path.exists():
        path = path.absolute()
    if path.is_absolute():
        path = Path(os.path.relpath(path, folder.absolute()))
    return quote(path.as_posix())


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
        numbers.extend(_sizes(measurements))
        if measurements.get("mean_width_px") is not None:
            numbers.append(f"mean width {_number(measurements['mean_width_px'], 1)} px")
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
            f'alt="{_esc(path)}">'
        )
    else:
        body = '<div class="noimage">no preview</div>'
    if href is not None:
        body = f'<a href="{_esc(href)}" title="open the full-size overlay">{body}</a>'
    name = _esc(path) if href is None else f'<a href="{_esc(href)}">{_esc(path)}</a>'
    numbers = " · ".join(_esc(n) for n in _key_numbers(record))
    return (
        f'<figure>{body}<figcaption><div class="name">{name}</div>'
        f'<p class="sentence">{_esc(describe(record))}</p><div class="numbers">{numbers}</div>'
        f"{_predictions_table(record)}</figcaption></figure>"
    )


def _summary_section(summary: Mapping[str, Any]) -> str:
    length = f"{_number(summary['total_length_px'], 0)} px"
    if summary["total_length_mm"] is not None:
        length += f" ({_number(summary['total_length_mm'], 1)} mm over the images measured in mm)"
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
        level = _predicted(record, "damage_level")
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
        f'<span style="background:rgb{color}"></span>{_esc(name)}'
        for name, color in (("photo (tinted)", LIGHT_BLUE), *CLASS_COLORS.items())
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        _summary_section(summary),
    ]
    for caption, rows in (tables or {}).items():
        parts.append(f'<section class="table"><h2>{_esc(caption)}</h2>{html_table(rows)}</section>')
    parts.append(_scale_section(records, summary))
    parts.append(f'<section id="gallery"><h2>Images</h2><p class="legend">Overlays:{legend}</p><div class="gallery">')
    parts.extend(_gallery_item(r, folder, overlays or {}, thumbnails or {}, max_thumbnail_side) for r in records)
    parts.append("</div></section></body></html>\n")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
