"""The Özgenel concrete-crack set: data module, synthetic writer, crack metrics (Table 2), config."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from crackcascade import ConcreteCrackDataModule, MultiTaskClassifier
from crackcascade.cli import main
from crackcascade.data.phinet import label_vector
from crackcascade.errors import ConfigError, DataError
from crackcascade.labels import CRACK_DAMAGE_TYPES, IGNORE_INDEX, get_task, task_index
from crackcascade.synthetic import write_concrete_cracks

from ..conftest import CONF, ROOT, SHARED_DATA

STATE = get_task("damage_state")
TYPE = get_task("damage_type")
DAMAGED = STATE.class_index("damaged")
UNDAMAGED = STATE.class_index("undamaged")


@pytest.fixture(scope="module")
def concrete_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six synthetic 80x80 images per class, in a lower-case 'positive' folder to check case matching."""
    root = write_concrete_cracks(tmp_path_factory.mktemp("concrete"), n=6, size=80, seed=3)
    (root / "Positive").rename(root / "positive")
    return root


def _split_paths(data: ConcreteCrackDataModule) -> dict[str, list[str]]:
    return {split: [p.name + p.parent.name for p in paths] for split, (paths, _) in data.splits().items()}


def test_splits_are_stratified_disjoint_and_seeded(concrete_root: Path) -> None:
    data = ConcreteCrackDataModule(str(concrete_root), image_size=48, seed=5)
    splits = data.splits()
    # Per class of 6: test round(1.2) = 1, val round(0.6) = 1, the other 4 train.
    assert {split: (sum(cracks), len(cracks)) for split, (_, cracks) in splits.items()} == {
        "train": (4, 8),
        "val": (1, 2),
        "test": (1, 2),
    }
    names = _split_paths(data)
    every = names["train"] + names["val"] + names["test"]
    assert len(every) == len(set(every)) == 12
    assert names == _split_paths(ConcreteCrackDataModule(str(concrete_root), seed=5))
    other_seeds = [_split_paths(ConcreteCrackDataModule(str(concrete_root), seed=s)) for s in range(4)]
    assert any(other != names for other in other_seeds)
    # Test is carved first, so the validation fraction does not move test images.
    more_val = _split_paths(ConcreteCrackDataModule(str(concrete_root), seed=5, val_fraction=0.3))
    assert more_val["test"] == names["test"] and len(more_val["val"]) == 4


def test_samples_carry_damage_state_and_crack(concrete_root: Path) -> None:
    data = ConcreteCrackDataModule(str(concrete_root), image_size=48, batch_size=3, augment=False)
    data.setup("fit")
    data.setup("test")
    assert data.tasks == ("damage_state",)
    seen = set()
    for split in ("train", "val", "test"):
        dataset = data.datasets[split]
        for i in range(len(dataset)):  # type: ignore[arg-type]
            sample = dataset[i]
            crack = Path(sample["path"]).parent.name.lower() == "positive"
            seen.add(crack)
            assert sample["crack"] == int(crack)
            assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 48, 48)
            expected = torch.full_like(sample["labels"], IGNORE_INDEX)
            expected[task_index("damage_state")] = DAMAGED if crack else UNDAMAGED
            assert torch.equal(sample["labels"], expected)
    assert seen == {True, False}
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (3, 3, 48, 48) and batch["crack"].dtype == torch.int64
    assert len(data.train_dataloader()) == 3  # 8 images, batches of 3
    assert [len(loader.dataset) for loader in (data.val_dataloader(), data.test_dataloader())] == [2, 2]


def test_writer_is_reproducible_whatever_the_workers(tmp_path: Path) -> None:
    one = write_concrete_cracks(tmp_path / "one", n=3, size=64, seed=1)
    two = write_concrete_cracks(tmp_path / "two", n=3, size=64, seed=1, workers=2)
    other = write_concrete_cracks(tmp_path / "other", n=3, size=64, seed=2)
    files = sorted(p.relative_to(one).as_posix() for p in one.rglob("*.jpg"))
    assert files == [f"{c}/{i:05d}.jpg" for c in ("Negative", "Positive") for i in range(3)]
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    assert any((one / f).read_bytes() != (other / f).read_bytes() for f in files)


@pytest.mark.skipif(not (SHARED_DATA / "brickwork").is_dir(), reason="shared brickwork data not present")
def test_real_brickwork_patches() -> None:
    data = ConcreteCrackDataModule(str(SHARED_DATA / "brickwork"), image_size=64, augment=False)
    splits = data.splits()
    counts = {split: (sum(cracks), len(cracks) - sum(cracks)) for split, (_, cracks) in splits.items()}
    assert counts == {"train": (245, 245), "val": (35, 35), "test": (70, 70)}
    data.setup("test")
    dataset = data.datasets["test"]
    for i in (0, len(dataset) - 1):  # type: ignore[arg-type]
        sample = dataset[i]
        assert sample["image"].shape == (3, 64, 64) and int(sample["image"].float().std()) > 0
        assert sample["crack"] == int(Path(sample["path"]).parent.name == "Positive")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("remove Negative", "no 'Negative' folder"),
        ("empty Positive", "'Positive' folder has no images"),
        ("twin Negative", "differ only in case"),
    ],
)
def test_bad_roots_are_one_line_errors(concrete_root: Path, tmp_path: Path, damage: str, message: str) -> None:
    root = tmp_path / "set"
    shutil.copytree(concrete_root, root)
    if damage == "remove Negative":
        shutil.rmtree(root / "Negative")
    elif damage == "empty Positive":
        for image in (root / "positive").iterdir():
            image.unlink()
        (root / "positive" / "notes.txt").write_text("not an image")
    else:
        shutil.copytree(root / "Negative", root / "NEGATIVE")
    with pytest.raises(DataError) as info:
        ConcreteCrackDataModule(str(root)).setup("fit")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(root) in str(info.value)


