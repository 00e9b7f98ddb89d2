"""Fault scenarios: a run killed or stopped mid-epoch, a NaN loss, a full or unwritable disk, untrusted checkpoints.

The kill and SIGTERM tests run ``crackcascade fit`` in a subprocess that pauses at a known step
(:class:`tests.fault_hooks.PauseAt` writes a marker, the test waits for it), interrupt it there,
resume with ``--ckpt_path last`` and compare with a run that was never interrupted: every tensor
of the final checkpoint and the last epoch's logged metrics must be equal.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from crackcascade.callbacks import RunGuard
from crackcascade.checkpoints.restore import load_classifier
from crackcascade.cli import main
from crackcascade.errors import ConfigError, NumericalError, WeightsError
from crackcascade.labels import TASK_NAMES
from crackcascade.models.multitask import MultiTaskClassifier
from crackcascade.models.segmenter import CrackSegmenter
from crackcascade.outputs import preflight
from crackcascade.synthetic import write_phinet

from ..conftest import CONF, ROOT

KILL_STEP = 6
"""Global step after which the run is interrupted: epoch 1 of 3, two of its four batches done."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tasks of unequal size (7 and 3 training images), so the small one cycles within an epoch."""
    root = tmp_path_factory.mktemp("faults_data")
    write_phinet(root, format="folders", n_train=8, n_test=2, size=48, seed=1, tasks=("scene", "spalling"))
    for path in sorted((root / "spalling" / "train").glob("*/*.jpg"))[:4]:
        path.unlink()
    return root


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    # Augmentation on and dropout, so a resumed run must replay random crops, flips, jitter and masks.
    return [
        "fit", "--config", str(CONF / "multitask.yaml"), "--data.root", str(data), "--trainer.max_epochs", "3",
        "--data.batch_size", "4", "--model.dropout", "0.2", "--trainer.default_root_dir", str(out),
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run that was never interrupted: its version folder."""
    out = tmp_path_factory.mktemp("reference")
    main(_args(data, out))
    return out / "lightning_logs" / "version_0"


def _start(data: Path, out: Path, marker: Path, until_sigterm: bool) -> subprocess.Popen[str]:
    pause = {"class_path": "tests.fault_hooks.PauseAt", "init_args": {"step": KILL_STEP, "marker": str(marker)}}
    pause["init_args"]["until_sigterm"] = until_sigterm  # type: ignore[index]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "crackcascade", *_args(data, out, f"--trainer.callbacks+={json.dumps(pause)}")]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(marker: Path, process: subprocess.Popen[str], timeout: float = 300.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(f"training ended before step {KILL_STEP}: {process.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"training did not reach step {KILL_STEP} within {timeout} s")
        time.sleep(0.1)
    time.sleep(0.05)  # the marker's content is written in one call; let it land
    return json.loads(marker.read_text())


def _last_epoch_metrics(run: Path) -> dict[str, str]:
    """Every metric logged in the last epoch (validation, training epoch scores, the last step's loss)."""
    with open(run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    last = max(int(row["epoch"]) for row in rows if row.get("epoch"))
    merged: dict[str, str] = {}
    for row in rows:
        if row.get("epoch") and int(row["epoch"]) == last:
            merged.update({k: v for k, v in row.items() if k.startswith(("val_", "train_")) and v})
    return merged


def _assert_same_run(resumed: Path, reference: Path) -> None:
    ours = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    theirs = torch.load(reference / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ours["global_step"] == theirs["global_step"] == 12 and ours["epoch"] == theirs["epoch"] == 2
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    different = [k for k, v in theirs["state_dict"].items() if not torch.equal(ours["state_dict"][k], v)]
    assert not different, f"{len(different)} tensors differ, e.g. {different[0]}"
    mine_state, other_state = ours["optimizer_states"][0]["state"], theirs["optimizer_states"][0]["state"]
    assert mine_state.keys() == other_state.keys()
    for mine, other in zip(mine_state.values(), other_state.values(), strict=True):
        assert all(torch.equal(mine[k], other[k]) for k in other), "optimizer state differs"
    metrics = _last_epoch_metrics(resumed)
    assert metrics == _last_epoch_metrics(reference)
    assert {"val_acc", "val_loss", "train_acc", "train_loss"} <= set(metrics)


def test_sigkill_mid_epoch_then_resume_last_equals_an_uninterrupted_run(
    data: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "paused.json"
    process = _start(data, tmp_path, marker, until_sigterm=False)
    state = _wait_for(marker, process)
    process.kill()  # SIGKILL: no handler runs, nothing is saved now
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert state == {"epoch": 1, "global_step": KILL_STEP, "batch_idx": 1}, "killed mid-epoch"
    killed = tmp_path / "lightning_logs" / "version_0"
    saved = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 4), "what is left is the checkpoint of epoch 0's end"

    capsys.readouterr()
    main(_args(data, tmp_path, "--ckpt_path", "last"))
    err = capsys.readouterr().err
    assert f"crackcascade: resuming from {killed / 'checkpoints' / 'last.ckpt'} (epoch 0, global step 4)" in err
    _assert_same_run(tmp_path / "lightning_logs" / "version_1", reference)


def test_sigterm_saves_a_checkpoint_mid_epoch_exits_143_and_resumes_exactly(
    data: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "paused.json"
    process = _start(data, tmp_path, marker, until_sigterm=True)
    _wait_for(marker, process)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    # A batch takes well under a second; the bound leaves a busy 2-core machine room. Where it
    # stopped is proved below (exit 143, a checkpoint at the step it was paused on).
    assert time.monotonic() - sent < 100, "stopped promptly, at the end of the current batch"
    killed = tmp_path / "lightning_logs" / "version_0"
    last = killed / "checkpoints" / "last.ckpt"
    assert process.returncode == 143, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        f"crackcascade: stopped by SIGTERM at epoch 1, global step {KILL_STEP}; saved {last}; "
        "resume with --ckpt_path last"
    )
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (1, KILL_STEP), "the checkpoint is from mid-epoch"

    main(_args(data, tmp_path, "--ckpt_path", "last"))
    # Resuming mid-epoch skips exactly the two batches already trained, with the same order and augmentation.
    _assert_same_run(tmp_path / "lightning_logs" / "version_1", reference)


def test_ckpt_path_last_without_an_earlier_run_is_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(_args(data, tmp_path, "--ckpt_path", "last"))
    assert info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("crackcascade: error: --ckpt_path last: no last.ckpt of an earlier run in "), line
    assert str(tmp_path / "lightning_logs" / "*" / "checkpoints") in line
    with pytest.raises(SystemExit):
        main(_args(data, tmp_path, "--ckpt_path", str(tmp_path / "nope.ckpt")))
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"crackcascade: error: --ckpt_path '{tmp_path / 'nope.ckpt'}': no such file"), line


# ---- numerical faults -----------------------------------------------------------------------


def test_nan_loss_stops_with_the_step_the_task_and_the_files(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    forward = MultiTaskClassifier.forward

    def poisoned(self: MultiTaskClassifier, images: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = forward(self, images)
        if self.training and self.trainer.global_step == 2:
            logits["spalling"] = logits["spalling"] * float("nan")
        return logits

    monkeypatch.setattr(MultiTaskClassifier, "forward", poisoned)
    with pytest.raises(SystemExit) as info:
        main(_args(data, tmp_path))
    assert info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(
        "crackcascade: error: training loss is nan at global step 2 (epoch 0): non-finite spalling loss nan; "
        "batch files: "
    ), line
    assert "scene loss" not in line, "only the task whose loss is not finite is named"
    named = line.split("batch files: ")[1].split(";")[0].split(", ")
    assert named[0].startswith(str(data)) and Path(named[0]).is_file(), named
    assert line.endswith(
        "stopped before the update (lower --model.lr, set --trainer.gradient_clip_val, or check these files)"
    )
    saved = torch.load(next(tmp_path.glob("lightning_logs/version_0/checkpoints/last.ckpt")), weights_only=True)
    assert saved["global_step"] == 2, "the checkpoint saved on the error holds the weights before the bad step"
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def _pixel_batches(n: int = 2) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    samples = [
        {
            "image": torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8, generator=generator),
            "mask": torch.randint(0, 3, (32, 32), generator=generator),
            "path": f"crop{i}.png",
        }
        for i in range(2 * n)
    ]
    return DataLoader(samples, batch_size=2)  # type: ignore[arg-type]


def _quiet_trainer(**kwargs: Any) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, **kwargs,
    )  # fmt: skip


def test_nan_in_one_class_of_the_unet_names_that_class_and_its_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    model = CrackSegmenter(encoder_name="tu-test_resnet", classes=["crack", "spalling"], lr=1e-3)
    forward = CrackSegmenter.forward

    def poisoned(self: CrackSegmenter, images: torch.Tensor) -> torch.Tensor:
        logits = forward(self, images)
        if self.training and self.trainer.global_step == 1:
            logits = torch.cat([logits[:, :1], logits[:, 1:] * float("nan")], dim=1)
        return logits

    monkeypatch.setattr(CrackSegmenter, "forward", poisoned)
    trainer = _quiet_trainer(max_steps=3, callbacks=[RunGuard(check_output=False)])
    with pytest.raises(NumericalError) as info:
        trainer.fit(model, train_dataloaders=_pixel_batches())
    message = str(info.value)
    assert message.startswith("training loss is nan at global step 1 (epoch 0): non-finite spalling bce "), message
    assert "spalling dice" in message and "crack bce" not in message and "crack dice" not in message
    assert "batch files: crop2.png, crop3.png;" in message
    assert trainer.global_step == 1 and all(torch.isfinite(p).all() for p in model.parameters())


def _classifier_batches() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    labels = torch.full((4, len(TASK_NAMES)), -1)
    labels[:, 0] = torch.tensor([0, 1, 2, 0])
    samples = [
        {"image": torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8, generator=generator), "labels": labels[i],
         "path": f"{i}.jpg"}
        for i in range(4)
    ]  # fmt: skip
    return DataLoader(samples, batch_size=4)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ["norm", "value"])
@pytest.mark.parametrize("kind", ["classifier", "unet"])
def test_gradient_clipping_bounds_the_update(kind: str, algorithm: str) -> None:
    def update(clip: float | None) -> torch.Tensor:
        pl.seed_everything(0, verbose=False)
        if kind == "classifier":
            model: pl.LightningModule = MultiTaskClassifier(
                backbone="test_resnet", tasks=["scene"], optimizer="sgd", momentum=0.0, lr=1.0
            )
            loader = _classifier_batches()
        else:
            model = CrackSegmenter(encoder_name="tu-test_resnet", optimizer="sgd", momentum=0.0, lr=1.0)
            loader = _pixel_batches(1)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        trainer = _quiet_trainer(max_steps=1, gradient_clip_val=clip, gradient_clip_algorithm=algorithm)
        trainer.fit(model, train_dataloaders=loader)
        return torch.cat([p.detach().flatten() for p in model.parameters()]) - before  # = -lr * clipped gradient

    limit = 1e-4
    clipped, free = update(limit), update(None)
    size = clipped.norm() if algorithm == "norm" else clipped.abs().max()
    assert size <= limit * 1.001, float(size)
    assert size > limit * 0.5, "the gradient was clipped to the limit, not zeroed"
    assert (free.norm() if algorithm == "norm" else free.abs().max()) > 100 * limit, "without clipping it is larger"


# ---- the output folders -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["under_a_file", "read_only"])
def test_unwritable_output_folder_fails_before_training(
    where: str, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if where == "under_a_file":
        (tmp_path / "notes.txt").write_text("a file, not a folder")
        out, reason = tmp_path / "notes.txt" / "runs", "is a file"
    else:
        out, reason = Path("/proc/crackcascade-runs"), ""  # /proc takes no new files, not even from root
    with pytest.raises(SystemExit) as info:
        main(_args(data, out))
    assert info.value.code == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"crackcascade: error: cannot write the logs folder '{out / 'lightning_logs'}"), line
    assert reason in line and "choose a writable --trainer.default_root_dir" in line
    assert "Epoch 0" not in err and "val_acc" not in err, "reported before any training"


def test_full_disk_fails_before_training(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 30, (10 << 30) - (3 << 20), 3 << 20))
    with pytest.raises(SystemExit):
        main(_args(data, tmp_path))
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"crackcascade: error: only 3 MiB free for the logs folder '{tmp_path}"), line
    assert line.endswith("free disk space or choose another --trainer.default_root_dir")
    assert not list(tmp_path.rglob("*.ckpt"))


