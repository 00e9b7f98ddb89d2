"""HTML building blocks: escaped cells, tables, SVG bar charts and links relative to the report."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from crackcascade.report.sentences import format_number

_CHART_COLORS: tuple[str, ...] = ("#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#b279a2")


def escape(value: Any) -> str:
    """``value`` as HTML-escaped text (quotes too, so it is safe in attributes)."""
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
        parts.append(f"<caption>{escape(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr></thead><tbody>")
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            attribute = ' class="num"' if _is_number(value) else ""
            cells.append(f"<td{attribute}>{escape(format_cell(value))}</td>")
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
        f'aria-label="{escape(title)}">',
        f'<text x="{left}" y="14" class="chart-title">{escape(title)}</text>',
    ]
    x = left
    for index, name in enumerate(series):
        color = _CHART_COLORS[index % len(_CHART_COLORS)]
        parts.append(f'<rect x="{x}" y="22" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{x + 14}" y="31">{escape(name)}</text>')
        x += 14 + 7 * len(name) + 14
    base = top + plot_height
    parts.append(f'<line x1="{left}" y1="{base}" x2="{width - 6}" y2="{base}" stroke="#555"/>')
    parts.append(f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{escape(format_number(peak, 1))}</text>')
    parts.append(f'<text x="{left - 6}" y="{base}" text-anchor="end">0</text>')
    for g, (group, row) in enumerate(zip(groups, values, strict=True)):
        x0 = left + g * group_width + gap // 2
        for s, value in enumerate(row):
            h = round(plot_height * float(value) / peak, 1)
            color = _CHART_COLORS[s % len(_CHART_COLORS)]
            parts.append(
                f'<rect x="{x0 + s * bar}" y="{base - h}" width="{bar - 2}" height="{h}" fill="{color}">'
                f"<title>{escape(f'{group}, {series[s]}: {format_number(float(value), 3)}')}</title></rect>"
            )
        center = x0 + len(row) * bar / 2
        parts.append(f'<text x="{center}" y="{base + 16}" text-anchor="middle">{escape(group)}</text>')
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
