"""Every checkpoint crackcascade writes works with every subcommand, and a wrong one is refused in one line.

Checkpoints come from the command line (``crackcascade fit``) and from Python
(``Trainer.save_checkpoint``, as the notebooks and benchmarks save them), for the classifier and
the U-Net; ``--model <Class>`` with ``--ckpt_path`` is enough, and a checkpoint that records its
class needs not even that. What the commands compute must be what the checkpoint holds: test
scores equal those of ``Trainer.test`` in Python, predictions those of ``Trainer.predict``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from crackcascade import CrackMaskDataModule, CrackSegmenter, MultiTaskClassifier, PhiNetDataModule
from crackcascade.checkpoints import CLASS_KEY
from crackcascade.cli import main
from crackcascade.synthetic import write_crack_masks

from ..conftest import CONF, ROOT

THRESHOLD = 0.3
"""The U-Net threshold put into the Python-saved checkpoints: a model built anew would use 0.5."""

KINDS: dict[str, dict[str, Any]] = {
    "classifier": {
        "class": MultiTaskClassifier,
        "model": "crackcascade.MultiTaskClassifier",
        "config": CONF / "multitask.yaml",
        "data": ["--data", "crackcascade.PhiNetDataModule", "--data.image_size", "32", "--data.batch_size", "16"],
    },
    "unet": {
        "class": CrackSegmenter,
        "model": "crackcascade.CrackSegmenter",
        "config": CONF / "unet.yaml",
        "data": ["--data", "crackcascade.CrackMaskDataModule", "--data.scales", "[pixel, object]",
                 "--data.image_size", "64", "--data.batch_size", "4"],
    },
}  # fmt: skip


def _trainer(root: Path, **kwargs: Any) -> pl.Trainer:
    # root: where the classifier writes its confusion matrices (the log folder, here without a logger).
    return pl.Trainer(
        default_root_dir=root, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, **kwargs,
    )  # fmt: skip


def _datamodule(kind: str, root: Path, **kwargs: Any) -> pl.LightningDataModule:
    if kind == "classifier":
        return PhiNetDataModule(root=str(root), image_size=32, batch_size=16, **kwargs)
    return CrackMaskDataModule(root=str(root), scales=["pixel", "object"], image_size=64, batch_size=4, **kwargs)


@pytest.fixture(scope="module")
def roots(phinet_roots: dict[str, Path], crack_roots: dict[str, Path]) -> dict[str, Path]:
    return {"classifier": phinet_roots["arrays"], "unet": crack_roots["masks"]}


@pytest.fixture(scope="module")
def checkpoints(roots: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """(kind, origin) -> checkpoint: origin ``cli`` (crackcascade fit), ``python`` (Trainer.save_checkpoint)
    and ``old`` (a Python one without the class record, as crackcascade saved them before it had one)."""
    out = tmp_path_factory.mktemp("checkpoints")
    found: dict[tuple[str, str], Path] = {}
    for kind, spec in KINDS.items():
        main(["fit", "--config", str(spec["config"]), "--data.root", str(roots[kind]),
              "--trainer.default_root_dir", str(out / f"{kind}_cli")])  # fmt: skip
        found[kind, "cli"] = out / f"{kind}_cli" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
        pl.seed_everything(0, verbose=False)
        if kind == "classifier":
            model: pl.LightningModule = MultiTaskClassifier(backbone="test_resnet", optimizer="adamw", lr=1e-3)
        else:
            model = CrackSegmenter(encoder_name="tu-test_resnet", lr=1e-3, tile_size=64, tile_overlap=16)
        trainer = _trainer(out, max_epochs=1)
        trainer.fit(model, datamodule=_datamodule(kind, roots[kind]))
        if kind == "unet":
            model.threshold.fill_(THRESHOLD)  # type: ignore[operator]
        found[kind, "python"] = out / f"{kind}.ckpt"
        trainer.save_checkpoint(found[kind, "python"])
        saved = torch.load(found[kind, "python"], map_location="cpu", weights_only=True)
        assert saved[CLASS_KEY] == spec["model"], "the checkpoint records its class by its public import path"
        del saved[CLASS_KEY]
        found[kind, "old"] = out / f"{kind}_old.ckpt"
        torch.save(saved, found[kind, "old"])
    return found


def _metrics(folder: Path) -> dict[str, float]:
    (path,) = folder.rglob("metrics.csv")
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    return {k: float(v) for row in rows for k, v in row.items() if v and k not in ("epoch", "step")}


def _run(subcommand: str, kind: str, root: Path, ckpt: Path, out: Path, model: str | None, *extra: str) -> None:
    main([
        subcommand, *(["--model", model] if model else []), *KINDS[kind]["data"], "--data.root", str(root),
        "--ckpt_path", str(ckpt), "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        # The CLI defaults to bf16 where the CPU runs it natively; the Python reference runs float32.
        "--trainer.precision", "32-true",
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(out),
        "--trainer.default_root_dir", str(out), *extra,
    ])  # fmt: skip


# (origin, how --model is given): the class's import path, its short name, or left out (the checkpoint says).
CASES = [("cli", "path"), ("cli", "none"), ("python", "short"), ("python", "none"), ("old", "short")]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(("origin", "given"), CASES)
def test_test_and_validate_score_the_checkpoint(
    kind: str, origin: str, given: str, roots: dict[str, Path], checkpoints: dict[tuple[str, str], Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    ckpt, spec = checkpoints[kind, origin], KINDS[kind]
    model = {"path": spec["model"], "short": spec["class"].__name__, "none": None}[given]
    _run("test", kind, roots[kind], ckpt, tmp_path / "test", model)
    _run("validate", kind, roots[kind], ckpt, tmp_path / "val", model)

    reference = spec["class"].load_from_checkpoint(ckpt, weights_only=True)
    python, data = _trainer(tmp_path / "python"), _datamodule(kind, roots[kind])
    expected = python.test(reference, datamodule=data, verbose=False)[0]
    got = _metrics(tmp_path / "test")
    assert set(expected) <= set(got)
    for key, value in expected.items():
        assert got[key] == pytest.approx(float(value), rel=1e-5, abs=1e-7), key
    fresh = spec["class"](**{k: v for k, v in reference.hparams.items() if not k.startswith("_")})
    untrained = python.test(fresh, datamodule=data, verbose=False)[0]
    assert untrained["test_loss"] != pytest.approx(got["test_loss"], rel=1e-5), "the loss tells the weights apart"
    if kind == "unet":
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]["threshold"]
        assert got["test_threshold"] == pytest.approx(float(saved[0]))
        if origin != "cli":
            assert got["test_threshold"] == pytest.approx(THRESHOLD), "the threshold buffer of the checkpoint"

    validated = python.validate(reference, datamodule=data, verbose=False)[0]
    assert _metrics(tmp_path / "val")["val_loss"] == pytest.approx(float(validated["val_loss"]), rel=1e-5)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("origin", ["cli", "python"])
def test_predict_and_resume_from_the_checkpoint(
    kind: str, origin: str, roots: dict[str, Path], checkpoints: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    ckpt, spec = checkpoints[kind, origin], KINDS[kind]
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    out = tmp_path / "predictions"
    _run("predict", kind, roots[kind], ckpt, tmp_path / "logs", None,
         "--data.predict_root", str(photos), "--prediction_writer.output_dir", str(out))  # fmt: skip
    records = json.loads((out / "predictions.json").read_text())

    reference = spec["class"].load_from_checkpoint(ckpt, weights_only=True)
    photos_data = _datamodule(kind, roots[kind], predict_root=str(photos))
    expected = [r for batch in _trainer(tmp_path / "python").predict(reference, datamodule=photos_data) for r in batch]
    assert [Path(r["path"]).name for r in records] == [Path(r["path"]).name for r in expected] == ["p0.png", "p1.png"]
    for ours, theirs in zip(records, expected, strict=True):
        if kind == "classifier":
            for task, pred in theirs["tasks"].items():
                assert ours["tasks"][task]["probabilities"] == pytest.approx(pred["probabilities"], abs=1e-6), task
        else:
            mask = np.asarray(Image.open(ours["mask_path"]))
            assert np.array_equal(mask, np.asarray(theirs["mask"], dtype=np.uint8) * 255)

    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    _run("fit", kind, roots[kind], ckpt, tmp_path / "fit", spec["model"], "--trainer.max_epochs", "2")
    (resumed,) = (tmp_path / "fit").rglob("checkpoints/*.ckpt")
    after = torch.load(resumed, map_location="cpu", weights_only=True)
    # The checkpoint ends epoch 0 (Trainer.save_checkpoint after fit counts it done: epoch 1); fit trains epoch 1 only.
    assert after["epoch"] == 1 and after["global_step"] == 2 * saved["global_step"] > 0


# ---- checkpoints given to the wrong model or data ----------------------------------------------


def _error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("holds", "config", "asks"),
    [("classifier", ROOT / "configs" / "unet_pixel.yaml", "unet"),
     ("unet", ROOT / "configs" / "resnet_multitask.yaml", "classifier")],
)  # fmt: skip
def test_a_checkpoint_given_to_a_config_of_the_other_model_is_one_line(
    holds: str, config: Path, asks: str, roots: dict[str, Path], checkpoints: dict[tuple[str, str], Path],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for origin in ("cli", "python"):
        ckpt = checkpoints[holds, origin]
        line = _error(capsys, ["test", "--config", str(config), "--data.root", str(roots[asks]),
                               "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
        held, asked = KINDS[holds]["class"].__name__, KINDS[asks]["class"].__name__
        assert line == (
            f"crackcascade: error: --ckpt_path '{ckpt}' holds a {held} checkpoint, but the config asks for model "
            f"{asked}; pass --model {KINDS[holds]['model']} and data of its kind, or the config.yaml of the run "
            "that trained it"
        )
    assert not list(tmp_path.iterdir()), "refused before any log folder was made"


def test_an_old_checkpoint_is_judged_by_its_hyper_parameters(
    roots: dict[str, Path], checkpoints: dict[tuple[str, str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    old = checkpoints["unet", "old"]
    data = [*KINDS["unet"]["data"], "--data.root", str(roots["unet"]), "--ckpt_path", str(old)]
    line = _error(capsys, ["test", "--model", "MultiTaskClassifier", *data])
    assert line == (
        f"crackcascade: error: --ckpt_path '{old}' holds a CrackSegmenter checkpoint (judging by its "
        "hyper-parameters), but the config asks for model MultiTaskClassifier; pass --model "
        "crackcascade.CrackSegmenter and data of its kind, or the config.yaml of the run that trained it"
    )
    line = _error(capsys, ["test", *data])
    assert line == (
        f"crackcascade: error: --ckpt_path '{old}' does not record its model class (saved before crackcascade "
        "recorded it); pass --model crackcascade.CrackSegmenter"
    )


def test_a_two_class_unet_on_one_class_data_names_both_class_lists(
    roots: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two = write_crack_masks(tmp_path / "two", scales=("pixel",), classes=("crack", "spalling"), n_train=2, n_test=1,
                            size=64, seed=4)  # fmt: skip
    model = CrackSegmenter(encoder_name="tu-test_resnet", classes=["crack", "spalling"], tile_size=64, tile_overlap=16)
    ckpt = tmp_path / "two.ckpt"
    trainer = _trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    data = CrackMaskDataModule(root=str(two), scales=["pixel"], classes=["crack", "spalling"], image_size=64)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(ckpt)
    line = _error(capsys, ["test", *KINDS["unet"]["data"], "--data.root", str(roots["unet"]), "--ckpt_path", str(ckpt),
                           "--trainer.default_root_dir", str(tmp_path / "logs")])  # fmt: skip
    assert line == (
        "crackcascade: error: model.classes ['crack', 'spalling'] differ from data.classes ['crack'] (channel i is "
        "mask value i + 1); pass --data.classes [crack, spalling] with masks of these classes, or use a model "
        "trained on the data's classes"
    )
    assert not (tmp_path / "logs").exists(), "the failed test left no empty log folder"


def test_a_checkpoint_whose_settings_the_model_no_longer_takes_is_one_line(
    roots: dict[str, Path], checkpoints: dict[tuple[str, str], Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    saved = torch.load(checkpoints["unet", "python"], map_location="cpu", weights_only=True)
    saved["hyper_parameters"]["gone_option"] = 3  # as from a version of CrackSegmenter that had it
    other = tmp_path / "other version.ckpt"
    torch.save(saved, other)
    line = _error(
        capsys, ["test", *KINDS["unet"]["data"], "--data.root", str(roots["unet"]), "--ckpt_path", str(other)]
    )
    assert line == (
        f"crackcascade: error: --ckpt_path '{other}': its hyper-parameters do not fit crackcascade.CrackSegmenter "
        "(unknown option --model.gone_option); it was saved by another version of the model: use that version, "
        "or retrain"
    )
