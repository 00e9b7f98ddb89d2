"""Benchmarks run with their tiniest settings so that they do not rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, SHARED_DATA


def _run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


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


def test_crackforest_benchmark_quick(tmp_path: Path) -> None:
    root = SHARED_DATA / "crackforest"
    if not (root / "train.txt").is_file():
        pytest.skip(f"real data {root} not available")
    out = _run("crackforest.py", "--quick", "--root", str(root), "--workdir", str(tmp_path), "--threads", "1")
    rows = [line for line in out.splitlines() if line.startswith(("plain loop", "crackcascade"))]
    names = [r.split("  ")[0] for r in rows]
    assert len(rows) == 3 and names[0] == "plain loop, fp32" and names[2].endswith("+ flip TTA"), out
    for row in rows:
        f1, f1_tol = (float(v) for v in row.split()[-5:-3])
        assert 0.0 <= f1 <= f1_tol <= 1.0, row


def test_unet_step_benchmark_quick() -> None:
    out = _run("unet_step.py", "--quick", "--threads", "1")
    rows = [line.split() for line in out.splitlines() if line.startswith(("contiguous", "channels-last"))]
    assert [(r[0], r[1]) for r in rows] == [
        ("contiguous", "float32"), ("contiguous", "bf16-mixed"), ("channels-last", "float32"),
        ("channels-last", "bf16-mixed"),
    ]  # fmt: skip
    assert all(float(r[2]) > 0 for r in rows) and rows[0][3] == "1.00x"


def test_real_masks_and_cascade_benchmarks_quick(tmp_path: Path) -> None:
    if not (SHARED_DATA / "masonry" / "images").is_dir() or not (SHARED_DATA / "phinet_pixel" / "images").is_dir():
        pytest.skip(f"real data in {SHARED_DATA} not available")
    saved = tmp_path / "unets"
    out = _run("real_masks.py", "masonry", "phinet-both", "--quick", "--save-dir", str(saved), "--threads", "1")
    rows = [line.split() for line in out.splitlines() if line.startswith(("masonry", "phinet"))]
    assert [(r[0], r[3]) for r in rows] == [("masonry", "crack"), ("phinet-both", "crack"), ("phinet-both", "spalling")]
    assert rows[0][1] == "168/24/48", "seeded split: 70% train, 10% val, 20% test of 240"
    assert (saved / "masonry.ckpt").is_file() and (saved / "phinet-both.ckpt").is_file()
    out = _run("cascade_phinet.py", "--quick", "--segmenter", str(saved / "phinet-both.ckpt"),
               "--workdir", str(tmp_path / "cascade"), "--threads", "1")  # fmt: skip
    modes = [line.split()[:2] for line in out.splitlines() if line.startswith("pixel")]
    assert modes == [["pixel", "ungated"], ["pixel", "gated"]], out


def test_export_throughput_benchmark_quick() -> None:
    out = _run("export_throughput.py", "--quick", "--threads", "1")
    rows = [line.split() for line in out.splitlines() if line.startswith(("classifier", "U-Net"))]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("classifier", "test_resnet", "64x64"),
        ("U-Net", "tu-test_resnet", "80x100"),
    ]
    for row in rows:
        torch_rate, ort_rate, difference = float(row[4]), float(row[5]), float(row[7])
        assert torch_rate > 0 and ort_rate > 0
        assert float(row[6].rstrip("x")) == pytest.approx(ort_rate / torch_rate, rel=0.05, abs=0.01)
        assert difference < 1e-4, "the timed ONNX model must give PyTorch's outputs"
