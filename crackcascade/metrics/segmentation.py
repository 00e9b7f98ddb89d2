"""Crack-segmentation metrics: counts at a grid of thresholds, the F1-best threshold, and the scores."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor
from torchmetrics import Metric

from crackcascade.labels import IGNORE_INDEX

THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""Thresholds at which validation counts are kept, so the F1-best one can be chosen afterwards."""
COUNT_NAMES: tuple[str, ...] = ("tp", "fp", "fn", "tn", "tol_tp_pred", "tol_tp_true", "image_iou", "image_f1", "images")
SCORE_NAMES: tuple[str, ...] = (
    "f1",
    "iou",
    "precision",
    "recall",
    "f1_tol",
    "precision_tol",
    "recall_tol",
    "iou_per_image",
    "f1_per_image",
    "pixel_acc",
)


def class_targets(mask: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Turn a class-index mask into one binary target channel per class.

    Channel ``i`` is ``mask == i + 1`` (index 0 is background), so a crack+spalling palette mask
    trains two sigmoid channels. Indices above ``num_classes`` count as background for every
    channel; ignored pixels are ``ignore_index`` in every channel.

    Args:
        mask: ``(B, H, W)`` integer class indices.
        num_classes: Number of output channels.
        ignore_index: Mask value of pixels to ignore.

    Returns:
        ``(B, num_classes, H, W)`` float targets in ``{0, 1, ignore_index}``.
    """
    ids = torch.arange(1, num_classes + 1, device=mask.device).view(1, -1, 1, 1)
    target = (mask.unsqueeze(1) == ids).float()
    return target.masked_fill((mask == ignore_index).unsqueeze(1), float(ignore_index))


def _ratio(numerator: Tensor, denominator: Tensor, both_empty: Tensor) -> Tensor:
    """``numerator / denominator``; 0/0 is 1 when truth and prediction are both empty, else 0."""
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1e-12), both_empty.double())


def _reverse_cumsum(histogram: Tensor) -> Tensor:
    """Entry ``j`` of the result counts the values in buckets ``>= j``."""
    return histogram.flip(-1).cumsum(-1).flip(-1)


class SegmentationMetrics(Metric):
    """Crack-segmentation scores per class at a grid of thresholds, from sums only (DDP-safe).

    For each class and threshold ``t`` (a pixel is predicted when its probability ``>= t``) the
    metric keeps, summed over all images:

    * strict pixel counts TP/FP/FN/TN, giving dataset-wide IoU, F1, precision, recall and pixel
      accuracy. Pixel accuracy is reported only to compare with the paper: cracks cover a few
      percent of a photo, so predicting background everywhere scores close to 1 while F1 is 0.
    * tolerant counts with tolerance ``k`` px, the usual criterion for thin cracks whose drawn
      width and position are uncertain by a pixel or two: a predicted pixel is correct (for
      precision) if a true pixel lies within ``k`` px of it, and a true pixel is found (for
      recall) if a predicted pixel lies within ``k`` px. "Within ``k`` px" is a SQUARE
      neighbourhood (Chebyshev distance ``<= k``, so diagonal neighbours count), computed as a
      dilation with ``max_pool2d`` of kernel ``2k + 1``. Tolerant F1 is the harmonic mean of
      that precision and recall.
    * the sums of per-image IoU and F1, to average them per image: an image with neither a true
      nor a predicted pixel of the class scores 1 (nothing to find, nothing falsely found); one
      with predictions but no true pixel scores 0.

    The same convention holds for every ratio: 0/0 is 1 when truth and prediction are both empty
    and 0 otherwise (e.g. precision with no prediction but missed cracks). Pixels whose mask is
    ``ignore_index`` take no part in anything (neither as truth nor as prediction); images with no
    valid pixel are not counted.

    Args:
        num_classes: Number of sigmoid channels (class ``i`` is mask value ``i + 1``).
        thresholds: Increasing probability thresholds.
        tolerance: ``k`` in pixels for the tolerant scores (0 makes them strict).
        ignore_index: Mask value of ignored pixels.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    thresholds: Tensor
    tp: Tensor
    fp: Tensor
    fn: Tensor
    tn: Tensor
    tol_tp_pred: Tensor
    tol_tp_true: Tensor
    image_iou: Tensor
    image_f1: Tensor
    images: Tensor

    def __init__(
        self,
        num_classes: int,
        thresholds: Sequence[float] = THRESHOLD_GRID,
        tolerance: int = 2,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        grid = torch.tensor(list(thresholds), dtype=torch.float32)
        if grid.numel() == 0 or bool((grid[1:] <= grid[:-1]).any()):
            raise ValueError(f"thresholds must be a non-empty increasing sequence, got {list(thresholds)}")
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        self.num_classes = num_classes
        self.tolerance = tolerance
        self.ignore_index = ignore_index
        self.register_buffer("thresholds", grid, persistent=False)
        shape = (len(grid), num_classes)
        for name in COUNT_NAMES[:6]:
            self.add_state(name, torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
        for name in COUNT_NAMES[6:8]:
            self.add_state(name, torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probabilities: Tensor, mask: Tensor) -> None:
        """Add a batch.

        Args:
            probabilities: ``(B, C, H, W)`` class probabilities.
            mask: ``(B, H, W)`` class indices, ``ignore_index`` for ignored pixels.
        """
        if probabilities.shape[1] != self.num_classes or probabilities.shape[-2:] != mask.shape[-2:]:
            raise ValueError(
                f"probabilities {tuple(probabilities.shape)} do not match mask {tuple(mask.shape)} "
                f"and {self.num_classes} classes"
            )
        batch, classes = probabilities.shape[:2]
        probabilities = probabilities.float()
        valid = (mask != self.ignore_index).unsqueeze(1).expand_as(probabilities)
        truth = class_targets(mask, classes, self.ignore_index) == 1
        # bucket = number of thresholds <= p, so "predicted at threshold j" is "bucket >= j + 1"
        # and one histogram per pixel group gives the counts at every threshold at once.
        buckets = torch.bucketize(probabilities, self.thresholds, right=True)
        groups = batch * classes
        flat = torch.arange(groups, device=buckets.device).view(batch, classes, 1, 1)
        bins = len(self.thresholds) + 1

        def at_or_above(bucket: Tensor, keep: Tensor, offset: Tensor, n: int) -> Tensor:
            histogram = torch.bincount((offset * bins + bucket)[keep], minlength=n * bins)
            return _reverse_cumsum(histogram.view(n, bins))

        by_truth = at_or_above(buckets, valid, flat * 2 + truth.long(), groups * 2).view(batch, classes, 2, bins)
        tp, fp = by_truth[:, :, 1, 1:], by_truth[:, :, 0, 1:]  # (B, C, T)
        positives, negatives = by_truth[:, :, 1, :1], by_truth[:, :, 0, :1]
        fn, tn = positives - tp, negatives - fp

        size = 2 * self.tolerance + 1
        near_truth = F.max_pool2d(truth.float(), size, stride=1, padding=self.tolerance) > 0
        # Ignored pixels must not "find" cracks; -1 is below every threshold.
        near_prediction = F.max_pool2d(probabilities.masked_fill(~valid, -1.0), size, stride=1, padding=self.tolerance)
        near_buckets = torch.bucketize(near_prediction, self.thresholds, right=True)
        tol_tp_pred = at_or_above(buckets, valid & near_truth, flat, groups).view(batch, classes, bins)[..., 1:]
        tol_tp_true = at_or_above(near_buckets, valid & truth, flat, groups).view(batch, classes, bins)[..., 1:]

        has_pixels = (mask != self.ignore_index).flatten(1).any(1)  # (B,)
        both_empty = (tp + fp + fn) == 0
        image_iou = _ratio(tp, tp + fp + fn, both_empty)
        image_f1 = _ratio(2 * tp, 2 * tp + fp + fn, both_empty)
        keep = has_pixels.view(-1, 1, 1)

        def total(values: Tensor) -> Tensor:
            return (values * keep).sum(0).transpose(0, 1)  # (T, C)

        self.tp += total(tp)
        self.fp += total(fp)
        self.fn += total(fn)
        self.tn += total(tn)
        self.tol_tp_pred += total(tol_tp_pred)
        self.tol_tp_true += total(tol_tp_true)
        self.image_iou += total(image_iou)
        self.image_f1 += total(image_f1)
        self.images += has_pixels.sum()

    def compute(self) -> dict[str, Tensor]:
        """The summed states (synced across processes); torchmetrics squeezes one-element ones."""
        return {name: getattr(self, name) for name in COUNT_NAMES}

    def counts(self) -> dict[str, Tensor]:
        """The summed counts, each ``(T, C)`` (``images`` a scalar), synced across processes."""
        shape = (len(self.thresholds), self.num_classes)
        return {k: v.reshape(() if k == "images" else shape) for k, v in self.compute().items()}


def f1_curve(counts: dict[str, Tensor]) -> Tensor:
    """Dataset-wide strict F1 at every threshold, ``(T, C)``, from :meth:`SegmentationMetrics.counts`."""
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    return _ratio(2 * tp, 2 * tp + fp + fn, (tp + fp + fn) == 0)


def best_threshold_index(curves: Tensor, thresholds: Tensor) -> Tensor:
    """Per class, the threshold index with the highest F1 averaged over sets (e.g. scales).

    Ties (common for a model that is not yet trained, or a class absent from the data) go to the
    threshold closest to 0.5, so a degenerate curve does not push the threshold to an extreme.

    Args:
        curves: ``(S, T, C)`` F1 of ``S`` sets at ``T`` thresholds for ``C`` classes.
        thresholds: ``(T,)`` the thresholds.

    Returns:
        ``(C,)`` indices into ``thresholds``.
    """
    mean = curves.double().mean(0)  # (T, C)
    best = mean == mean.max(0, keepdim=True).values
    distance = (thresholds.double() - 0.5).abs().view(-1, 1).expand_as(mean)
    return distance.masked_fill(~best, float("inf")).argmin(0)


def segmentation_scores(counts: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
    """All scores per class at one threshold index per class.

    Args:
        counts: From :meth:`SegmentationMetrics.counts`.
        index: ``(C,)`` threshold index of each class.

    Returns:
        Name (:data:`SCORE_NAMES`) -> ``(C,)`` float64 scores; see :class:`SegmentationMetrics`
        for their definitions.
    """
    columns = torch.arange(len(index), device=index.device)

    def pick(name: str) -> Tensor:
        return counts[name][index, columns]

    tp, fp, fn, tn = pick("tp"), pick("fp"), pick("fn"), pick("tn")
    both_empty = (tp + fp + fn) == 0
    precision_tol = _ratio(pick("tol_tp_pred"), tp + fp, both_empty)
    recall_tol = _ratio(pick("tol_tp_true"), tp + fn, both_empty)
    images = counts["images"].double().clamp(min=1)
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        "iou": _ratio(tp, tp + fp + fn, both_empty),
        "precision": _ratio(tp, tp + fp, both_empty),
        "recall": _ratio(tp, tp + fn, both_empty),
        "f1_tol": _ratio(2 * precision_tol * recall_tol, precision_tol + recall_tol, both_empty),
        "precision_tol": precision_tol,
        "recall_tol": recall_tol,
        "iou_per_image": pick("image_iou") / images,
        "f1_per_image": pick("image_f1") / images,
        "pixel_acc": _ratio(tp + tn, tp + fp + fn + tn, both_empty),
    }
