"""The GitHub workflow, `make` and .ci/run run the same checks (cheap proof that none of them rots)."""

from __future__ import annotations

import re
import tomllib

import yaml

from .conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _make_recipe(target: str) -> list[str]:
    """The commands of a Makefile target, with $(BIN) spelled as the workflow's .venv/bin."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().replace("$(BIN)", ".venv/bin"))
    return recipe


def test_workflow_runs_what_make_lint_and_make_test_run() -> None:
    (job,) = _workflow()["jobs"].values()
    runs = [step["run"].strip() for step in job["steps"] if "run" in step]
    checks = runs[1:]  # after the install step
    assert checks == [*_make_recipe("lint"), *_make_recipe("test")]
    # ...and those are the five checks, not fewer on both sides.
    assert [c.removeprefix(".venv/bin/") for c in checks] == [
        "ruff check .",
        "ruff format --check .",
        "mypy crackcascade",
        "mkdocs build --strict",
        "python -m pytest -q",
    ]


def test_ci_run_makes_lint_and_test() -> None:
    commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert commands[-1] == "make lint test"


def test_pytest_collects_the_notebooks() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "notebooks" in options["testpaths"] and "--nbmake" in options["addopts"].split()


def test_workflow_matrix_cache_cancellation_and_cpu_torch() -> None:
    workflow = _workflow()
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "github.ref" in workflow["concurrency"]["group"]
    (job,) = workflow["jobs"].values()
    versions = job["strategy"]["matrix"]["python-version"]
    classifiers = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["classifiers"]
    declared = [
        c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert versions == declared == ["3.11", "3.12"]
    setup = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["cache"] == "pip"
    assert setup["with"]["cache-dependency-path"].split() == ["pyproject.toml", "constraints.txt"]
    install = next(step["run"] for step in job["steps"] if "run" in step)
    assert "--index-url https://download.pytorch.org/whl/cpu" in install and "make install" in install
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    for package in ("torch", "torchvision"):
        # The install step reads the pin from constraints.txt, so the line must be there exactly once.
        assert f"grep '^{package}=='" in install
        assert sum(line.startswith(f"{package}==") for line in pins) == 1