# Hand-made damage-type predictions against crack flags: each row is (predicted class, crack flag).
HAND_MADE = [
    ("flexural", 1),  # tp
    ("shear", 1),  # tp
    ("combined", 1),  # tp
    ("undamaged", 1),  # fn
    ("undamaged", 1),  # fn
    ("shear", 0),  # fp
    ("undamaged", 0),  # tn
    ("undamaged", 0),  # tn
]
# tp 3, fp 1, fn 2, tn 2
HAND_SCORES = {"acc": 5 / 8, "precision": 3 / 4, "recall": 3 / 5, "f1": 2 * 3 / (2 * 3 + 1 + 2)}


class _HandMade(Dataset):
    """Images whose first pixel is their row of :data:`HAND_MADE`; labelled for the damage state."""

    def __init__(self, with_crack: bool) -> None:
        self.with_crack = with_crack

    def __len__(self) -> int:
        return len(HAND_MADE)

    def __getitem__(self, index: int) -> dict:
        image = torch.zeros(3, 32, 32, dtype=torch.uint8)
        image[0, 0, 0] = index
        crack = HAND_MADE[index][1]
        sample = {
            "image": image,
            "labels": label_vector(task_index("damage_state"), DAMAGED if crack else UNDAMAGED),
            "path": str(index),
        }
        if self.with_crack:
            sample["crack"] = crack
        return sample


