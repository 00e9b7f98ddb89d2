"""Bad inputs at the model level: untrained heads are not scored, and exports check their output path first.

* A classifier trained on some tasks and tested (``trainer.test`` / ``validate``, as ``crackcascade
  test --ckpt_path`` runs it) on data labelled for a task whose head never trained scores only the
  trained heads and says once which ones it left out; the checkpoint's record decides. Crack
  scores read from an untrained damage-type head are still given, with a warning.
* ``crackcascade export`` names an output it cannot write (under a file, in a folder it cannot
  write, a folder) in one line before reading the checkpoint, and refuses an existing ``.onnx``
  or ``.json`` unless ``--overwrite`` is given.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from crackcascade.cli import main
from crackcascade.data.datamodules import ConcreteCrackDataModule, PhiNetDataModule
from crackcascade.export import read_metadata
from crackcascade.models.multitask import MultiTaskClassifier
from crackcascade.synthetic import write_concrete_cracks, write_phinet

HEADS = ["scene", "spalling", "material"]
TRAINED = ["scene", "spalling"]
TRAINER: dict[str, Any] = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "accelerator": "cpu",
}


@pytest.fixture(scope="module")
def phinet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phinet")
    write_phinet(root, format="arrays", n_train=8, n_test=4, size=32, seed=1, tasks=HEADS)
    return root


@pytest.fixture(scope="module")
def checkpoint(phinet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier with scene, spalling and material heads, fitted on data labelled for scene and spalling only."""
    torch.manual_seed(0)
    model = MultiTaskClassifier(backbone="test_resnet", tasks=HEADS, optimizer="adamw")
    data = PhiNetDataModule(root=str(phinet), tasks=TRAINED, image_size=32, batch_size=4, val_fraction=0.25)
    trainer = pl.Trainer(max_epochs=1, default_root_dir=str(tmp_path_factory.mktemp("fit")), **TRAINER)
    trainer.fit(model, datamodule=data)
    path = tmp_path_factory.mktemp("ckpt") / "classifier.ckpt"
    trainer.save_checkpoint(path)
    return path


def _evaluate(
    phinet: Path, checkpoint: Path, how: str, stage: str, tasks: tuple[str, ...] = ("scene", "material")
) -> tuple[dict[str, float], list[str]]:
    """Test or validate on data labelled for ``tasks``; the metrics and the warnings."""
    data = PhiNetDataModule(root=str(phinet), tasks=list(tasks), image_size=32, batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = pl.Trainer(default_root_dir=str(checkpoint.parent), **TRAINER)  # confusion_*.json go there
        run = trainer.test if stage == "test" else trainer.validate
        if how == "ckpt_path":  # as `crackcascade test --ckpt_path` does: a fresh model, the weights restored
            results = run(MultiTaskClassifier(backbone="test_resnet", tasks=HEADS), datamodule=data,
                          ckpt_path=str(checkpoint), verbose=False)  # fmt: skip
        else:
            results = run(MultiTaskClassifier.load_from_checkpoint(checkpoint), datamodule=data, verbose=False)
    return results[0], [str(w.message) for w in caught]


@pytest.mark.parametrize("how", ["ckpt_path", "load_from_checkpoint"])
@pytest.mark.parametrize("stage", ["test", "validate"])
def test_untrained_heads_are_left_out_and_named_once(phinet: Path, checkpoint: Path, how: str, stage: str) -> None:
    assert torch.load(checkpoint, weights_only=False)["crackcascade_trained_tasks"] == TRAINED
    metrics, messages = _evaluate(phinet, checkpoint, how, stage)
    prefix = "test" if stage == "test" else "val"
    assert set(metrics) == {f"{prefix}_{k}" for k in ("loss", "scene_loss", "scene_acc", "scene_f1", "acc", "f1")}
    # The means and the loss are scene's alone: the material head counts nowhere.
    assert metrics[f"{prefix}_acc"] == metrics[f"{prefix}_scene_acc"]
    assert metrics[f"{prefix}_loss"] == pytest.approx(metrics[f"{prefix}_scene_loss"])
    said = [m for m in messages if "never trained" in m]
    assert said == [
        f"{stage}: the model's material head(s) were never trained (trained: scene, spalling); their {stage} "
        "metrics are left out, as predict leaves them out"
    ], messages


def test_data_labelled_only_for_untrained_heads_gives_no_metrics(phinet: Path, checkpoint: Path) -> None:
    metrics, messages = _evaluate(phinet, checkpoint, "ckpt_path", "test", tasks=("material",))
    assert metrics == {}, "not even a test_loss of 0: no scored head has a label here"
    assert sum("material head(s) were never trained" in m for m in messages) == 1, messages


def test_heads_the_checkpoint_records_as_trained_are_scored(phinet: Path, checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(checkpoint, weights_only=False)
    state["crackcascade_trained_tasks"] = HEADS
    every = tmp_path / "every_head_trained.ckpt"
    torch.save(state, every)
    metrics, messages = _evaluate(phinet, every, "ckpt_path", "test")
    assert {"test_scene_acc", "test_material_acc", "test_material_f1"} <= set(metrics)
    assert "test_spalling_acc" not in metrics, "spalling has no label in this data"
    assert metrics["test_acc"] == pytest.approx((metrics["test_scene_acc"] + metrics["test_material_acc"]) / 2)
    assert not any("never trained" in m for m in messages), messages


def test_crack_scores_from_an_untrained_damage_type_head_come_with_a_warning(tmp_path: Path) -> None:
    # Heads for damage state and type, only damage state trained (as a fit on concrete-crack data
    # leaves them): crack scores, read from the damage-type head, are given but flagged.
    model = MultiTaskClassifier(backbone="test_resnet", tasks=["damage_state", "damage_type"])
    state = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": pl.__version__,
    }
    torch.save({**state, "crackcascade_trained_tasks": ["damage_state"]}, tmp_path / "c.ckpt")
    data = ConcreteCrackDataModule(str(write_concrete_cracks(tmp_path / "data", n=4, size=32, seed=0)), image_size=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (metrics,) = pl.Trainer(default_root_dir=str(tmp_path), **TRAINER).test(
            MultiTaskClassifier.load_from_checkpoint(tmp_path / "c.ckpt"), datamodule=data, verbose=False
        )
    assert {"test_crack_acc", "test_damage_state_acc"} <= set(metrics)
    said = [str(w.message) for w in caught if "crack scores are read" in str(w.message)]
    assert said == [
        "test: crack scores are read from the damage_type head, which this checkpoint records as never trained "
        "(trained: damage_state); train it on Phi-Net damage types first"
    ], [str(w.message) for w in caught]


# ---- export ---------------------------------------------------------------------------------------


def _export_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *args])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crackcascade: error: "), lines
    return lines[0].removeprefix("crackcascade: error: ")


