"""Benchmarks run with their tiniest settings so that they do not rot."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT


def test_tiled_inference_benchmark_quick() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "tiled_inference.py"), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    rows = [line for line in result.stdout.splitlines() if "|" in line and not line.lstrip().startswith("MP")]
    assert len(rows) == 2, result.stdout
    for row in rows:
        untiled, tiled = row.split("|")[1].split(), row.split("|")[2].split()
        assert float(untiled[0]) > 0 and float(tiled[0]) > 0 and float(tiled[1]) > 0


def test_crackforest_benchmark_quick() -> None:
    from .conftest import SHARED_DATA

    root = SHARED_DATA / "crackforest"
    if not (root / "train.txt").is_file():
        pytest.skip(f"real data {root} not available")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "crackforest.py"), "--quick", "--root", str(root)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith(("plain loop", "crackcascade"))]
    assert len(rows) == 2, result.stdout
    for row in rows:
        f1, f1_tol = (float(v) for v in row.split()[-5:-3])
        assert 0.0 <= f1 <= f1_tol <= 1.0, row
