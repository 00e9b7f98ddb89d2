from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import pytorch_lightning as pl
import timm
import torch
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import binary_stat_scores

from crackcascade import CrackSegmenter
from crackcascade.checkpoints.restore import load_segmenter
from crackcascade.errors import ConfigError, WeightsError
from crackcascade.metrics.segmentation import (
    THRESHOLD_GRID,
    SegmentationMetrics,
    best_threshold_index,
    class_targets,
    f1_curve,
    segmentation_scores,
)
from crackcascade.models.base import INPUT_STATS_KEY
from crackcascade.models.losses import segmentation_loss

ENCODER = "tu-test_resnet"


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _scores(metric: SegmentationMetrics, threshold_index: int = 0) -> dict[str, list[float]]:
    counts = metric.counts()
    index = torch.full((metric.num_classes,), threshold_index)
    return {k: v.tolist() for k, v in segmentation_scores(counts, index).items()}


# ---- loss ----------------------------------------------------------------------------------


def test_class_targets_one_channel_per_class() -> None:
    mask = torch.tensor([[[0, 1], [2, -1]]])
    target = class_targets(mask, 2)
    assert target.shape == (1, 2, 2, 2)
    assert target[0, 0].tolist() == [[0, 1], [0, -1]]
    assert target[0, 1].tolist() == [[0, 0], [1, -1]]
    # A model for cracks only treats spalling (2) as background.
    assert class_targets(mask, 1)[0, 0].tolist() == [[0, 1], [0, -1]]


def test_bce_and_dice_match_hand_computation() -> None:
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 3.0]]]])
    mask = torch.tensor([[[1, 0], [-1, 1]]])  # (1, 0) is ignored
    p = [_sigmoid(2.0), _sigmoid(-1.0), _sigmoid(3.0)]  # valid pixels; truth 1, 0, 1
    bce = -(math.log(p[0]) + math.log(1 - p[1]) + math.log(p[2])) / 3
    bce_pos2 = -(2 * math.log(p[0]) + math.log(1 - p[1]) + 2 * math.log(p[2])) / 3
    dice = 1 - 2 * (p[0] + p[2]) / (sum(p) + 2)
    assert segmentation_loss(logits, mask, "bce").item() == pytest.approx(bce, rel=1e-6)
    assert segmentation_loss(logits, mask, "bce", pos_weight=2.0).item() == pytest.approx(bce_pos2, rel=1e-6)
    assert segmentation_loss(logits, mask, "dice").item() == pytest.approx(dice, rel=1e-6)
    assert segmentation_loss(logits, mask, "bce+dice").item() == pytest.approx(bce + dice, rel=1e-6)


def test_multiclass_loss_is_per_channel_from_class_indices() -> None:
    logits = torch.tensor([[[[1.0, -2.0]], [[0.0, 2.0]]]])  # (1, 2 classes, 1, 2)
    mask = torch.tensor([[[1, 2]]])  # crack at x=0, spalling at x=1
    crack = [_sigmoid(1.0), _sigmoid(-2.0)]
    spall = [_sigmoid(0.0), _sigmoid(2.0)]
    bce = -(math.log(crack[0]) + math.log(1 - crack[1]) + math.log(1 - spall[0]) + math.log(spall[1])) / 4
    dice = ((1 - 2 * crack[0] / (sum(crack) + 1)) + (1 - 2 * spall[1] / (sum(spall) + 1))) / 2
    assert segmentation_loss(logits, mask, "bce").item() == pytest.approx(bce, rel=1e-6)
    assert segmentation_loss(logits, mask, "dice").item() == pytest.approx(dice, rel=1e-6)


@pytest.mark.parametrize("loss", ["bce", "dice", "bce+dice"])
def test_ignored_pixels_do_not_change_the_loss(loss: str) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, generator=generator, requires_grad=True)
    mask = torch.randint(0, 3, (2, 8, 8), generator=generator)
    mask[:, 5:, :] = -1
    changed = logits.detach().clone()
    changed[:, :, 5:, :] = torch.randn(2, 2, 3, 8, generator=generator) * 10
    value = segmentation_loss(logits, mask, loss)
    assert value.item() == pytest.approx(segmentation_loss(changed, mask, loss).item(), rel=1e-6)
    value.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[:, :, 5:] == 0) and torch.any(logits.grad[:, :, :5] != 0)


