"""Two CPU processes (DDP over gloo) against one: synced metrics, each sample once, predictions written once.

Each multi-process run is the real ``crackcascade`` command in a subprocess: Lightning starts the
second process by running the same command line again, as it does with ``--trainer.devices N``
on a GPU machine. One-process runs for comparison go through ``main`` in this process.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crackcascade.cli import main
from crackcascade.data.datamodules import CrackMaskDataModule, PhiNetDataModule
from crackcascade.errors import DataError
from crackcascade.synthetic import write_crack_masks, write_phinet

from ..conftest import CONF, ROOT

TWO = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
ONE = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto"]
TASKS = ("scene", "damage_state", "component")


def crackcascade(*args: str | Path, cwd: Path, timeout: int = 300) -> None:
    """Run the ``crackcascade`` command (two processes when asked), failing the test with its stderr."""
    env = {
        **os.environ,
        # The probe callback lives in tests/, and the command must import this checkout.
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",  # two processes share the CPU cores
    }
    command = [str(Path(sys.executable).parent / "crackcascade"), *map(str, args)]
    # A session of its own: a hung run is killed with the rank process Lightning started, which
    # would otherwise keep the pipes open.
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:  # fmt: skip
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"{' '.join(command)} did not finish in {timeout} s: a process waits on the other")
    if process.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-4000:]}")


def val_metrics(log_dir: Path) -> dict[str, float]:
    """The validation metrics of the last epoch in a CSVLogger's metrics.csv."""
    with open(log_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    found: dict[str, float] = {}
    for row in rows:
        found.update({k: float(v) for k, v in row.items() if k.startswith("val_") and v not in ("", None)})
    return found


def seen(folder: Path) -> list[dict[str, list[str]]]:
    """The probe's records of each process, in rank order."""
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def assert_each_once_up_to_padding(per_rank: list[list[str]], expected: set[str]) -> None:
    """Training: every sample on some process; DistributedSampler repeats at most world_size - 1 to even shares."""
    counts = Counter(sample for rank in per_rank for sample in rank)
    assert set(counts) == expected
    assert len(per_rank[0]) == len(per_rank[1]), "every process takes as many steps"
    assert sum(counts.values()) - len(expected) <= 1


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-process fit of the classifier on three task loaders, with the samples each process saw."""
    tmp = tmp_path_factory.mktemp("ddp_classifier")
    root = write_phinet(tmp / "phi", format="folders", n_train=10, n_test=3, size=32, seed=5, tasks=TASKS)
    crackcascade(
        "fit", "--config", CONF / "multitask.yaml", "--data.root", root, "--data.val_fraction", "0.3",
        "--data.batch_size", "6", "--data.eval_batch_size", "2",
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", tmp / "logs",
        "--trainer.callbacks+=tests.probes.SampleProbe", f"--trainer.callbacks.out_dir={tmp / 'seen'}",
        *TWO, cwd=tmp,
    )  # fmt: skip
    (run,) = (tmp / "logs" / "lightning_logs").iterdir()
    return {"root": root, "run": run, "seen": tmp / "seen", "tmp": tmp}


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-process fit of the U-Net on two scales (one validation loader each)."""
    tmp = tmp_path_factory.mktemp("ddp_unet")
    root = write_crack_masks(tmp / "cracks", format="masks", scales=("pixel", "object"), n_train=8, n_test=3, size=64,
                             seed=6)  # fmt: skip
    crackcascade(
        "fit", "--config", CONF / "unet.yaml", "--data.root", root, "--data.val_fraction", "0.4",
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", tmp / "logs",
        "--trainer.callbacks+=tests.probes.SampleProbe", f"--trainer.callbacks.out_dir={tmp / 'seen'}",
        *TWO, cwd=tmp,
    )  # fmt: skip
    (run,) = (tmp / "logs" / "lightning_logs").iterdir()
    return {"root": root, "run": run, "seen": tmp / "seen", "tmp": tmp}


def test_classifier_two_processes_see_each_sample_once_and_match_one(classifier_run: dict[str, Path]) -> None:
    data = PhiNetDataModule(str(classifier_run["root"]), val_fraction=0.3)
    index = data.index()
    ranks = seen(classifier_run["seen"])
    for task in TASKS:
        expected = {f"{task}:{path}" for path in index["train"][task].paths}
        assert_each_once_up_to_padding([[s for s in r["train0"] if s.startswith(f"{task}:")] for r in ranks], expected)
    val = Counter(path for r in ranks for path in r["val0"])
    expected_val = {str(path) for task in TASKS for path in index["val"][task].paths}
    assert set(val) == expected_val and set(val.values()) == {1}, "each validation image on exactly one process"
    assert len(ranks[0]["val0"]) != len(ranks[1]["val0"]), "the data give the processes unequal shares"

    run, tmp = classifier_run["run"], classifier_run["tmp"]
    two = val_metrics(run)
    main(["validate", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
          "--trainer.logger.save_dir", str(tmp / "one"), *ONE])  # fmt: skip
    (one_run,) = (tmp / "one" / "lightning_logs").iterdir()
    one = val_metrics(one_run)
    scores = {k for k in two if not k.endswith("_loss")}  # losses are batch means: they depend on the batching
    assert {"val_acc", "val_f1", *(f"val_{t}_acc" for t in TASKS)} <= scores
    assert {k: two[k] for k in scores} == {k: one[k] for k in scores}


def test_unet_two_processes_see_each_sample_once_and_match_one(unet_run: dict[str, Path]) -> None:
    data = CrackMaskDataModule(str(unet_run["root"]), scales=["pixel", "object"], val_fraction=0.4)
    index = data.index()
    ranks = seen(unet_run["seen"])
    expected = {f"all:{r.image}" for scale in ("pixel", "object") for r in index[scale]["train"]}
    assert_each_once_up_to_padding([r["train0"] for r in ranks], expected)
    val = Counter(path for r in ranks for path in r["val0"])
    assert set(val) == {str(r.image) for scale in ("pixel", "object") for r in index[scale]["val"]}
    assert set(val.values()) == {1}

    run, tmp = unet_run["run"], unet_run["tmp"]
    two = val_metrics(run)
    main(["validate", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
          "--trainer.logger.save_dir", str(tmp / "one"), *ONE])  # fmt: skip
    (one_run,) = (tmp / "one" / "lightning_logs").iterdir()
    one = val_metrics(one_run)
    for scale in ("pixel", "object"):
        assert {f"val_{scale}_crack_f1", f"val_{scale}_crack_iou", f"val_{scale}_loss"} <= set(two)
    assert set(one) == set(two)
    for key, value in two.items():  # sums of counts are exact; losses are means of per-image losses
        assert one[key] == (pytest.approx(value, rel=1e-5) if key.endswith("_loss") else value), key


def test_two_process_predict_writes_each_photo_once(unet_run: dict[str, Path], tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for i, folder in enumerate(("a", "b", "c")):
        (photos / folder).mkdir(parents=True)
        pixels = np.random.default_rng(i).integers(0, 255, (40 + 8 * i, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / folder / "same name.png")  # three photos, one file name
    Image.fromarray(np.zeros((48, 48, 3), dtype=np.uint8)).save(photos / "d.png")
    run = unet_run["run"]
    common = ["--config", run / "config.yaml", "--ckpt_path", run / "checkpoints" / "last.ckpt",
              "--data.predict_root", photos]  # fmt: skip
    crackcascade("predict", *common, "--prediction_writer.output_dir", tmp_path / "two", *TWO, cwd=tmp_path)
    main(["predict", *map(str, common), "--prediction_writer.output_dir", str(tmp_path / "one"), *ONE])

    two = json.loads((tmp_path / "two" / "predictions.json").read_text())
    one = json.loads((tmp_path / "one" / "predictions.json").read_text())
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert [r["path"] for r in two] == [r["path"] for r in one]  # each photo once, in photo order
    assert len(two) == 4
    for a, b in zip(two, one, strict=True):
        assert Path(a["mask_path"]).name == Path(b["mask_path"]).name
        assert np.array_equal(np.asarray(Image.open(a["mask_path"])), np.asarray(Image.open(b["mask_path"])))
        assert a["fractions"] == b["fractions"] and a["summary"] == b["summary"]
    assert len({Path(r["mask_path"]).name for r in two}) == 4, "no process overwrote another's mask"
    assert len(list((tmp_path / "two" / "masks").iterdir())) == 4
    report = (tmp_path / "two" / "report.html").read_text()
    assert report.count("same name") >= 3


def test_cascade_test_on_two_processes_matches_one(
    classifier_run: dict[str, Path], unet_run: dict[str, Path], tmp_path: Path
) -> None:
    common = [
        "--config", ROOT / "configs" / "cascade.yaml",
        "--model.classifier", classifier_run["run"] / "checkpoints" / "last.ckpt",
        "--model.segmenter", unet_run["run"] / "checkpoints" / "last.ckpt",
        "--data.root", tmp_path / "scenes", "--data.scales", "[pixel, object]", "--data.n_test", "3",
        "--data.synthetic_size", "64",
    ]  # fmt: skip
    main(["test", *map(str, common), "--trainer.logger.save_dir", str(tmp_path / "one"), *ONE])  # writes the scenes
    crackcascade("test", *common, "--trainer.logger.save_dir", tmp_path / "two", *TWO, cwd=tmp_path)
    (one,) = (tmp_path / "one").rglob("cascade_test.json")
    (two,) = (tmp_path / "two").rglob("cascade_test.json")
    rows_one, rows_two = json.loads(one.read_text())["rows"], json.loads(two.read_text())["rows"]
    assert [(r["scale"], r["mode"]) for r in rows_two] == [
        (s, m) for s in ("pixel", "object") for m in ("ungated", "gated")
    ]
    for a, b in zip(rows_two, rows_one, strict=True):
        assert a["images"] == 3, "each photo scored once"
        assert {k: v for k, v in a.items() if k != "ms_per_image"} == {
            k: v for k, v in b.items() if k != "ms_per_image"
        }


class _Sharded:
    """The one trainer attribute data modules read to shard evaluation (a DDP trainer's, without the processes)."""

    def __init__(self, num_replicas: int, rank: int) -> None:
        self.distributed_sampler_kwargs = {"num_replicas": num_replicas, "rank": rank}


def test_evaluation_loaders_shard_without_repeats_and_refuse_too_few(crack_roots: dict[str, Path]) -> None:
    def val_indices(trainer: object) -> list[list[int]]:
        data = CrackMaskDataModule(str(crack_roots["masks"]), scales=["pixel", "object"], val_fraction=0.4)
        data.trainer = trainer  # type: ignore[assignment]
        data.setup("fit")
        return [list(loader.sampler) for loader in data.val_dataloader()]

    alone = val_indices(None)
    assert alone == [[0, 1, 2], [0, 1, 2]]  # one process: every image, in order
    shares = [val_indices(_Sharded(2, rank)) for rank in (0, 1)]
    assert shares == [[[0, 2], [0, 2]], [[1], [1]]]  # each image on one process, none repeated
    with pytest.raises(DataError, match=r"val split of scale 'pixel' has 3 samples for 4 processes"):
        val_indices(_Sharded(4, 0))


def _lazy_scales(rank: int, port: int, out: str) -> None:
    """One of two gloo processes: metrics of the scales it saw, created as they came, then synced."""
    import torch
    import torch.distributed as dist

    from crackcascade.metrics import SegmentationMetrics, names_on_all_ranks, unupdated_metrics_ok

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    seen = ["pixel"] if rank == 0 else ["structural", "pixel"]  # rank 1 alone sees structural, and first
    metrics: dict[str, SegmentationMetrics] = {}
    for scale in seen:
        metrics[scale] = SegmentationMetrics(1, thresholds=(0.5,))
        mask = torch.zeros(1, 8, 8, dtype=torch.long)
        mask[0, : 2 + rank] = 1  # rows of crack: 2 on rank 0, 3 on rank 1
        metrics[scale].update(mask[:, None].float(), mask)  # a perfect prediction: tp = crack pixels
    order = names_on_all_ranks(seen)
    with unupdated_metrics_ok():
        tp = {scale: int(metrics.setdefault(scale, SegmentationMetrics(1, thresholds=(0.5,))).counts()["tp"])
              for scale in order}  # fmt: skip
    Path(out, f"rank{rank}.json").write_text(json.dumps({"order": order, "tp": tp}))
    dist.destroy_process_group()


def test_metrics_first_seen_on_one_process_sync_on_all(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.start_processes(_lazy_scales, args=(port, str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not context.join(timeout=5):  # True once both are done; raises if one failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the processes did not finish in 120 s: their syncs did not pair up")
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert results[0] == results[1] == {"order": ["pixel", "structural"], "tp": {"pixel": 16 + 24, "structural": 24}}
