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

The package: :mod:`~crackcascade.report.images` (overlays, thumbnails),
:mod:`~crackcascade.report.sentences` (records in words), :mod:`~crackcascade.report.markup`
(HTML tables and SVG charts) and :mod:`~crackcascade.report.page` (the report).
"""

from crackcascade.report.images import (
    CLASS_COLORS,
    LIGHT_BLUE,
    class_color,
    overlay,
    overlay_thumbnail,
    png_data_uri,
    thumbnail,
)
from crackcascade.report.markup import bar_chart_svg, format_cell, html_table, relative_href
from crackcascade.report.page import write_report
from crackcascade.report.sentences import count_of, describe, human, record_scale, summarize

__all__ = [
    "CLASS_COLORS",
    "LIGHT_BLUE",
    "bar_chart_svg",
    "class_color",
    "count_of",
    "describe",
    "format_cell",
    "html_table",
    "human",
    "overlay",
    "overlay_thumbnail",
    "png_data_uri",
    "record_scale",
    "relative_href",
    "summarize",
    "thumbnail",
    "write_report",
]
