from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from crackcascade.errors import ConfigError, WeightsError
from crackcascade.labels import IGNORE_INDEX, TASK_NAMES, task_index
from crackcascade.metrics.classification import scores_from_confusion
from crackcascade.models.losses import masked_cross_entropy
from crackcascade.models.multitask import MultiTaskClassifier, collate_tasks


def _labels(rows: list[dict[str, int]]) -> torch.Tensor:
    out = torch.full((len(rows), len(TASK_NAMES)), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        for task, label in row.items():
            out[i, task_index(task)] = label
    return out


def test_masked_cross_entropy_matches_hand_computation() -> None:
    logits = {
        "scene": torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
        "spalling": torch.tensor([[1.0, -1.0], [0.5, 0.5], [0.0, 3.0]]),
        "collapse": torch.tensor([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 9.0]]),
    }
    # image 0: scene only; image 1: scene and spalling; image 2: spalling only; nobody: collapse.
    labels = _labels([{"scene": 0}, {"scene": 2, "spalling": 0}, {"spalling": 1}])

    def nll(row: list[float], target: int) -> float:
        return -math.log(math.exp(row[target]) / sum(math.exp(v) for v in row))

    scene = (nll([2, 0, 0], 0) + nll([0, 1, 0], 2)) / 2
    spalling = (nll([0.5, 0.5], 0) + nll([0, 3], 1)) / 2
    total, per_task = masked_cross_entropy(logits, labels, weights={"spalling": 0.5})
    assert per_task["scene"].item() == pytest.approx(scene, rel=1e-6)
    assert per_task["spalling"].item() == pytest.approx(spalling, rel=1e-6)
    assert per_task["collapse"].item() == 0.0
    assert total.item() == pytest.approx(scene + 0.5 * spalling, rel=1e-6)


def test_unlabelled_task_still_in_graph() -> None:
    logits = {"collapse": torch.randn(2, 3, requires_grad=True)}
    total, _ = masked_cross_entropy(logits, _labels([{}, {}]))
    total.backward()
    assert logits["collapse"].grad is not None and torch.all(logits["collapse"].grad == 0)


def test_scores_from_confusion_equal_torchmetrics() -> None:
    generator = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 4, (200,), generator=generator)
    target = torch.randint(0, 4, (200,), generator=generator)
    matrix = torch.zeros(4, 4, dtype=torch.long)
    matrix.index_put_((target, preds), torch.ones_like(target), accumulate=True)
    accuracy, f1 = scores_from_confusion(matrix)
    assert accuracy.item() == pytest.approx(multiclass_accuracy(preds, target, 4, average="micro").item())
    assert f1.item() == pytest.approx(multiclass_f1_score(preds, target, 4, average="macro").item())


def test_collate_concatenates_task_batches() -> None:
    part = {"image": torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "labels": _labels([{"scene": 1}, {"scene": 0}])}
    merged = collate_tasks({"scene": {**part, "path": ["a", "b"]}, "spalling": None, "x": {**part, "path": ["c", "d"]}})
    assert merged["image"].shape[0] == 4 and merged["path"] == ["a", "b", "c", "d"]


def test_forward_heads_and_normalization() -> None:
    model = MultiTaskClassifier(backbone="test_resnet", tasks=["damage_type", "task1"])
    assert list(model.heads) == ["scene", "damage_type"]
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = model(images)
    assert out["scene"].shape == (2, 3) and out["damage_type"].shape == (2, 4)
    # test_resnet's pretrained config normalizes with mean 0.5, std 0.5.
    assert torch.allclose(model.normalize(torch.full((1, 3, 1, 1), 255.0)), torch.ones(1, 3, 1, 1))


def test_bad_model_options() -> None:
    with pytest.raises(ConfigError, match="model.tasks: unknown task 'roof'"):
        MultiTaskClassifier(backbone="test_resnet", tasks=["roof"])
    with pytest.raises(ConfigError, match="model.task_weights names tasks without a head: collapse"):
        MultiTaskClassifier(backbone="test_resnet", tasks=["scene"], task_weights={"collapse": 2.0})
    with pytest.raises(ConfigError, match="model.backbone 'no_such_net'"):
        MultiTaskClassifier(backbone="no_such_net")


# ---- offline weights -----------------------------------------------------------------------


@pytest.fixture
def reference() -> torch.nn.Module:
    torch.manual_seed(123)
    return timm.create_model("test_resnet", num_classes=10)  # a classifier as timm ships it


def _same_backbone(model: MultiTaskClassifier, reference: torch.nn.Module) -> bool:
    own = model.backbone.state_dict()
    return all(torch.equal(own[k], v) for k, v in reference.state_dict().items() if not k.startswith("fc."))


def test_loads_safetensors_and_pth(tmp_path: Path, reference: torch.nn.Module) -> None:
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "w.pth")
    torch.save({f"module.{k}": v for k, v in reference.state_dict().items()}, tmp_path / "ddp.pt")
    for name in ("w.safetensors", "w.pth", "ddp.pt"):
        model = MultiTaskClassifier(backbone="test_resnet", pretrained_weights=str(tmp_path / name))
        assert _same_backbone(model, reference), name
    assert not _same_backbone(MultiTaskClassifier(backbone="test_resnet"), reference)


def test_loads_lightning_checkpoint_backbone(tmp_path: Path) -> None:
    import pytorch_lightning as pl

    trained = MultiTaskClassifier(backbone="test_resnet", tasks=["scene"])
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(trained)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    model = MultiTaskClassifier(backbone="test_resnet", pretrained_weights=str(tmp_path / "model.ckpt"))
    for key, value in trained.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value)


def test_mismatched_weights_are_a_clear_error(tmp_path: Path) -> None:
    other = timm.create_model("resnet10t", num_classes=0)
    save_file(other.state_dict(), str(tmp_path / "resnet10t.safetensors"))
    with pytest.raises(WeightsError, match=r"resnet10t.safetensors: does not match the backbone: .*missing"):
        MultiTaskClassifier(backbone="test_resnet", pretrained_weights=str(tmp_path / "resnet10t.safetensors"))
    with pytest.raises(WeightsError, match="weight file '.*nothing.pth' not found"):
        MultiTaskClassifier(backbone="test_resnet", pretrained_weights=str(tmp_path / "nothing.pth"))


class _Pickled:
    pass


def test_pickled_objects_are_refused(tmp_path: Path, reference: torch.nn.Module) -> None:
    torch.save({"state_dict": reference.state_dict(), "extra": _Pickled()}, tmp_path / "unsafe.pth")
    with pytest.raises(
        WeightsError, match=rf"unsafe.pth holds pickled Python objects \({__name__}._Pickled\).*convert"
    ):
        MultiTaskClassifier(backbone="test_resnet", pretrained_weights=str(tmp_path / "unsafe.pth"))


def test_freeze_backbone_for_first_epochs() -> None:
    model = MultiTaskClassifier(backbone="test_resnet", tasks=["scene"], freeze_backbone_epochs=1)

    class _Trainer:
        current_epoch = 0

    fake = _Trainer()  # the module keeps only a weak reference
    model.trainer = fake  # type: ignore[assignment]
    model.train()
    model.on_train_epoch_start()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not model.backbone.training and all(p.requires_grad for p in model.heads.parameters())
    fake.current_epoch = 1
    model.train()
    model.on_train_epoch_start()
    assert all(p.requires_grad for p in model.backbone.parameters()) and model.backbone.training