def _hand_made_test(tasks: list[str], with_crack: bool, out: Path) -> dict[str, float]:
    model = MultiTaskClassifier(backbone="test_resnet", tasks=tasks)
    logits = torch.full((len(HAND_MADE), TYPE.num_classes), -5.0)
    for row, (predicted, _) in enumerate(HAND_MADE):
        logits[row, TYPE.class_index(predicted)] = 5.0

    def fixed(images: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = images[:, 0, 0, 0].long()
        out = {"damage_state": torch.zeros(len(rows), STATE.num_classes)}
        if "damage_type" in tasks:
            out["damage_type"] = logits[rows]
        return out

    model.forward = fixed  # type: ignore[method-assign]
    trainer = pl.Trainer(
        default_root_dir=out,  # where the confusion matrices are written
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    # Batches of 3 leave a partial batch, so the counts must add up across steps.
    (metrics,) = trainer.test(model, dataloaders=DataLoader(_HandMade(with_crack), batch_size=3), verbose=False)
    return metrics


def test_crack_metrics_from_the_damage_type_head(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    assert set(CRACK_DAMAGE_TYPES) == {"flexural", "shear", "combined"}  # the rows above assume it
    with caplog.at_level(logging.INFO):
        metrics = _hand_made_test(["damage_state", "damage_type"], with_crack=True, out=tmp_path)
    for name, value in HAND_SCORES.items():
        assert metrics[f"test_crack_{name}"] == pytest.approx(value), name
    summary = next(r.getMessage() for r in caplog.records if "test metrics per task" in r.getMessage())
    assert "crack present" in summary and f"{HAND_SCORES['f1']:.3f}" in summary
    # The paper's Table 2 of the same rows, by hand: rows non/flexural/shear/combined, columns non-cracking/cracking.
    table2 = json.loads((tmp_path / "table2.json").read_text())
    assert table2["counts"] == [[2, 2], [0, 1], [1, 1], [0, 1]] and table2["pixel_share"] is None
    assert metrics["test_table2_non_cracking_acc"] == pytest.approx(2 / 3)
    assert metrics["test_table2_cracking_acc"] == pytest.approx(3 / 5)
    assert metrics["test_table2_total_acc"] == pytest.approx(5 / 8)
    printed = "\n".join(r.getMessage() for r in caplog.records)
    assert "19,184" in printed  # the paper's own counts printed beside ours


def test_test_on_all_scores_every_image_and_refuses_fit(concrete_root: Path, tmp_path: Path) -> None:
    data = ConcreteCrackDataModule(str(concrete_root), image_size=32, batch_size=4, test_on="all")
    data.setup("test")
    cracks = [bool(data.datasets["test"][i]["crack"]) for i in range(len(data.datasets["test"]))]
    assert (len(cracks), sum(cracks)) == (12, 6)  # both folders whole, not the carved 2-image split
    with pytest.raises(ConfigError, match="data.test_on all"):
        ConcreteCrackDataModule(str(concrete_root), test_on="all").setup("fit")
    model = MultiTaskClassifier(backbone="test_resnet", tasks=["scene", "damage_state", "damage_type"])
    trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.test(model, datamodule=data, verbose=False)
    table2 = json.loads((tmp_path / "table2.json").read_text())
    counts = torch.tensor(table2["counts"])
    assert counts.sum(0).tolist() == [6, 6]  # columns: the non-cracking and cracking images, all of them
    assert 0.0 <= table2["pixel_share"] <= 1.0 and table2["accuracy"]["total"] == pytest.approx(
        (counts[0, 0] + counts[1:, 1].sum()).item() / 12
    )


def test_no_crack_metrics_without_flags_or_head(tmp_path: Path) -> None:
    plain = _hand_made_test(["damage_state", "damage_type"], with_crack=False, out=tmp_path / "plain")
    # What the classifier logged before crack flags existed: losses, and scores of the labelled task.
    state = ["test_damage_state_acc", "test_damage_state_f1", "test_acc", "test_f1"]
    losses = ["test_loss", "test_damage_state_loss"]
    assert set(plain) == {*state, *losses, "test_damage_type_loss"}
    # Zero logits predict class 0 (undamaged), right for the 3 crack-free rows of 8.
    assert plain["test_damage_state_acc"] == pytest.approx(3 / 8)
    headless = _hand_made_test(["damage_state"], with_crack=True, out=tmp_path / "headless")
    assert set(headless) == {*state, *losses}
    assert all(headless[name] == pytest.approx(plain[name]) for name in state)


def _metrics(save_dir: Path) -> list[dict[str, str]]:
    (metrics_csv,) = save_dir.rglob("metrics.csv")
    with open(metrics_csv) as handle:
        return list(csv.DictReader(handle))


def test_cli_fit_and_test_log_crack_metrics(concrete_root: Path, tmp_path: Path) -> None:
    data = ["--data.root", str(concrete_root), "--data.image_size", "32", "--data.batch_size", "4"]
    main([
        "fit", "--config", str(CONF / "multitask.yaml"), "--data", "crackcascade.ConcreteCrackDataModule", *data,
        "--trainer.default_root_dir", str(tmp_path / "fit"),
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path / "fit"),
    ])  # fmt: skip
    (run,) = (tmp_path / "fit" / "lightning_logs").iterdir()
    fit_rows = [row for row in _metrics(tmp_path / "fit") if row.get("val_crack_f1")]
    assert fit_rows and 0.0 <= float(fit_rows[-1]["val_crack_acc"]) <= 1.0
    assert 0.0 <= float(fit_rows[-1]["val_damage_state_acc"]) <= 1.0
    # A checkpoint with all eight heads, as a Phi-Net run leaves, evaluated on the set with the
    # command the paper's config documents: the model (backbone, heads) comes from the checkpoint.
    main([
        "test", "--config", str(ROOT / "configs" / "concrete_crack.yaml"), *data,
        "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--data.num_workers", "0",
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path / "test"),
    ])  # fmt: skip
    (row,) = _metrics(tmp_path / "test")
    acc, precision, recall, f1 = (float(row[f"test_crack_{name}"]) for name in ("acc", "precision", "recall", "f1"))
    assert acc in (0.0, 0.25, 0.5, 0.75, 1.0)  # counted over the 4 test images (2 per class of 6)
    assert f1 == pytest.approx(2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def test_paper_config_runs_fast_dev_run(concrete_root: Path, tmp_path: Path, cli_runs: list) -> None:
    main([
        "fit", "--config", str(ROOT / "configs" / "concrete_crack.yaml"), "--data.root", str(concrete_root),
        "--model.backbone", "test_resnet", "--data.image_size", "32", "--data.num_workers", "0",
        "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.default_root_dir", str(tmp_path / "out"),
    ])  # fmt: skip
    (cli,) = cli_runs
    model, data, trainer = cli.model, cli.datamodule, cli.trainer
    # The config's set-up, with the backbone and image size the command overrode.
    assert model.hparams["backbone"] == "test_resnet" and list(model.tasks) == ["damage_state", "damage_type"]
    (optimizer,) = trainer.optimizers
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD) and (group["lr"], group["momentum"]) == (0.001, 0.9)
    assert isinstance(data, ConcreteCrackDataModule) and data.tasks == ("damage_state",)
    hp = data.hparams
    assert (hp["image_size"], hp["batch_size"], hp["val_fraction"], hp["test_fraction"]) == (32, 40, 0.1, 0.2)
    # 6 per class: test round(1.2) = 1 and val round(0.6) = 1 per class, the other 8 train.
    assert {split: len(cracks) for split, (_, cracks) in data.splits().items()} == {"train": 8, "val": 2, "test": 2}
    assert trainer.global_step == 1, "fast_dev_run trained one step"
    # Validation read the crack scores from the damage-type head, as the config says it should.
    assert {"val_crack_acc", "val_crack_f1", "val_damage_state_acc"} <= set(trainer.callback_metrics)
