"""Benchmarks run with their tiniest settings so that they do not rot."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crackcascade.labels import TASK_NAMES, get_task

from ..conftest import ROOT, SHARED_DATA


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


def test_tiled_inference_memory_stays_flat_as_the_photo_grows() -> None:
    out = _run("tiled_inference.py", "--quick", "--threads", "1")
    rows = [line for line in out.splitlines() if "|" in line and not line.lstrip().startswith("MP")]
    assert len(rows) == 2, out
    cells = [[[float(v) for v in part.split()] for part in row.split("|")[1:]] for row in rows]
    small_mp, large_mp = (float(row.split()[0]) for row in rows)
    (small_untiled_s, _, small_untiled_added), (small_tiled_s, _, small_added, _) = cells[0]
    (_, _, large_untiled_added), (_, _, large_added, _) = cells[1]
    assert large_mp / small_mp == pytest.approx(5.0, rel=0.02) and small_untiled_s > 0 and small_tiled_s > 0
    # The measure sees memory: the whole-photo pass needs about as many times more as there are pixels ...
    assert large_untiled_added >= 3 * small_untiled_added, out
    # ... while tiles keep what inference adds flat.
    assert large_added <= 1.5 * small_added + 0.02, out


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
    ours, paper = out.split("localization as the paper computed it")
    modes = [line.split()[:2] for line in ours.splitlines() if line.startswith("pixel")]
    assert modes == [["pixel", "ungated"], ["pixel", "gated"]], out
    # The paper's localization, with its counts, for both modes (the paper reported no pixel-level figure).
    assert [line.split()[:2] for line in paper.splitlines() if line.startswith("pixel")] == modes


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


def _number(text: str) -> float:
    value = float(text.strip().rstrip("x"))
    assert math.isfinite(value) and value > 0, text
    return value


def test_input_pipeline_benchmark_quick(tmp_path: Path) -> None:
    out = _run("input_pipeline.py", "--quick", "--workers", "1", "--workdir", str(tmp_path))
    rows = [line for line in out.splitlines() if line.startswith(("JPEG ", "PHI")) and "draft" not in line]
    table = [(r[:20].strip(), r[20:54].strip(), int(r[54:62]), r[62:72], r[72:81], r[81:].strip()) for r in rows]
    sources = ["JPEG 224x224", "JPEG 448x448", "PHI arrays 224x224"]
    assert [t[0] for t in table] == [s for s in sources for _ in range(4)], out
    assert [t[2] for t in table] == [0, 0, 1, 1] * 3, "per-worker rows, then the worker-process rows"
    for source, pipeline, workers, rate, ratio, needed in table:
        _number(rate)
        assert pipeline.startswith("torchvision") == (ratio.strip() == "1.00x") or pipeline == "crackcascade"
        assert (int(needed) >= 1) if workers == 0 else needed == "", (source, pipeline)
    draft = next(line for line in out.splitlines() if line.startswith("JPEG draft"))
    assert re.search(r"mean \|difference\| \d+\.\d\d grey levels, largest \d+$", draft), draft


def test_train_step_benchmark_quick() -> None:
    out = _run("train_step.py", "--quick", "--no-compile", "--threads", "1")
    rows = [line for line in out.splitlines() if line.startswith(("fp32", "+"))]
    names = [r[:24].strip() for r in rows]
    assert names == ["fp32 eager (baseline)", "+ mixed precision", "+ channels_last", "+ torch.compile"], out
    assert rows[-1][24:].strip() == "skipped (--no-compile)"
    # The warm-up of tiny test models can round to 0.00 s; every other column is a positive rate or ratio.
    values = [[*(_number(v) for v in row[24:].split()[:-1]), float(row.split()[-1])] for row in rows[:-1]]
    base_bare, base_ours = values[0][:2]
    for bare, ours, ratio, bare_up, ours_up, warmup in values:
        assert ratio == pytest.approx(ours / bare, rel=0.02) and warmup >= 0
        assert bare_up == pytest.approx(bare / base_bare, rel=0.02)
        assert ours_up == pytest.approx(ours / base_ours, rel=0.02)
    assert rows[0][24:].split()[3:5] == ["1.00x", "1.00x"]


def test_multitask_inference_benchmark_quick() -> None:
    out = _run("multitask_inference.py", "--quick", "--threads", "1")
    rows = [line for line in out.splitlines() if line.startswith(("8 single", "1 eight"))]
    assert len(rows) == 2, out
    baseline, ours = (_number(r[50:60]) for r in rows)
    assert rows[0].rstrip().endswith("1.00x")
    assert ours >= 4 * baseline, "one eight-head pass is at least 4x cheaper than eight single-task models"
    shapes = [line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0] in TASK_NAMES]
    assert [s[0] for s in shapes] == list(TASK_NAMES) and all(s[1:3] == s[3:5] for s in shapes), out
    assert "output shapes equal: yes" in out


def test_unet_throughput_benchmark_quick() -> None:
    out = _run("unet_throughput.py", "--quick", "--threads", "1")
    rows = [line for line in out.splitlines() if line.startswith(("training", "inference"))]
    assert [r.split()[0] for r in rows] == ["training", "training", "inference", "inference"], out
    for row in rows:
        images, megapixels, *speed_up = row[54:].split()
        pixels = 0.004096 if row.startswith("training") else 0.196608  # 64x64 crops, a 384x512 photo
        assert _number(megapixels) == pytest.approx(_number(images) * pixels, abs=0.006)
        assert len(speed_up) == (0 if "baseline" in row else 1)


def test_cascade_gating_benchmark_quick(tmp_path: Path) -> None:
    out = _run("cascade_gating.py", "--quick", "--workdir", str(tmp_path), "--threads", "1")
    rows = [line for line in out.splitlines() if line.startswith(("U-Net alone", "cascade,"))]
    assert [r[:38].strip() for r in rows] == [
        "U-Net alone, every photo (baseline)", "cascade, ungated", "cascade, gated (damage_state)",
    ], out  # fmt: skip
    values = [[float(v.rstrip("x")) for v in r[38:].split()] for r in rows]
    assert values[0][0] == values[1][0] == 1.0, "fraction segmented"
    assert all(v[1] > 0 and v[2] > 0 for v in values) and values[0][3] == values[1][4] == 1.0
    for v in values:  # the two ratio columns are each row's total over the U-Net alone and the ungated cascade
        assert v[3] == pytest.approx(v[1] / values[0][1], rel=0.02, abs=0.01)
        assert v[4] == pytest.approx(v[1] / values[1][1], rel=0.02, abs=0.01)
    assert "12 synthetic photos of 128x128, 6 crack-free" in out
    # The gate learned (right more often than always opening it on a half-clean set) and closed on
    # some photos, which the gated cascade then did not segment: it costs less than the ungated one.
    right = int(re.search(r"gate \(trained here in \d+ s\): (\d+)/12 photos right", out).group(1))
    assert right >= 9, out
    assert values[2][0] < 1.0 and values[2][1] < 0.95 * values[1][1], out


def test_gpu_suite_quick_has_every_row_and_its_json(tmp_path: Path) -> None:
    saved = tmp_path / "suite.json"
    out = _run("gpu_suite.py", "--quick", "--no-compile", "--threads", "1", "--workers", "1", "--out", str(saved))
    document = json.loads(saved.read_text())
    machine = document["machine"]
    assert machine["torch"] == torch.__version__ and machine["cuda"] == torch.version.cuda
    assert machine["cpu"] and machine["cores"] >= 1 and {"gpu", "driver", "gpu_memory_gib"} <= set(machine)
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("row "))
    assert lines[header - 1].startswith("machine: ") and machine["cpu"] in lines[header - 1]
    width = lines[header].index("ours") + 4 - 11
    table = lines[header + 2 : header + 2 + len(document["rows"])]
    names = [line[:width].strip() for line in table]
    assert names == [
        "train fp32 eager, channels-first", "train bf16 autocast", "train bf16 + channels-last",
        "train bf16 + channels-last + compile", "train largest batch, bf16 + channels-last",
        "infer classifier vs bare timm", "infer 8 heads vs 8 single-task models",
        "U-Net tu-test_resnet train step 64px", "U-Net tu-test_resnet inference 64px", "U-Net tiled 0.05 MP photo",
        "input: write 16 JPEGs x 2", "input: GPU vs CPU decode, max |difference|", "input 1 workers, GPU vs CPU decode",
    ], out  # fmt: skip
    assert [row["name"] for row in document["rows"]] == names
    for line, row in zip(table, document["rows"], strict=True):
        ours, baseline, ratio = (line[width + a : width + b].strip() for a, b in ((0, 11), (11, 22), (22, 30)))
        unit, note = line[width + 32 : width + 42].strip(), line[width + 42 :]
        assert unit == row["unit"] and note == row["note"], line
        if row["name"].endswith("compile"):
            assert row["ours"] is None and ours == "-" and note == "skipped (--no-compile)"
            continue
        assert "failed" not in note and "skipped" not in note, line
        assert float(ours) == pytest.approx(row["ours"], abs=0.006) and row["ours"] >= 0
        if row["baseline"] is None:
            assert row["ratio"] is None and baseline == ratio == "-", line
            continue
        # The ratio column is ours over baseline, in the JSON and as printed.
        assert row["ratio"] == pytest.approx(row["ours"] / row["baseline"], rel=1e-9)
        assert float(baseline) == pytest.approx(row["baseline"], abs=0.006)
        assert float(ratio) == pytest.approx(row["ratio"], abs=6e-4)
    rows = {row["name"]: row for row in document["rows"]}
    assert rows["train largest batch, bf16 + channels-last"]["extra"]["batch_size"] in (8, 16)
    assert rows["input: GPU vs CPU decode, max |difference|"]["ours"] <= 1, "the bytes path decodes as PIL does"
    assert "GPU decode fell back to CPU: no CUDA" in rows["input 1 workers, GPU vs CPU decode"]["note"]
    assert document["elapsed_s"] < document["budget_s"]


def test_pretraining_benchmark_quick(tmp_path: Path) -> None:
    if not (SHARED_DATA / "crackforest" / "train.txt").is_file() or not (SHARED_DATA / "phinet_pixel").is_dir():
        pytest.skip(f"real data in {SHARED_DATA} not available")
    out = _run("pretraining.py", "--quick", "--workdir", str(tmp_path), "--threads", "1")
    results = json.loads((tmp_path / "pretraining.json").read_text())
    variants = ["scratch", "SSL crop", "SSL resize", "synthetic", "SSL crop + synthetic"]
    ssl_line = next(line for line in out.splitlines() if line.startswith("SSL photos:"))
    assert re.match(r"SSL photos: 12 from .* \(the \d+ scored test photos left out\)$", ssl_line), ssl_line
    tables = out.split("\n\n")
    forest = next(t for t in tables if t.startswith("CrackForest")).splitlines()[3:]
    assert [line[:22].strip() for line in forest] == variants, out
    for line, name in zip(forest, variants, strict=True):
        minutes, cached, images, f1, f1_tol, iou, threshold = line[22:].split()
        row = results["crackforest"][name]
        scores = (float(f1), float(f1_tol), float(iou))
        assert scores == pytest.approx((row["f1"], row["f1_tol"], row["iou"]), abs=5e-4)
        assert 0.0 <= scores[0] <= scores[1] <= 1.0 and (cached == "-") == (name == "scratch")
        assert float(minutes) == pytest.approx(row["pretrain_minutes"], abs=0.05)
        assert (int(images) > 0) == (name != "scratch") and 0 < float(threshold) < 1
    gate = next(t for t in tables if t.startswith("Phi-Net")).splitlines()[3:]
    assert [line[:22].strip() for line in gate] == ["always crack (floor)", *variants], out
    floor = results["gate"]["always crack"]
    assert floor["bal_acc"] == 0.5
    assert gate[0].split()[-3:] == [f"{floor['acc']:.3f}", "0.500", f"{floor['macro_f1']:.3f}"]
    for line, name in zip(gate[1:], variants, strict=True):
        acc, bal_acc, macro_f1, threshold = (float(v) for v in line[35:].split())
        row = results["gate"][name]
        assert (acc, bal_acc, macro_f1) == pytest.approx((row["acc"], row["bal_acc"], row["macro_f1"]), abs=5e-4)
        assert 0 <= bal_acc <= 1 and threshold == row["threshold"]
    cascade = next(t for t in tables if t.startswith("Cascade")).splitlines()[3:]
    assert [line[:31].split("  ")[0] for line in cascade] == ["none (U-Net alone)", *variants], out
    assert [line[22:31].strip() for line in cascade] == ["ungated"] + ["gated"] * 5
    for line in cascade:
        label = "none (U-Net alone) ungated" if "ungated" in line else f"{line[:22].strip()} gated"
        row = results["cascade"][label]
        ran, f1, ours, paper = (float(v) for v in line[31:].split()[:4])
        assert (ran, f1, ours) == pytest.approx((row["ran"], row["f1"], row["localization"]), abs=5e-3)
        assert f"{paper:.3f}" == f"{row['paper_localization']:.3f}"  # nan where the U-Net never ran
    backbones = sorted((tmp_path / "backbones").glob("*.safetensors"))
    infos = {b.name.split("-")[0]: json.loads(b.with_suffix(".json").read_text()) for b in backbones}
    assert sorted(infos) == ["ssl_crop", "ssl_crop_synthetic", "ssl_resize", "synthetic"], backbones
    assert all(info["architecture"] == "test_resnet" for info in infos.values())
    both = infos["ssl_crop_synthetic"]
    assert Path(both["initialized_from"]).name.startswith("ssl_crop-"), "SSL then synthetic: one chain"
    # A second seed for the run-to-run spread: every backbone from the cache, its own JSON, one table.
    stamps = {b: b.stat().st_mtime_ns for b in backbones}
    out = _run("pretraining.py", "--quick", "--workdir", str(tmp_path), "--threads", "1", "--seed", "1",
               "--parts", "crackforest")  # fmt: skip
    again = json.loads((tmp_path / "pretraining-seed1.json").read_text())
    assert again["seed"] == 1 and not again["gate"] and not again["cascade"] and "Phi-Net" not in out
    assert all(again["crackforest"][name]["cached"] for name in variants[1:])
    assert {b: b.stat().st_mtime_ns for b in backbones} == stamps, "a cached backbone was trained again"
    assert json.loads((tmp_path / "pretraining.json").read_text()) == results, "seed 0's results kept"


def test_paper_table1_quick_sets_single_task_networks_beside_the_multi_head_one(tmp_path: Path) -> None:
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps({"task1": 0.9123}))  # an alias of scene; damage_type left out
    saved = tmp_path / "table1.json"
    out = _run("paper_table1.py", "--quick", "--tasks", "damage_type", "scene", "--threads", "1",
               "--paper-json", str(paper), "--out", str(saved))  # fmt: skip
    document = json.loads(saved.read_text())
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("task "))
    assert lines[header].rstrip().endswith("ours single  ours 2-head"), lines[header]
    assert any(line.startswith("paper column: from --paper-json") for line in lines[:header]), out
    table = [line.split() for line in lines[header + 2 : header + 4]]
    assert [cells[0] for cells in table] == ["scene", "damage_type"], "the tasks in the official order"
    # What write_phinet wrote per task: 12 training images (20% carved for validation) and 6 test images.
    assert document["quick_data"]["n_train"] == 12 and document["quick_data"]["n_test"] == 6
    runs = {run["name"]: run for run in document["runs"]}
    assert sorted(runs) == ["multi-head", "single damage_type", "single scene"]
    multi = runs["multi-head"]
    assert multi["tasks"] == multi["data_tasks"] == ["scene", "damage_type"]
    for cells, row in zip(table, document["rows"], strict=True):
        task = cells[0]
        single = runs[f"single {task}"]
        assert row["task"] == task and int(cells[1]) == row["classes"] == get_task(task).num_classes
        train, val, test = (int(v) for v in cells[2:5])
        assert (train, val, test) == (row["train"], row["val"], row["test"])
        assert train + val == 12 and val == round(0.2 * 12) and test == 6
        assert single["sizes"][task] == multi["sizes"][task] == {"train": train, "val": val, "test": test}
        # The single-task column is a one-head network trained on that task's data alone ...
        assert single["tasks"] == single["data_tasks"] == [task] and single["epochs"] == 1
        assert set(single["test_metrics"]) == {f"{task}_acc", f"{task}_f1", "acc", "f1"}, "no other task scored"
        assert row["single_task"] == single["accuracy"][task] == single["test_metrics"][f"{task}_acc"]
        # ... and the multi-head column that network's accuracy on the same task.
        assert row["multi_head"] == multi["accuracy"][task] == multi["test_metrics"][f"{task}_acc"]
        for printed, value in zip(cells[6:8], (row["single_task"], row["multi_head"]), strict=True):
            assert 0.0 <= value <= 1.0 and float(printed) == pytest.approx(value, abs=5e-5)
        assert (cells[5], row["paper"]) == (("0.9123", 0.9123) if task == "scene" else ("-", None))


def test_paper_table1_refuses_a_bad_paper_file_with_one_line(tmp_path: Path) -> None:
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps({"scene": 93.5}))
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "paper_table1.py"), "--quick", "--paper-json", str(paper),
         "--out", str(tmp_path / "t.json")],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert str(paper) in line and "scene" in line and "not per cent" in line
    assert not (tmp_path / "t.json").exists()