# ---- metrics -------------------------------------------------------------------------------


def _diagonal(size: int = 16) -> tuple[Tensor, Tensor]:
    """A 1-px diagonal crack and a prediction of it shifted right by one pixel."""
    mask = torch.zeros(1, size, size, dtype=torch.long)
    i = torch.arange(size)
    mask[0, i, i] = 1
    probabilities = torch.zeros(1, 1, size, size)
    probabilities[0, 0, i[:-1], i[:-1] + 1] = 0.9
    return probabilities, mask


@pytest.mark.parametrize("tolerance", [1, 2])
def test_one_pixel_shift_is_wrong_strictly_and_right_with_tolerance(tolerance: int) -> None:
    metric = SegmentationMetrics(1, [0.5], tolerance=tolerance)
    metric.update(*_diagonal())
    scores = _scores(metric)
    assert scores["f1"] == [0.0] and scores["iou"] == [0.0]
    assert scores["precision_tol"] == [1.0] and scores["recall_tol"] == [1.0] and scores["f1_tol"] == [1.0]


def test_tolerance_zero_is_strict_and_tolerance_is_a_square_neighbourhood() -> None:
    metric = SegmentationMetrics(1, [0.5], tolerance=0)
    metric.update(*_diagonal())
    assert _scores(metric)["f1_tol"] == [0.0]
    # A prediction two pixels off diagonally (Chebyshev distance 2) is found at tolerance 2, not 1.
    mask = torch.zeros(1, 9, 9, dtype=torch.long)
    mask[0, 2, 2] = 1
    probabilities = torch.zeros(1, 1, 9, 9)
    probabilities[0, 0, 4, 4] = 1.0
    for tolerance, expected in ((1, 0.0), (2, 1.0)):
        metric = SegmentationMetrics(1, [0.5], tolerance=tolerance)
        metric.update(probabilities, mask)
        assert _scores(metric)["f1_tol"] == [expected]


def test_dataset_wide_and_per_image_averages_differ_as_computed_by_hand() -> None:
    mask = torch.zeros(4, 8, 8, dtype=torch.long)
    probabilities = torch.zeros(4, 1, 8, 8)
    mask[0, 0, :] = 1  # image 0: 8 crack pixels, all found exactly: IoU 1, F1 1
    probabilities[0, 0, 0, :] = 1.0
    mask[1, 7, :2] = 1  # image 1: 2 crack pixels, one found, one false far away: IoU 1/3, F1 1/2
    probabilities[1, 0, 7, 0] = probabilities[1, 0, 0, 7] = 1.0
    # image 2: no crack and no prediction: IoU 1, F1 1 (nothing to find, nothing falsely found)
    mask[3] = -1  # image 3: all padding, not an image for the averages
    probabilities[3] = 1.0
    metric = SegmentationMetrics(1, [0.5], tolerance=0)
    metric.update(probabilities, mask)
    scores = _scores(metric)
    # Dataset-wide: TP 9, FP 1, FN 1.
    assert scores["iou"][0] == pytest.approx(9 / 11)
    assert scores["f1"][0] == pytest.approx(18 / 20)
    assert scores["precision"][0] == pytest.approx(0.9) and scores["recall"][0] == pytest.approx(0.9)
    assert scores["iou_per_image"][0] == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert scores["f1_per_image"][0] == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert scores["pixel_acc"][0] == pytest.approx((192 - 2) / 192)


def test_all_background_prediction_has_high_pixel_accuracy_but_zero_f1() -> None:
    mask = torch.zeros(2, 64, 64, dtype=torch.long)
    mask[:, 30, :] = 1  # a 1-px crack: 1.6 % of the pixels
    metric = SegmentationMetrics(1, THRESHOLD_GRID)
    metric.update(torch.zeros(2, 1, 64, 64), mask)
    scores = _scores(metric, threshold_index=9)
    assert scores["pixel_acc"][0] == pytest.approx(63 / 64)
    assert scores["f1"] == [0.0] and scores["precision"] == [0.0] and scores["recall"] == [0.0]
    assert scores["f1_tol"] == [0.0] and scores["iou_per_image"] == [0.0]


