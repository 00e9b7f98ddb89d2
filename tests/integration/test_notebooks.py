"""Notebooks are committed without outputs; the helper that strips them works (nbmake executes them)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import nbformat
from nbformat.v4 import new_output

from ..conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"


def _helper() -> ModuleType:
    spec = importlib.util.spec_from_file_location("strip_outputs", NOTEBOOKS / "strip_outputs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_notebooks_are_committed_without_outputs() -> None:
    helper = _helper()
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert [p.name for p in paths] == ["bring_your_own_data.ipynb", "quickstart.ipynb"]
    for path in paths:
        assert helper.problems(nbformat.read(path, as_version=4)) == [], f"{path}: run `make strip-notebooks`"


def test_strip_removes_outputs_counts_and_run_metadata(tmp_path: Path, capsys) -> None:
    helper = _helper()
    path = tmp_path / "run.ipynb"
    shutil.copy(NOTEBOOKS / "quickstart.ipynb", path)
    notebook = nbformat.read(path, as_version=4)
    sources = [cell.source for cell in notebook.cells]
    code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    code.outputs = [new_output("stream", name="stdout", text="epoch 0\n")]
    code.execution_count = 7
    code.metadata["execution"] = {"iopub.status.busy": "2026-11-30T10:00:00"}
    code.metadata["tags"] = ["skip-execution"]
    notebook.metadata["language_info"] = {"name": "python", "version": "3.11.9"}
    notebook.metadata["widgets"] = {}
    nbformat.write(notebook, path)

    found = helper.problems(nbformat.read(path, as_version=4))
    assert any("has outputs" in f for f in found) and any("execution count 7" in f for f in found)
    assert any("metadata execution" in f for f in found) and any("widgets" in f for f in found)
    assert helper.main(["--check", str(path)]) == 1
    assert "run `make strip-notebooks`" in capsys.readouterr().err

    assert helper.main([str(path)]) == 0
    stripped = nbformat.read(path, as_version=4)
    assert helper.problems(stripped) == [] and helper.main(["--check", str(path)]) == 0
    assert [cell.source for cell in stripped.cells] == sources
    assert next(c for c in stripped.cells if c.cell_type == "code").metadata == {"tags": ["skip-execution"]}