def _under_a_file(tmp: Path) -> tuple[Path, str]:
    (tmp / "notes.txt").write_text("x")
    return tmp / "notes.txt" / "models" / "m.onnx", f"{tmp / 'notes.txt'} is a file, not a folder; choose another path"


def _a_folder(tmp: Path) -> tuple[Path, str]:
    (tmp / "m.onnx").mkdir()
    return tmp / "m.onnx", f"{tmp / 'm.onnx'} is a folder; name a file"


def _unwritable(tmp: Path) -> tuple[Path, str]:
    # /proc takes no new files, whoever runs the tests (a chmod'ed folder would not stop root).
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc as a folder nobody can write in")
    return Path("/proc/crackcascade-export-test/m.onnx"), "cannot write in /proc/crackcascade-export-test ("


@pytest.mark.parametrize("place", [_under_a_file, _a_folder, _unwritable], ids=["under_a_file", "folder", "unwritable"])
def test_export_names_an_unusable_output_before_reading_the_checkpoint(
    place: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output, text = place(tmp_path)
    # The checkpoint does not exist: an export that got as far as reading it would say so instead.
    message = _export_error([str(tmp_path / "missing.ckpt"), str(output), "--no-verify"], capsys)
    assert message.startswith(f"output '{output}': ") and text in message, message


def test_export_refuses_an_existing_output_unless_overwrite(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output, metadata = tmp_path / "m.onnx", tmp_path / "m.json"
    metadata.write_text("mine")
    message = _export_error([str(checkpoint), str(output), "--no-verify"], capsys)
    assert message == f"output '{output}': {metadata} exists; pass --overwrite to replace it, or choose another name"
    output.write_bytes(b"mine too")
    message = _export_error([str(checkpoint), str(output), "--no-verify"], capsys)
    assert message == f"output '{output}': {output} exists; pass --overwrite to replace it, or choose another name"
    assert output.read_bytes() == b"mine too" and metadata.read_text() == "mine", "nothing was touched"

    assert main(["export", str(checkpoint), str(output), "--no-verify", "--overwrite"]) == 0
    assert [o["name"] for o in read_metadata(output)["outputs"]] == TRAINED
    assert json.loads(metadata.read_text())["checkpoint"] == str(checkpoint)


def test_export_help_documents_overwrite(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--help"])
    assert exit_info.value.code == 0
    assert "--overwrite" in capsys.readouterr().out