def test_ignored_pixels_count_neither_as_truth_nor_as_prediction() -> None:
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    mask[0, 2, 2] = 1
    mask[0, :, 5:] = -1
    probabilities = torch.zeros(1, 1, 8, 8)
    probabilities[0, 0, 2, 2] = 0.9
    probabilities[0, 0, :, 6:] = 0.9  # confident predictions on padding
    metric = SegmentationMetrics(1, [0.5], tolerance=2)
    metric.update(probabilities, mask)
    counts = metric.counts()
    assert counts["tp"].item() == 1 and counts["fp"].item() == 0 and counts["tn"].item() == 8 * 5 - 1
    # A true pixel next to the padding is not "found" by predictions made on the padding.
    mask[0, 2, 2], mask[0, 4, 4] = 0, 1
    probabilities[0, 0, 2, 2] = 0.0
    metric = SegmentationMetrics(1, [0.5], tolerance=2)
    metric.update(probabilities, mask)
    assert _scores(metric)["recall_tol"] == [0.0]


def test_strict_counts_match_torchmetrics_at_every_threshold() -> None:
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.rand(3, 2, 20, 24, generator=generator)
    mask = torch.randint(-1, 3, (3, 20, 24), generator=generator)
    metric = SegmentationMetrics(2, THRESHOLD_GRID)
    metric.update(probabilities[:1], mask[:1])  # two updates: the states are sums
    metric.update(probabilities[1:], mask[1:])
    counts = metric.counts()
    for t, threshold in enumerate(THRESHOLD_GRID):
        for c in range(2):
            target = class_targets(mask, 2)[:, c].long()
            expected = binary_stat_scores(probabilities[:, c], target, threshold=threshold, ignore_index=-1)
            got = [counts[k][t, c].item() for k in ("tp", "fp", "tn", "fn")]
            assert got == expected[:4].tolist(), (threshold, c)


def test_threshold_with_best_f1_is_chosen() -> None:
    # Crack pixels at probabilities 0.9, 0.8, 0.3; background at 0.5, 0.4 (and 0 elsewhere).
    # F1 by hand: t <= 0.3: 6/8; (0.3, 0.4]: 4/7; (0.4, 0.5]: 4/6; (0.5, 0.8]: 4/5; (0.8, 0.9]: 2/4.
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    probabilities = torch.zeros(1, 1, 4, 4)
    for (y, x), p in zip([(0, 0), (1, 1), (2, 2)], [0.9, 0.8, 0.3], strict=True):
        mask[0, y, x], probabilities[0, 0, y, x] = 1, p
    probabilities[0, 0, 3, 0], probabilities[0, 0, 3, 1] = 0.5, 0.4
    metric = SegmentationMetrics(1, THRESHOLD_GRID, tolerance=0)
    metric.update(probabilities, mask)
    grid = torch.tensor(THRESHOLD_GRID)
    curve = f1_curve(metric.counts())
    assert curve[THRESHOLD_GRID.index(0.3), 0].item() == pytest.approx(6 / 8)
    assert curve[THRESHOLD_GRID.index(0.6), 0].item() == pytest.approx(4 / 5)
    best = best_threshold_index(curve[None], grid)
    # 0.55 ... 0.8 tie at 4/5; the tie goes to the threshold closest to 0.5.
    assert THRESHOLD_GRID[int(best[0])] == 0.55


def test_threshold_is_chosen_per_class_on_the_mean_over_scales() -> None:
    grid = torch.tensor([0.25, 0.5, 0.75])
    # (scales, thresholds, classes): class 0 is best at 0.75 on average, class 1 at 0.25 although
    # scale 1 alone would pick 0.5 for it.
    curves = torch.tensor(
        [
            [[0.2, 0.9], [0.5, 0.1], [0.7, 0.0]],
            [[0.1, 0.3], [0.5, 0.6], [0.6, 0.0]],
        ]
    )
    assert best_threshold_index(curves, grid).tolist() == [2, 0]


