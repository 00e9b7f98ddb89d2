"""Weights & Biases logging through the real command line, offline and without an account.

The run's config and summary are read back from its transaction log with wandb's own reader
(:func:`tests.conftest.wandb_inspect`); its media are files under ``files/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crackcascade.cli import main
from crackcascade.data.datamodules import CrackMaskDataModule
from crackcascade.metrics.classification import scores_from_confusion

from ..conftest import CONF, ROOT, wandb_inspect

wandb = pytest.importorskip("wandb")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """W&B in offline mode with every file it writes (artifact staging included) under ``tmp_path``."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))
    monkeypatch.delenv("WANDB_SERVICE", raising=False)  # wandb sets it to its service; removed afterwards
    yield tmp_path / "logs"
    wandb.finish()  # Lightning's WandbLogger leaves the run open until the process exits
    wandb.teardown()  # and its service, which later runs (subprocesses too) would otherwise join


def run_folder(log_dir: Path) -> Path:
    (run,) = (log_dir / "wandb").glob("offline-run-*")
    return run


def test_demo_config_logs_config_metrics_previews_and_confusion_to_wandb(offline: Path, tmp_path: Path) -> None:
    main([
        "fit", "--config", str(ROOT / "configs" / "demo.yaml"),
        "--trainer.logger", "WandbLogger", "--trainer.logger.save_dir", str(offline),
        "--trainer.logger.project", "crackcascade-test", "--trainer.logger.tags", "[demo, offline]",
        "--data.root", str(tmp_path / "synthetic"), "--data.n_train", "5", "--data.n_test", "1",
        "--data.synthetic_size", "48", "--data.image_size", "32", "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    wandb.finish()
    run = wandb_inspect(run_folder(offline))
    assert run["state"] == "finished" and run["project"] == "crackcascade-test" and run["tags"] == ["demo", "offline"]

    config = run["config"]  # the resolved CLI config, defaults filled in, beside the hyper-parameters
    assert config["model"]["class_path"] == "crackcascade.MultiTaskClassifier"
    assert config["model"]["init_args"]["backbone"] == "test_resnet"
    assert config["model"]["init_args"]["task_weights"] is None  # a default the YAML does not set
    assert config["data"]["init_args"]["n_train"] == 5
    assert config["trainer"]["max_epochs"] == 1
    assert config["trainer"]["logger"]["init_args"]["tags"] == ["demo", "offline"]
    assert (offline / "config.yaml").is_file(), "the config file is still written to the log folder"

    # Metrics: the summary's val_acc is the one the confusion matrices give.
    summary = run["summary"]
    matrices = json.loads((offline / "confusion_val.json").read_text())["tasks"]
    accuracies = [float(scores_from_confusion(torch.tensor(m["matrix"]))[0]) for m in matrices.values()]
    assert summary["val_acc"] == pytest.approx(sum(accuracies) / len(accuracies), abs=1e-6)
    assert 0.0 <= summary["train_acc"] <= 1.0 and summary["epoch"] == 0

    # Previews: the first validation image of each task, captioned with prediction and truth.
    previews = summary["val_previews"]
    assert previews["_type"] == "images/separated" and previews["count"] == len(matrices) == 8
    assert previews["captions"][0].startswith("scene: predicted ") and ", true " in previews["captions"][0]
    for name in previews["filenames"]:
        assert Image.open(run_folder(offline) / "files" / name).size == (32, 32)

    # Confusion matrices: W&B's own chart, whose table holds the counts of confusion_val.json.
    (table_file,) = (run_folder(offline) / "files" / "media" / "table").glob("val_confusion_scene_table_*.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["Actual", "Predicted", "nPredictions"]
    classes, counts = matrices["scene"]["classes"], matrices["scene"]["matrix"]
    cells = {(actual, predicted): n for actual, predicted, n in table["data"]}
    assert cells == {(classes[i], classes[j]): counts[i][j] for i in range(3) for j in range(3)}


def test_unet_previews_show_photo_true_and_predicted_mask(offline: Path, crack_roots: dict[str, Path]) -> None:
    main(["fit", "--config", str(CONF / "unet.yaml"), "--data.root", str(crack_roots["masks"]),
          "--data.val_fraction", "0.3", "--trainer.logger", "WandbLogger", "--trainer.logger.save_dir", str(offline),
          "--trainer.logger.log_model", "true"])  # fmt: skip
    wandb.finish()
    summary = wandb_inspect(run_folder(offline))["summary"]
    files = run_folder(offline) / "files"
    data = CrackMaskDataModule(str(crack_roots["masks"]), scales=["pixel", "object"], val_fraction=0.3)
    data.setup("validate")
    for scale, dataset in zip(("pixel", "object"), data.datasets["val"], strict=True):
        preview = summary[f"val_preview_{scale}"]
        assert preview["count"] == min(len(dataset), 4)  # CrackSegmenter.preview_images per scale
        first = dataset[0]
        assert preview["captions"][0] == Path(first["path"]).name
        photo = np.asarray(Image.open(files / preview["filenames"][0]))
        assert np.array_equal(photo, first["image"].permute(1, 2, 0).numpy()), "the photo as validated"
        layers = preview["all_masks"][0]
        truth = np.asarray(Image.open(files / layers["ground_truth"]["path"]))
        assert np.array_equal(truth, first["mask"].numpy()), "the true mask, class values as in the data"
        predicted = np.asarray(Image.open(files / layers["prediction"]["path"]))
        assert predicted.shape == truth.shape and set(np.unique(predicted)) <= {0, 1}

    # log_model: the checkpoints were handed to W&B as model artifacts (kept offline, synced later).
    artifacts = [r["artifact"] for r in wandb_inspect(run_folder(offline), records=True) if r.get("type") == "artifact"]
    models = [a for a in artifacts if a["type"] == "model"]
    assert {json.loads(a["metadata"])["original_filename"].startswith("epoch") for a in models} == {True, False}