def test_checkpoint_folder_needs_room_for_the_checkpoints_it_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 40, 0, 100 << 20))
    model = torch.nn.Linear(2048, 4096)  # 32 MiB of weights, about 96 MiB with two Adam moments
    two = pl.Trainer(default_root_dir=tmp_path, logger=False, callbacks=[pl.callbacks.ModelCheckpoint()])
    with pytest.raises(
        ConfigError, match=r"only 100 MiB free for the checkpoints folder .* 2 checkpoints of about 96 MiB"
    ):
        preflight(two, model)
    preflight(two, torch.nn.Linear(1024, 1024))  # 12 MiB each: fits


# ---- untrusted checkpoints ----------------------------------------------------------------------


class Payload:
    """What a malicious checkpoint carries: unpickling it runs :func:`_run_code`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _run_code, (self.marker,)


class Leftover:
    """A harmless object that a trusted load leaves in the checkpoint."""


def _run_code(marker: str) -> Leftover:
    Path(marker).write_text("code from the checkpoint ran")
    return Leftover()


def test_a_checkpoint_with_pickled_objects_is_refused_converted_or_trusted(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = tmp_path / "code-ran.txt"
    checkpoint = torch.load(reference / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    checkpoint["extra"] = Payload(str(ran))
    evil = tmp_path / "shared by a colleague.ckpt"
    torch.save(checkpoint, evil)
    test = ["test", "--config", str(reference / "config.yaml"), "--trainer.logger.save_dir", str(tmp_path)]

    with pytest.raises(SystemExit) as info:
        main([*test, "--ckpt_path", str(evil)])
    assert info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (
        f"crackcascade: error: --ckpt_path: '{evil}' holds pickled Python objects ({__name__}._run_code), "
        f"which could run code when loaded; if you trust its source, convert it once with `crackcascade convert {evil} "
        "<new>.ckpt` (or <new>.safetensors for the weights alone), or pass --trust_checkpoint true "
        "(CRACKCASCADE_TRUST_CHECKPOINTS=1)"
    )
    assert not ran.exists(), "refusing the file ran none of its code"
    with pytest.raises(WeightsError, match=rf"model.classifier: '.*' holds pickled Python objects \({__name__}"):
        load_classifier(evil)
    assert not ran.exists()

    main([*test, "--ckpt_path", str(evil), "--trust_checkpoint", "true"])
    assert ran.exists(), "trusted explicitly, the file loads with pickle (and its code runs)"
    assert "CRACKCASCADE_TRUST_CHECKPOINTS" not in os.environ, "the trust flag holds for that command only"
    (saved_config,) = tmp_path.glob("lightning_logs/version_*/config.yaml")
    assert "trust" not in saved_config.read_text(), "a saved config must not carry the trust to later commands"
    ran.unlink()

    safe, weights = tmp_path / "converted.ckpt", tmp_path / "converted.safetensors"
    assert main(["convert", str(evil), str(safe)]) == 0
    assert f"dropped extra ({__name__}.Leftover): not a tensor or plain value" in capsys.readouterr().err
    assert main(["convert", str(evil), str(weights)]) == 0
    converted = torch.load(safe, map_location="cpu", weights_only=True)
    assert "extra" not in converted and converted["global_step"] == checkpoint["global_step"]
    tensors = load_file(str(weights))
    assert all(torch.equal(tensors[k], v) for k, v in checkpoint["state_dict"].items())
    ran.unlink()  # converting unpickles: its code ran there, as the command warns
    main([*test, "--ckpt_path", str(safe)])
    assert not ran.exists()
    model = MultiTaskClassifier(backbone="test_resnet", tasks=["scene", "spalling"], pretrained_weights=str(weights))
    assert all(torch.equal(v, tensors[f"backbone.{k}"]) for k, v in model.backbone.state_dict().items())


def test_our_checkpoints_load_weights_only(reference: Path) -> None:
    path = reference / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert {"state_dict", "optimizer_states", "lr_schedulers", "loops", "callbacks"} <= set(checkpoint)
    model = MultiTaskClassifier.load_from_checkpoint(path, weights_only=True)
    assert all(torch.equal(v, checkpoint["state_dict"][k]) for k, v in model.state_dict().items())


# ---- what makes the replay exact -------------------------------------------------------------


def test_replay_sampler_order_depends_on_seed_and_epoch_only_and_resumes_at_a_position() -> None:
    from crackcascade.data.sampling import ReplaySampler

    def epoch(sampler: ReplaySampler, number: int) -> list[tuple[int, int]]:
        sampler.set_epoch(number)
        torch.rand(7)  # the global RNG moving on changes nothing
        return list(sampler)

    data = list(range(10))
    first, again = ReplaySampler(data, seed=3), ReplaySampler(data, seed=3)
    assert epoch(first, 2) == epoch(again, 2)
    assert sorted(i for i, _ in epoch(first, 2)) == data
    assert epoch(first, 2) != epoch(first, 3) and epoch(first, 2) != epoch(ReplaySampler(data, seed=4), 2)
    assert epoch(ReplaySampler(data, seed=3, stream=1), 2) != epoch(first, 2)
    cycled = ReplaySampler(data, seed=3)
    cycled.set_epoch(2)
    passes = [list(cycled), list(cycled)]
    assert passes[0] != passes[1], "a loader cycled within an epoch takes a new order each pass"
    resumed = ReplaySampler(data, seed=3)
    resumed.resume(2, completed_passes=1, samples_done=4)
    resumed.set_epoch(2)
    assert list(resumed) == passes[1][4:], "the rest of the second pass, with the same sample seeds"


def test_augmentation_is_the_same_for_any_number_of_workers(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crackcascade.data.datamodules import PhiNetDataModule

    monkeypatch.setenv("PL_GLOBAL_SEED", "5")

    def images(workers: int, augment: bool = True) -> list[torch.Tensor]:
        dm = PhiNetDataModule(root=str(data), image_size=32, batch_size=4, num_workers=workers, augment=augment)
        dm.setup("fit")
        loader = dm.train_dataloader()
        for task_loader in loader.flattened:
            task_loader.sampler.set_epoch(1)  # as Lightning does at the start of epoch 1
        return [part["image"] for batch, _, _ in loader for part in batch.values()]

    plain, parallel, unaugmented = images(0), images(2), images(0, augment=False)
    assert len(plain) == len(parallel) == len(unaugmented)
    assert all(torch.equal(a, b) for a, b in zip(plain, parallel, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(plain, unaugmented, strict=True)), "augmentation ran"