def test_threshold_ties_go_to_the_one_closest_to_one_half() -> None:
    grid = torch.tensor(THRESHOLD_GRID)
    flat = torch.zeros(1, len(THRESHOLD_GRID), 1)  # an untrained model: F1 0 everywhere
    assert THRESHOLD_GRID[int(best_threshold_index(flat, grid)[0])] == 0.5
    plateau = flat.clone()
    plateau[0, THRESHOLD_GRID.index(0.2) : THRESHOLD_GRID.index(0.45) + 1] = 0.7
    assert THRESHOLD_GRID[int(best_threshold_index(plateau, grid)[0])] == 0.45


# ---- module --------------------------------------------------------------------------------


def test_forward_any_size_and_two_classes() -> None:
    model = CrackSegmenter(encoder_name=ENCODER, classes=["crack", "spalling"])
    out = model(torch.randint(0, 256, (2, 3, 45, 70), dtype=torch.uint8))
    assert out.shape == (2, 2, 45, 70)
    white = model.normalize(torch.full((1, 3, 1, 1), 255.0)).flatten()
    expected = [(1 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), strict=True)]
    assert white.tolist() == pytest.approx(expected, rel=1e-6)


def test_channels_last_is_the_same_network_in_a_faster_layout() -> None:
    torch.manual_seed(0)
    fast = CrackSegmenter(encoder_name="tu-test_resnet", channels_last=True).eval()
    plain = CrackSegmenter(encoder_name="tu-test_resnet", channels_last=False).eval()
    plain.load_state_dict(fast.state_dict())
    conv = next(m for m in fast.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randint(0, 255, (2, 3, 70, 45), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(fast(images), plain(images), atol=1e-4, rtol=1e-4)


def test_tta_averages_the_four_flips() -> None:
    torch.manual_seed(0)
    model = CrackSegmenter(encoder_name="tu-test_resnet", tta=True).eval()
    images = torch.randint(0, 255, (1, 3, 40, 56), dtype=torch.uint8)
    with torch.no_grad():
        views = [torch.sigmoid(model(images.flip(d)) if d else model(images)) for d in ((), (-1,), (-2,), (-2, -1))]
        expected = (views[0] + views[1].flip(-1) + views[2].flip(-2) + views[3].flip(-2, -1)) / 4
        torch.testing.assert_close(model._probabilities(images), expected)
        plain = model._probabilities(images, model(images))
        assert not torch.allclose(plain, views[0]), "an untrained net is not flip-invariant"
        model.hparams["tta"] = False
        torch.testing.assert_close(model._probabilities(images), views[0])


def test_class_map_uses_each_class_threshold() -> None:
    model = CrackSegmenter(encoder_name=ENCODER, classes=["crack", "spalling"])
    model.threshold.copy_(torch.tensor([0.3, 0.6]))
    probabilities = torch.tensor([[[0.2, 0.35, 0.9, 0.35]], [[0.1, 0.5, 0.7, 0.65]]])
    # below both; crack only (spalling 0.5 < 0.6); both above -> more probable; both above -> spalling
    assert model.class_map(probabilities).tolist() == [[0, 1, 1, 2]]
    assert model.class_map(probabilities).dtype == torch.uint8


def test_bad_options_are_config_errors() -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"loss": "focal"}, "model.loss must be one of bce, dice, bce\\+dice"),
        ({"optimizer": "lbfgs"}, "model.optimizer must be one of"),
        ({"scheduler": "step"}, "model.scheduler must be one of"),
        ({"threshold": 1.5}, "model.threshold must be in"),
        ({"tile_size": 500}, "model.tile_size must be a positive multiple of 32"),
        ({"tile_overlap": 512}, "model.tile_overlap must be in"),
        ({"classes": []}, "model.classes must be 1 to 255 distinct names"),
        ({"classes": ["crack", "crack"]}, "model.classes must be 1 to 255 distinct names"),
        ({"lr": 0.0}, "model.lr must be > 0"),
        ({"encoder_name": "tu-no_such_net"}, "model.encoder_name 'tu-no_such_net'"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ConfigError, match=message):
            CrackSegmenter(**{"encoder_name": ENCODER, **kwargs})


def test_fixed_threshold_joins_the_grid() -> None:
    model = CrackSegmenter(encoder_name=ENCODER, threshold=0.42)
    assert 0.42 in model.grid and model.threshold.tolist() == pytest.approx([0.42])


