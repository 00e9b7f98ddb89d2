"""Strip outputs, execution counts and run metadata from notebooks, so that git holds only their source.

Usage: ``python notebooks/strip_outputs.py [NOTEBOOK ...]`` (default: every ``notebooks/*.ipynb``)
rewrites the notebooks in place; ``--check`` changes nothing and exits with status 1, naming each
notebook that still has outputs (the test suite runs the same check).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent
CELL_METADATA_KEPT = ("tags",)
"""Cell metadata that is part of the source (nbmake reads ``tags`` such as ``skip-execution``)."""
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def problems(notebook: Any) -> list[str]:
    """What a notebook holds beyond its source (outputs, execution counts, run metadata); [] if stripped."""
    found = []
    for index, cell in enumerate(notebook.cells):
        if cell.get("outputs"):
            found.append(f"cell {index} has outputs")
        if cell.get("execution_count") is not None:
            found.append(f"cell {index} has execution count {cell['execution_count']}")
        extra = sorted(set(cell.get("metadata", {})) - set(CELL_METADATA_KEPT))
        if extra:
            found.append(f"cell {index} has metadata {', '.join(extra)}")
    extra = sorted(set(notebook.metadata) - {"kernelspec", "language_info"})
    if extra:
        found.append(f"notebook metadata {', '.join(extra)}")
    if dict(notebook.metadata.get("kernelspec", KERNELSPEC)) != KERNELSPEC:
        found.append("a kernelspec other than the default python3")
    if dict(notebook.metadata.get("language_info", {"name": "python"})) != {"name": "python"}:
        found.append("language_info of the Python that last ran it")
    return found


def strip(notebook: Any) -> Any:
    """Remove outputs, execution counts and run metadata in place; return the notebook."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata = {k: v for k, v in cell.get("metadata", {}).items() if k in CELL_METADATA_KEPT}
    notebook.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    return notebook


def main(argv: Sequence[str] | None = None) -> int:
    """Strip (or with ``--check`` only check) the notebooks given, default ``notebooks/*.ipynb``.

    Returns:
        0, or 1 with ``--check`` when a notebook is not stripped.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any has outputs")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    status = 0
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        found = problems(notebook)
        if args.check:
            if found:
                print(f"{path}: {'; '.join(found)}; run `make strip-notebooks`", file=sys.stderr)
                status = 1
            continue
        if found:
            nbformat.write(strip(notebook), path)
            print(f"stripped {path}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