@pytest.mark.parametrize(("optimizer", "expected"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)])
def test_configure_optimizers(optimizer: str, expected: type) -> None:
    model = CrackSegmenter(encoder_name=ENCODER, optimizer=optimizer, lr=0.01, scheduler="cosine")

    class _Trainer:
        max_epochs = 7

    fake = _Trainer()  # the module keeps only a weak reference
    model.trainer = fake  # type: ignore[assignment]
    config = model.configure_optimizers()
    assert type(config["optimizer"]) is expected and config["optimizer"].param_groups[0]["lr"] == 0.01
    assert config["lr_scheduler"].T_max == 7


# ---- offline encoder weights ---------------------------------------------------------------


def _same(own: dict[str, Tensor], reference: dict[str, Tensor], rename: Any = lambda k: k) -> bool:
    return all(torch.equal(own[rename(k)], v) for k, v in reference.items() if not k.startswith(("fc.", "head.")))


def test_timm_state_dict_loads_into_tu_encoder(tmp_path: Path) -> None:
    torch.manual_seed(123)
    reference = timm.create_model("test_resnet", num_classes=10)  # a classifier as timm ships it
    save_file(reference.state_dict(), str(tmp_path / "test_resnet.safetensors"))
    model = CrackSegmenter(encoder_name=ENCODER, pretrained_weights=str(tmp_path / "test_resnet.safetensors"))
    own = model.model.encoder.model.state_dict()
    assert _same(own, reference.state_dict())
    assert not _same(CrackSegmenter(encoder_name=ENCODER).model.encoder.model.state_dict(), reference.state_dict())


def test_timm_state_dict_with_flattened_stages_loads(tmp_path: Path) -> None:
    # timm's features_only wrapper renames convnext's "stages.0" to "stages_0".
    torch.manual_seed(5)
    reference = timm.create_model("test_convnext", num_classes=10)
    save_file(reference.state_dict(), str(tmp_path / "convnext.safetensors"))
    model = CrackSegmenter(encoder_name="tu-test_convnext", pretrained_weights=str(tmp_path / "convnext.safetensors"))
    own = model.model.encoder.model.state_dict()
    flattened = {k.replace("stages.", "stages_", 1).replace("stem.", "stem_", 1): k for k in reference.state_dict()}
    inverse = {v: k for k, v in flattened.items()}
    used = {k: v for k, v in reference.state_dict().items() if inverse[k] in own}
    assert len(used) == len(own) and _same(own, used, rename=lambda k: inverse[k])


def test_segmenter_checkpoint_loads_as_encoder_weights(tmp_path: Path) -> None:
    trained = CrackSegmenter(encoder_name=ENCODER)
    torch.nn.init.normal_(trained.model.encoder.model.conv1[0].weight)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(trained)
    trainer.save_checkpoint(tmp_path / "segmenter.ckpt")
    model = CrackSegmenter(encoder_name=ENCODER, pretrained_weights=str(tmp_path / "segmenter.ckpt"))
    assert _same(model.model.encoder.state_dict(), trained.model.encoder.state_dict())


def test_pretrained_tu_encoder_normalizes_with_its_timm_config_and_checkpoints_keep_it(tmp_path: Path) -> None:
    save_file(timm.create_model("test_resnet").state_dict(), str(tmp_path / "test_resnet.safetensors"))
    model = CrackSegmenter(encoder_name=ENCODER, pretrained_weights=str(tmp_path / "test_resnet.safetensors"))
    white = torch.full((1, 3, 1, 1), 255.0)
    # test_resnet's pretrained config: mean 0.5, std 0.5 (from scratch, the U-Net keeps ImageNet's; see above).
    assert torch.allclose(model.normalize(white), torch.ones(1, 3, 1, 1))
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "pretrained.ckpt")
    # Rebuilt offline (no pretrained weights read), it still normalizes as it was trained.
    restored = load_segmenter(tmp_path / "pretrained.ckpt")
    assert torch.equal(restored.mean, model.mean) and torch.equal(restored.std, model.std)
    # A checkpoint saved before the statistics were recorded normalized with ImageNet's.
    legacy = torch.load(tmp_path / "pretrained.ckpt", weights_only=True)
    del legacy[INPUT_STATS_KEY]
    torch.save(legacy, tmp_path / "legacy.ckpt")
    old = load_segmenter(tmp_path / "legacy.ckpt")
    expected = [(1 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), strict=True)]
    assert old.normalize(white).flatten().tolist() == pytest.approx(expected, rel=1e-6)


def test_mismatched_encoder_weights_are_a_weights_error(tmp_path: Path) -> None:
    save_file(timm.create_model("resnet10t").state_dict(), str(tmp_path / "resnet10t.safetensors"))
    with pytest.raises(WeightsError, match=r"resnet10t.safetensors: does not match the encoder"):
        CrackSegmenter(encoder_name=ENCODER, pretrained_weights=str(tmp_path / "resnet10t.safetensors"))
    with pytest.raises(WeightsError, match="weight file '.*nothing.safetensors' not found"):
        CrackSegmenter(encoder_name=ENCODER, pretrained_weights=str(tmp_path / "nothing.safetensors"))


# ---- Lightning: fit, validate, test, predict -----------------------------------------------


def _sample(size: tuple[int, int], scale: str, index: int, classes: int) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(index)
    height, width = size
    image = torch.randint(60, 120, (3, height, width), dtype=torch.uint8, generator=generator)
    mask = torch.zeros(height, width, dtype=torch.long)
    row = int(torch.randint(4, height - 4, (1,), generator=generator))
    mask[row : row + 2, :] = 1  # a bright 2-px crack across the image
    image[:, row : row + 2, :] = 230
    if classes > 1:
        mask[: height // 4, : width // 4] = 2  # a spalled corner
    mask[:, -3:] = -1  # padding
    return {"image": image, "mask": mask, "path": f"{scale}/{index}.png", "scale": scale}


class _CrackData(pl.LightningDataModule):
    """Crack masks in the batch format of the crack datamodule: one eval loader per scale."""

    eval_scales: ClassVar[list[str]] = ["pixel", "object"]
    sizes: ClassVar[dict[str, tuple[int, int]]] = {"pixel": (64, 64), "object": (48, 80)}  # 80: not a multiple of 32

    def __init__(self, classes: int = 1) -> None:
        super().__init__()
        self.classes = classes

    def _set(self, scale: str, offset: int, n: int = 2) -> list[dict[str, Any]]:
        return [_sample(self.sizes[scale], scale, offset + i, self.classes) for i in range(n)]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._set("pixel", 0, 4), batch_size=2, shuffle=False)

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(self._set(s, 100 + 10 * i), batch_size=2) for i, s in enumerate(self.eval_scales)]

    def test_dataloader(self) -> list[DataLoader]:
        return [DataLoader(self._set(s, 200 + 10 * i), batch_size=2) for i, s in enumerate(self.eval_scales)]


def _trainer(tmp_path: Path) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _f1_per_scale(model: CrackSegmenter, loaders: list[DataLoader]) -> Tensor:
    """(scales, thresholds) F1 of the crack class, computed directly with boolean masks."""
    model.eval()
    curves = []
    with torch.no_grad():
        for loader in loaders:
            batches = list(loader)
            probs = torch.cat([torch.sigmoid(model(b["image"]))[:, 0] for b in batches])
            mask = torch.cat([b["mask"] for b in batches])
            valid, truth = mask != -1, mask == 1
            row = []
            for t in THRESHOLD_GRID:
                pred = (probs >= t) & valid
                tp = (pred & truth).sum().item()
                fp = (pred & ~truth).sum().item()
                fn = (~pred & truth & valid).sum().item()
                row.append(2 * tp / (2 * tp + fp + fn))
            curves.append(row)
    return torch.tensor(curves)


def test_fit_validate_test_per_scale_with_threshold_from_validation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pl.seed_everything(0)
    data = _CrackData()
    model = CrackSegmenter(encoder_name=ENCODER, lr=1e-3, tolerance=1)
    trainer = _trainer(tmp_path)
    with caplog.at_level(logging.INFO):
        trainer.fit(model, datamodule=data)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for scale in data.eval_scales:
        for score in ("f1", "iou", "precision", "recall", "f1_tol", "iou_per_image", "pixel_acc"):
            assert f"val_{scale}_crack_{score}" in logged, (scale, score)
    assert {"val_f1", "val_loss", "val_threshold", "train_loss_epoch"} <= set(logged)
    assert logged["val_f1"] == pytest.approx((logged["val_pixel_crack_f1"] + logged["val_object_crack_f1"]) / 2)
    assert "val segmentation metrics per scale and class" in caplog.text and "object      crack" in caplog.text

    # The chosen threshold maximises the F1 averaged over the two scales, computed independently.
    curves = _f1_per_scale(model, data.val_dataloader())
    mean = curves.mean(0)
    chosen = THRESHOLD_GRID.index(round(logged["val_threshold"], 2))
    assert mean[chosen] == mean.max()
    assert logged["val_pixel_crack_f1"] == pytest.approx(curves[0, chosen].item(), abs=1e-6)
    assert logged["val_threshold"] != 0.5  # this seeded run moves it away from the initial value

    trainer.save_checkpoint(tmp_path / "model.ckpt")
    saved = torch.load(tmp_path / "model.ckpt", weights_only=True)["state_dict"]["threshold"]
    assert saved.tolist() == pytest.approx([logged["val_threshold"]])

    fresh = CrackSegmenter(encoder_name=ENCODER, lr=1e-3, tolerance=1)
    tester = _trainer(tmp_path)
    with caplog.at_level(logging.INFO):
        tester.test(fresh, datamodule=data, ckpt_path=tmp_path / "model.ckpt")
    tested = {k: float(v) for k, v in tester.callback_metrics.items()}
    assert tested["test_threshold"] == pytest.approx(logged["val_threshold"])
    test_curves = _f1_per_scale(fresh, data.test_dataloader())
    assert tested["test_pixel_crack_f1"] == pytest.approx(test_curves[0, chosen].item(), abs=1e-6)
    assert tested["test_object_crack_f1"] == pytest.approx(test_curves[1, chosen].item(), abs=1e-6)
    assert "test segmentation metrics per scale and class" in caplog.text


def test_two_classes_are_scored_separately(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pl.seed_everything(0)
    model = CrackSegmenter(encoder_name=ENCODER, classes=["crack", "spalling"], threshold=0.5)
    trainer = _trainer(tmp_path)
    with caplog.at_level(logging.INFO):
        trainer.validate(model, datamodule=_CrackData(classes=2))
    assert "pixel       spalling" in caplog.text  # a row of the printed table
    logged = trainer.callback_metrics
    for name in ("val_pixel_crack_f1", "val_pixel_spalling_f1", "val_object_spalling_iou_per_image"):
        assert name in logged
    assert float(logged["val_crack_threshold"]) == 0.5 and float(logged["val_spalling_threshold"]) == 0.5
    # Spalling is a quarter of each image's valid pixels, so its F1 differs from the crack's.
    assert float(logged["val_pixel_crack_f1"]) != float(logged["val_pixel_spalling_f1"])


def test_predict_segments_whole_photos_by_tiles(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CrackSegmenter(encoder_name=ENCODER, classes=["crack", "spalling"], tile_size=64, tile_overlap=16)
    model.threshold.copy_(torch.tensor([0.45, 0.55]))
    photos = [
        {"image": torch.randint(0, 256, (3, 90, 150), dtype=torch.uint8), "path": "a.jpg"},
        {"image": torch.randint(0, 256, (3, 33, 47), dtype=torch.uint8), "path": "b.jpg"},
    ]
    trainer = _trainer(tmp_path)
    batches = trainer.predict(model, DataLoader(photos, batch_size=1))
    assert batches is not None and all(len(batch) == 1 for batch in batches)  # type: ignore[arg-type]
    records = [batch[0] for batch in batches]  # type: ignore[index]
    assert [r["path"] for r in records] == ["a.jpg", "b.jpg"]
    for record, photo in zip(records, photos, strict=True):
        assert record["classes"] == ["crack", "spalling"]
        height, width = photo["image"].shape[-2:]
        assert record["probabilities"].shape == (2, height, width) and record["probabilities"].dtype == torch.float16
        assert record["mask"].shape == (height, width) and record["mask"].dtype == torch.uint8
        probabilities = model.segment(photo["image"])
        assert torch.equal(record["probabilities"], probabilities.half())
        assert torch.equal(record["mask"], model.class_map(probabilities))
