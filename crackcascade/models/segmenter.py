"""CrackSegmenter: a U-Net that segments cracks (and other damage classes) pixel by pixel."""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F  # noqa: N812
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric

from crackcascade.checkpoints import CLASS_KEY, class_path
from crackcascade.data.sampling import has_samples
from crackcascade.errors import ConfigError, WeightsError
from crackcascade.hardware import CompileMode
from crackcascade.labels import CRACK, IGNORE_INDEX
from crackcascade.measure import measure_cracks
from crackcascade.models.optim import configure_optimizer
from crackcascade.models.weights import KNOWN_PREFIXES, load_weights, read_state_dict
from crackcascade.reliability import check_finite_loss
from crackcascade.tiling import PAD_MULTIPLE, pad_to_multiple, predict_tiled
from crackcascade.tracking import log_mask_previews, previews_wanted, shrink

Batch = dict[str, Any]
EVAL_STAGES: tuple[str, ...] = ("val", "test")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""Thresholds at which validation counts are kept, so the F1-best one can be chosen afterwards."""
CLASSIFIER_PREFIXES: tuple[str, ...] = ("fc.", "classifier.", "head.", "last_linear.", "_fc.")
"""Classifier tensors of ImageNet checkpoints that an encoder without a head drops."""
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


# ---- loss ----------------------------------------------------------------------------------


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


def segmentation_loss(
    logits: Tensor,
    mask: Tensor,
    loss: str = "bce+dice",
    pos_weight: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Binary cross-entropy and/or soft Dice loss of per-class sigmoid logits.

    BCE (the paper's loss) is the mean over the non-ignored pixels and classes, with positive
    pixels weighted by ``pos_weight``. Dice is smp's :class:`~segmentation_models_pytorch.losses.DiceLoss`
    (binary mode for one class, multilabel otherwise): per class over the whole batch, ``1 -
    2 * sum(p * y) / (sum(p) + sum(y))``, averaged over classes, with a class that has no true
    pixel in the batch contributing 0 (its false positives are left to BCE). ``bce+dice`` is the
    sum of both. Ignored pixels do not affect either term.

    Args:
        logits: ``(B, C, H, W)`` logits.
        mask: ``(B, H, W)`` class indices (see :func:`class_targets`).
        loss: ``bce``, ``dice`` or ``bce+dice``.
        pos_weight: Weight of positive pixels in BCE (thin cracks are a small minority).
        ignore_index: Mask value of pixels to ignore.

    Returns:
        The scalar loss.
    """
    logits = logits.float()
    target = class_targets(mask, logits.shape[1], ignore_index)
    total = logits.new_zeros(())
    if "bce" in loss:
        valid = (target != ignore_index).float()
        summed = F.binary_cross_entropy_with_logits(
            logits,
            target.clamp(min=0),
            weight=valid,
            pos_weight=logits.new_tensor(pos_weight),
            reduction="sum",
        )
        total = total + summed / valid.sum().clamp(min=1)
    if "dice" in loss:
        mode = smp.losses.BINARY_MODE if logits.shape[1] == 1 else smp.losses.MULTILABEL_MODE
        dice = smp.losses.DiceLoss(mode, from_logits=True, ignore_index=ignore_index)
        total = total + dice(logits, target)
    return total


# ---- metrics -------------------------------------------------------------------------------


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


# ---- offline encoder weights ---------------------------------------------------------------


def _matching_keys(state: dict[str, Tensor], own: dict[str, Tensor]) -> int:
    """Most keys of ``own`` that ``state`` holds under any of :data:`KNOWN_PREFIXES`."""
    return max(sum(1 for k in state if k.startswith(p) and k[len(p) :] in own) for p in KNOWN_PREFIXES)


def _unused_prefixes(own: dict[str, Tensor]) -> list[str]:
    return [p for p in CLASSIFIER_PREFIXES if not any(k.startswith(p) for k in own)]


def load_encoder_weights(encoder: nn.Module, encoder_name: str, path: str | Path) -> None:
    """Fill a U-Net encoder from a local weight file, offline.

    Three layouts load: a checkpoint of the encoder itself or of a :class:`CrackSegmenter`
    (``encoder.``/``model.encoder.`` keys); an ImageNet classifier of the same backbone as
    torchvision/smp name it (its classifier is dropped); and, for ``tu-`` (timm) encoders, a
    plain timm state dict of the backbone. smp wraps timm backbones as ``encoder.model`` built
    with ``features_only``, which drops the classifier and final layers and renames flattened
    stages (``stages.0`` -> ``stages_0``); so a timm file is loaded into the full timm model first,
    with :func:`~crackcascade.models.weights.load_weights`' checks, and copied over from there.
    The layout whose keys match more of the file is used.

    Args:
        encoder: ``smp.Unet(...).encoder``.
        encoder_name: The smp encoder name (``tu-<timm name>`` for timm backbones).
        path: Weight file (.safetensors, .pth/.pt or Lightning .ckpt).

    Raises:
        WeightsError: If the file is missing, unsafe, or does not match the encoder.
    """
    own = encoder.state_dict()
    timm_model: Any = None  # a timm model; typed Any for its pretrained_cfg attribute
    if encoder_name.startswith("tu-") and isinstance(getattr(encoder, "model", None), nn.Module):
        timm_model = timm.create_model(encoder_name[3:], pretrained=False, num_classes=0)
        state = read_state_dict(path)
        if _matching_keys(state, timm_model.state_dict()) <= _matching_keys(state, own):
            timm_model = None
    if timm_model is None:
        load_weights(encoder, path, ignore_prefixes=_unused_prefixes(own), what="encoder")
        return
    classifier = timm_model.pretrained_cfg.get("classifier", "fc")
    classifiers = [classifier] if isinstance(classifier, str) else list(classifier)
    load_weights(timm_model, path, ignore_prefixes=[f"{c}." for c in classifiers], what="encoder")
    source = timm_model.state_dict()
    features: nn.Module = encoder.model  # type: ignore[assignment]
    mapped: dict[str, Tensor] = {}
    for key in features.state_dict():
        head, _, rest = key.partition(".")
        flattened = re.fullmatch(r"(.+)_(\d+)", head)
        original = f"{flattened[1]}.{flattened[2]}.{rest}" if flattened and key not in source else key
        if original not in source:
            raise WeightsError(f"{path}: does not match the encoder: no tensor for {key}; check the architecture name")
        mapped[key] = source[original]
    features.load_state_dict(mapped, strict=True)


# ---- the module ----------------------------------------------------------------------------


def names_on_all_ranks(names: Sequence[str]) -> list[str]:
    """The union of every DDP process's ``names``, in one order all processes agree on (rank 0's first).

    Metrics created as their scale is first seen may exist on some processes only, or in another
    order; syncing them one by one would pair different metrics' collectives. Every process
    creates the missing ones (empty) and syncs them in this order. Without a process group, the
    names as given.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return list(names)
    gathered: list[list[str] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, list(names))
    return list(dict.fromkeys(name for rank_names in gathered for name in rank_names or ()))


@contextlib.contextmanager
def unupdated_metrics_ok() -> Iterator[None]:
    """Silence torchmetrics' warning for computing a metric this process never updated: it syncs all the same."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The ``compute`` method of metric", category=UserWarning)
        yield


def attached_datamodule(module: pl.LightningModule) -> Any:
    """The data module of the trainer a module is attached to, or None (no trainer, or plain loaders)."""
    trainer = module._trainer
    return getattr(trainer, "datamodule", None) if trainer is not None else None


class CrackSegmenter(pl.LightningModule):
    """U-Net crack segmentation with one sigmoid channel per damage class (Bai et al., 2020).

    Images arrive as ``uint8`` and are normalized inside the module with the ImageNet mean and
    std that smp's pretrained encoders expect; sizes that are not multiples of 32 are padded by
    reflection inside :meth:`forward` and the output is cropped back, so validation, test and
    prediction take any size.

    Validation and test may have one dataloader per scale: each batch's ``scale`` entries (or
    else the datamodule's ``eval_scales``) sort the images, and every score is logged per scale
    and class as ``<stage>_<scale>_<class>_<score>`` (scores in :data:`SCORE_NAMES`, defined in
    :class:`SegmentationMetrics`), with ``<stage>_f1`` the mean dataset-wide F1 over scales and
    classes (the monitor metric), ``<stage>_loss``, and the thresholds as
    ``<stage>_<class>_threshold`` (and ``<stage>_threshold`` when there is one class).

    With ``threshold=None`` each validation epoch (outside the sanity check) sets each class's
    threshold to the one of :data:`THRESHOLD_GRID` with the best F1 averaged over scales; the
    thresholds live in the ``threshold`` buffer, so checkpoints keep them and test and predict use
    them. Before any validation they are 0.5.

    Args:
        encoder_name: smp encoder (``resnet34``; ``tu-<timm name>`` for any timm backbone).
        encoder_weights: smp's hub weights to download (e.g. ``imagenet``; needs the network).
        pretrained_weights: Local encoder weights (.safetensors, .pth/.pt, .ckpt); loads
            offline, see :func:`load_encoder_weights`.
        classes: Class names; class ``i`` is mask value ``i + 1`` (0 background, -1 ignored).
        loss: ``bce`` (the paper's), ``dice`` or ``bce+dice``; see :func:`segmentation_loss`.
        pos_weight: Weight of crack pixels in BCE.
        lr: Learning rate (1e-4 in the paper).
        optimizer: ``adamw``, ``adam`` or ``sgd`` (with ``momentum``).
        momentum: SGD momentum.
        weight_decay: Weight decay.
        scheduler: ``cosine`` annealing over ``trainer.max_epochs``, or ``none``.
        threshold: Fixed probability threshold for every class, or None to choose it on validation.
        tolerance: Pixel tolerance of the ``*_tol`` scores.
        tile_size: Tile side for prediction on photos (multiple of 32).
        tile_overlap: Minimum overlap of prediction tiles.
        tile_batch_size: Tiles per forward pass during prediction.
        channels_last: Run the U-Net in channels-last memory layout. oneDNN and cuDNN convolutions
            are faster in it, most with bf16/fp16 mixed precision (``--trainer.precision
            bf16-mixed``): 3.3x per training step on a CPU with AMX (see the README).
        compile: Compile the U-Net with ``torch.compile`` (in place, so checkpoints keep plain
            state-dict keys). The first steps are slow while it compiles; training crops have one
            size, but evaluation and tiled prediction see others and compile again for them.
            Needs a C++ compiler on CPU.
        compile_mode: ``torch.compile`` mode: ``default``, ``reduce-overhead`` (CUDA graphs),
            ``max-autotune`` or ``max-autotune-no-cudagraphs``.
        tta: Test-time augmentation: validation, test and predict average the probabilities of
            the photo and its three flips (4x the inference time). The loss stays unflipped.
        px_per_mm: Image scale of predicted photos, to measure cracks in mm too (None: pixels only).
        min_crack_area: Predicted crack components smaller than this (pixels) are not measured.
    """

    mean: Tensor
    std: Tensor
    threshold: Tensor
    preview_images: int = 4
    """Validation photos per scale shown with true and predicted masks when logging to W&B."""

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_weights: str | None = None,
        pretrained_weights: str | None = None,
        classes: Sequence[str] = ("crack",),
        loss: Literal["bce", "dice", "bce+dice"] = "bce+dice",
        pos_weight: float = 1.0,
        lr: float = 1e-4,
        optimizer: Literal["adamw", "adam", "sgd"] = "adamw",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        scheduler: Literal["none", "cosine"] = "none",
        threshold: float | None = None,
        tolerance: int = 2,
        tile_size: int = 512,
        tile_overlap: int = 64,
        tile_batch_size: int = 4,
        channels_last: bool = True,
        compile: bool = False,
        compile_mode: CompileMode = "default",
        tta: bool = False,
        px_per_mm: float | None = None,
        min_crack_area: int = 10,
    ) -> None:
        super().__init__()
        classes = [classes] if isinstance(classes, str) else list(classes)
        self.save_hyperparameters()
        self.hparams["classes"] = classes  # a plain list, however it was given
        self.classes: list[str] = classes
        self._check_options()
        try:
            self.model = smp.Unet(encoder_name, encoder_weights=encoder_weights, classes=len(classes))
        except (KeyError, ValueError, RuntimeError) as err:
            message = str(err.args[0]) if err.args else type(err).__name__
            raise ConfigError(f"model.encoder_name '{encoder_name}': {message}") from None
        if pretrained_weights:
            load_encoder_weights(self.model.encoder, encoder_name, pretrained_weights)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        if compile:
            # In place (no OptimizedModule wrapper): the state-dict keys stay "model.*".
            self.model.compile(mode=compile_mode)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)
        self.grid: tuple[float, ...] = tuple(sorted({*THRESHOLD_GRID, *([threshold] if threshold is not None else [])}))
        initial = 0.5 if threshold is None else threshold
        self.register_buffer("threshold", torch.full((len(classes),), initial, dtype=torch.float32))
        # Created per scale as scales are seen; keyed "<stage>_<scale>".
        self.seg_metrics = nn.ModuleDict()
        self.seg_losses = nn.ModuleDict()
        self.stage_losses = nn.ModuleDict({stage: MeanMetric() for stage in EVAL_STAGES})
        self._scales: dict[str, list[str]] = {stage: [] for stage in EVAL_STAGES}
        self.last_metrics: dict[str, dict[str, Any]] = {}
        # W&B validation previews (rank zero only): scale -> [(image, mask, probabilities, path)]; None when off.
        self._previews: dict[str, list[tuple[Tensor, Tensor, Tensor, str]]] | None = None

    def _check_options(self) -> None:
        hp = self.hparams
        if not self.classes or len(set(self.classes)) != len(self.classes) or len(self.classes) > 255:
            raise ConfigError(f"model.classes must be 1 to 255 distinct names, got {self.classes}")
        choices = {
            "loss": ("bce", "dice", "bce+dice"),
            "optimizer": ("adamw", "adam", "sgd"),
            "scheduler": ("none", "cosine"),
        }
        for option, allowed in choices.items():
            if hp[option] not in allowed:
                raise ConfigError(f"model.{option} must be one of {', '.join(allowed)}, got {hp[option]!r}")
        if hp["lr"] <= 0:
            raise ConfigError(f"model.lr must be > 0, got {hp['lr']}")
        if hp["pos_weight"] <= 0:
            raise ConfigError(f"model.pos_weight must be > 0, got {hp['pos_weight']}")
        if hp["threshold"] is not None and not 0 < hp["threshold"] < 1:
            raise ConfigError(f"model.threshold must be in (0, 1) or null, got {hp['threshold']}")
        if hp["tolerance"] < 0:
            raise ConfigError(f"model.tolerance must be >= 0, got {hp['tolerance']}")
        if hp["tile_size"] <= 0 or hp["tile_size"] % PAD_MULTIPLE:
            raise ConfigError(f"model.tile_size must be a positive multiple of {PAD_MULTIPLE}, got {hp['tile_size']}")
        if not 0 <= hp["tile_overlap"] < hp["tile_size"]:
            raise ConfigError(f"model.tile_overlap must be in [0, tile_size), got {hp['tile_overlap']}")
        if hp["px_per_mm"] is not None and not hp["px_per_mm"] > 0:
            raise ConfigError(f"model.px_per_mm must be > 0 or null, got {hp['px_per_mm']}")
        if hp["min_crack_area"] < 1:
            raise ConfigError(f"model.min_crack_area must be >= 1, got {hp['min_crack_area']}")
        if hp["tile_batch_size"] < 1:
            raise ConfigError(f"model.tile_batch_size must be >= 1, got {hp['tile_batch_size']}")

    # ---- inference ---------------------------------------------------------------------------

    def normalize(self, images: Tensor) -> Tensor:
        """Map ``uint8`` images (or floats in ``[0, 255]``) to the encoder's normalized input."""
        return (images.float() - self.mean) / self.std

    def forward(self, images: Tensor) -> Tensor:
        """Return ``(B, C, H, W)`` logits for ``(B, 3, H, W)`` images (``uint8`` or float 0-255) of any size."""
        height, width = images.shape[-2:]
        inputs = pad_to_multiple(self.normalize(images), PAD_MULTIPLE)
        if self.hparams["channels_last"]:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        logits = self.model(inputs)
        return logits[..., :height, :width]

    def _probabilities(self, images: Tensor, logits: Tensor | None = None) -> Tensor:
        """Sigmoid probabilities; with ``tta`` the mean over the four flips of the images."""
        if logits is None:
            logits = self(images)
        probabilities = torch.sigmoid(logits.float())
        if not self.hparams["tta"]:
            return probabilities
        for dims in ((-1,), (-2,), (-2, -1)):
            probabilities += torch.sigmoid(self(images.flip(dims)).float()).flip(dims)
        return probabilities / 4

    def segment(self, image: Tensor) -> Tensor:
        """Class probabilities of one photo of any size, by tiles (see :func:`~crackcascade.tiling.predict_tiled`).

        Runs in evaluation mode without gradients and restores the previous mode.

        Args:
            image: ``(3, H, W)`` image, ``uint8`` or float 0-255, on any device.

        Returns:
            ``(C, H, W)`` float32 probabilities on the CPU.
        """
        was_training = self.training
        self.eval()
        try:
            return predict_tiled(
                self._probabilities,
                image,
                tile_size=self.hparams["tile_size"],
                overlap=self.hparams["tile_overlap"],
                batch_size=self.hparams["tile_batch_size"],
                device=self.device,
                multiple=1,  # forward pads by itself, so a photo within one tile runs exactly as whole
            )
        finally:
            self.train(was_training)

    def class_map(self, probabilities: Tensor) -> Tensor:
        """``(H, W)`` uint8 class map: 0 background, else ``i + 1`` for the most probable class at/above its threshold.

        Args:
            probabilities: ``(C, H, W)`` probabilities (from :meth:`segment`).
        """
        probabilities = probabilities.float()
        threshold = self.threshold.to(probabilities.device).view(-1, 1, 1)
        above = probabilities >= threshold
        best = probabilities.masked_fill(~above, -1.0).argmax(0)
        return torch.where(above.any(0), best + 1, 0).to(torch.uint8)

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Segment one photo by tiles at native resolution.

        Returns:
            One record (a list, like the classifier's, so one writer serves both): ``{"path",
            "classes", "segmented": True, "measurements"`` (of the crack class, see
            :func:`~crackcascade.measure.measure_cracks`; None without a crack class)``,
            "probabilities": (C, H, W) float16 CPU, "mask": (H, W) uint8 class map, "image": (H, W, 3)
            uint8}``; the writer turns the arrays into files and drops them.

        Raises:
            ValueError: If the batch holds more than one photo (photos differ in size).
        """
        if not has_samples(batch):
            return []  # the photo could not be read (on_error=skip)
        images = batch["image"]
        if images.dim() != 4 or images.shape[0] != 1:
            raise ValueError(f"predict batches must hold one photo (batch_size 1), got {tuple(images.shape)}")
        probabilities = self.segment(images[0])
        class_map = self.class_map(probabilities)
        measurements = None
        if CRACK in self.classes:
            cracks = (class_map == self.classes.index(CRACK) + 1).numpy()
            measured = measure_cracks(cracks, self.hparams["px_per_mm"], self.hparams["min_crack_area"])
            measurements = measured.to_dict()
        return [
            {
                "path": batch["path"][0],
                "classes": list(self.classes),
                "segmented": True,
                "measurements": measurements,
                "probabilities": probabilities.half(),
                "mask": class_map,
                "image": images[0].permute(1, 2, 0).cpu().numpy(),
            }
        ]

    # ---- training and evaluation -------------------------------------------------------------

    def _key(self, stage: str, scale: str) -> str:
        return f"{stage}_{scale}".replace(".", "_")

    def _metric(self, key: str) -> SegmentationMetrics:
        return cast(SegmentationMetrics, self.seg_metrics[key])

    def _mean(self, metrics: nn.ModuleDict, key: str) -> MeanMetric:
        return cast(MeanMetric, metrics[key])

    def _add_scale(self, stage: str, scale: str) -> None:
        key = self._key(stage, scale)
        if key in self.seg_metrics:
            return
        metric = SegmentationMetrics(len(self.classes), self.grid, self.hparams["tolerance"])
        self.seg_metrics[key] = metric.to(self.device)
        self.seg_losses[key] = MeanMetric().to(self.device)
        self._scales[stage].append(scale)

    def setup(self, stage: str) -> None:
        """Check the data's mask classes; create the metrics of every evaluation scale up front.

        All DDP ranks then sync the same metrics.
        """
        found = getattr(attached_datamodule(self), "classes", None)
        data_classes = list(found) if isinstance(found, list | tuple) else []
        if stage != TrainerFn.PREDICTING and data_classes and data_classes != self.classes:
            # Channel i is scored against mask value i + 1: other names, or another count, score nonsense.
            raise ConfigError(
                f"model.classes {self.classes} differ from data.classes {data_classes} (channel i is mask "
                f"value i + 1); pass --data.classes [{', '.join(self.classes)}] with masks of these classes, "
                "or use a model trained on the data's classes"
            )
        for eval_stage in EVAL_STAGES:
            for scale in self._eval_scales() or ():
                self._add_scale(eval_stage, scale)

    def _eval_scales(self) -> list[str] | None:
        return getattr(attached_datamodule(self), "eval_scales", None)

    def _scales_of(self, batch: Batch, dataloader_idx: int) -> list[str]:
        """The scale of each image: the batch's ``scale`` entries, else the loader's in ``eval_scales``."""
        if "scale" in batch:
            return [str(s) for s in batch["scale"]]
        scales = self._eval_scales()
        return [scales[dataloader_idx] if scales else "all"] * len(batch["image"])

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        """Loss on a batch of image crops; stops at a NaN or infinite loss, naming the class and loss term."""
        if not has_samples(batch):
            return None  # every crop of the batch was skipped (on_error=skip): no update
        logits = self(batch["image"])
        loss = segmentation_loss(logits, batch["mask"], self.hparams["loss"], self.hparams["pos_weight"], IGNORE_INDEX)
        check_finite_loss(self, loss, lambda: self._loss_terms(logits, batch["mask"]), batch)
        size = len(batch["image"])
        # Synced, so the epoch value is the mean over every process's crops (a scalar all-reduce per step).
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size, sync_dist=True)
        return loss

    def _loss_terms(self, logits: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Each class's BCE and Dice term alone (computed only to say which one is not finite)."""
        terms: dict[str, Tensor] = {}
        for index, name in enumerate(self.classes):
            # Class i's channel against a mask in which only class i + 1 is foreground.
            own = torch.where(mask == index + 1, 1, torch.where(mask == IGNORE_INDEX, IGNORE_INDEX, 0))
            for term in ("bce", "dice"):
                if term in self.hparams["loss"]:
                    terms[f"{name} {term}"] = segmentation_loss(
                        logits[:, index : index + 1].detach(), own, term, self.hparams["pos_weight"], IGNORE_INDEX
                    )
        return terms

    def _eval_step(self, batch: Batch, stage: str, dataloader_idx: int) -> None:
        if not has_samples(batch):
            return
        logits = self(batch["image"])
        probabilities = self._probabilities(batch["image"], logits)
        mask = batch["mask"]
        scales = self._scales_of(batch, dataloader_idx)
        for scale in dict.fromkeys(scales):
            self._add_scale(stage, scale)
            # One dataloader per scale makes whole-batch selections the rule; they copy nothing.
            rows: Tensor | slice = (
                slice(None) if len(set(scales)) == 1 else torch.tensor([s == scale for s in scales], device=mask.device)
            )
            key = self._key(stage, scale)
            loss = segmentation_loss(
                logits[rows], mask[rows], self.hparams["loss"], self.hparams["pos_weight"], IGNORE_INDEX
            )
            count = len(scales) if isinstance(rows, slice) else int(rows.sum())
            self._mean(self.seg_losses, key).update(loss.detach(), count)
            self._mean(self.stage_losses, stage).update(loss.detach(), count)
            self._metric(key).update(probabilities[rows], mask[rows])
        if stage == "val" and self._previews is not None:
            self._collect_previews(self._previews, batch, probabilities, scales)

    def _collect_previews(
        self,
        previews: dict[str, list[tuple[Tensor, Tensor, Tensor, str]]],
        batch: Batch,
        probabilities: Tensor,
        scales: list[str],
    ) -> None:
        """Keep the first :attr:`preview_images` validation photos of each scale, cropped and scaled down.

        Validation loaders are not shuffled, so the same photos are shown every epoch; their
        predicted masks are drawn at epoch end, with the thresholds chosen on that epoch.
        """
        mask = batch["mask"]
        for i, scale in enumerate(scales):
            kept = previews.setdefault(scale, [])
            if len(kept) >= self.preview_images:
                continue
            valid = mask[i] != IGNORE_INDEX
            if not bool(valid.any()):
                continue
            # Eval batches are padded bottom/right to a common size; show the photo only.
            height = int(valid.any(1).nonzero().max()) + 1
            width = int(valid.any(0).nonzero().max()) + 1
            image, truth, probs = shrink(
                batch["image"][i, :, :height, :width].to(torch.uint8),
                mask[i, :height, :width],
                probabilities[i, :, :height, :width].half(),
            )
            kept.append((image, truth, probs, str(batch["path"][i])))

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Loss and threshold-grid counts per scale."""
        self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Loss and threshold-grid counts per scale."""
        self._eval_step(batch, "test", dataloader_idx)

    def _epoch_end(self, stage: str) -> None:
        # Every rank computes every scale's synced counts, so none waits on a skipped collective.
        counts: dict[str, dict[str, Tensor]] = {}
        losses: dict[str, float] = {}
        scales = names_on_all_ranks(self._scales[stage])
        for scale in scales:
            self._add_scale(stage, scale)  # a scale only other processes saw: empty here, summed in the sync
        self._scales[stage] = scales
        with unupdated_metrics_ok():
            for scale in scales:
                key = self._key(stage, scale)
                metric, loss = self._metric(key), self._mean(self.seg_losses, key)
                scale_counts = {k: v.clone() for k, v in metric.counts().items()}
                scale_loss = float(loss.compute())
                metric.reset()
                loss.reset()
                if int(scale_counts["images"]) > 0:
                    counts[scale], losses[scale] = scale_counts, scale_loss
            stage_losses = self._mean(self.stage_losses, stage)
            stage_loss = float(stage_losses.compute()) if counts else 0.0
            stage_losses.reset()
        if not counts:
            return
        grid = torch.tensor(self.grid, dtype=torch.float32, device=self.threshold.device)
        choose = stage == "val" and self.hparams["threshold"] is None and not self.trainer.sanity_checking
        if choose:
            curves = torch.stack([f1_curve(c) for c in counts.values()]).to(grid.device)
            self.threshold.copy_(grid[best_threshold_index(curves, grid)])
        index = (grid.view(-1, 1) - self.threshold.view(1, -1)).abs().argmin(0)
        metrics: dict[str, float] = {"loss": stage_loss}
        rows: list[tuple[str, str, dict[str, float]]] = []
        for scale, scale_counts in counts.items():
            scores = segmentation_scores(scale_counts, index.to(scale_counts["tp"].device))
            metrics[f"{scale}_loss"] = losses[scale]
            for c, name in enumerate(self.classes):
                row = {score: float(values[c]) for score, values in scores.items()}
                row["threshold"] = self.grid[int(index[c])]
                rows.append((scale, name, row))
                metrics.update({f"{scale}_{name}_{score}": row[score] for score in SCORE_NAMES})
        for score in ("f1", "iou", "f1_tol"):
            metrics[score] = sum(row[score] for *_, row in rows) / len(rows)
        for c, name in enumerate(self.classes):
            metrics[f"{name}_threshold"] = self.grid[int(index[c])]
        if len(self.classes) == 1:
            metrics["threshold"] = metrics[f"{self.classes[0]}_threshold"]
        for name, value in metrics.items():
            # Equal on every rank (from synced counts): "max" over ranks keeps it exact and tells Lightning so.
            self.log(
                f"{stage}_{name}",
                value,
                prog_bar=name in ("f1", "loss"),
                add_dataloader_idx=False,
                sync_dist=True,
                reduce_fx="max",
            )
        if self.trainer.sanity_checking:
            return  # scores of an untrained model must not end up in the end-of-fit table
        self.last_metrics[stage] = {"rows": rows, "mean": {s: metrics[s] for s in ("f1", "iou", "f1_tol")}}
        if stage == "val":
            thresholds = ", ".join(f"{n} {metrics[n + '_threshold']:.2f}" for n in self.classes)
            rank_zero_info(
                f"epoch {self.current_epoch}: val_f1 {metrics['f1']:.3f} val_f1_tol {metrics['f1_tol']:.3f} "
                f"(thresholds {thresholds})"
            )

    def on_validation_epoch_start(self) -> None:
        """Start collecting W&B previews when a W&B logger is attached (rank zero, outside the sanity check)."""
        self._previews = {} if previews_wanted(self._trainer) else None

    def on_validation_epoch_end(self) -> None:
        """Choose the thresholds (unless fixed) and log the scores per scale and class.

        With a W&B logger, the first :attr:`preview_images` photos of each scale are logged as
        ``val_preview_<scale>``: photo, true mask and predicted mask (at the thresholds just chosen).
        """
        self._epoch_end("val")
        for scale, kept in (self._previews or {}).items():
            shown = [(image, truth, self.class_map(probs), Path(path).name) for image, truth, probs, path in kept]
            log_mask_previews(self.trainer, f"val_preview_{scale}", shown, self.classes, IGNORE_INDEX)
        self._previews = None
        if self.trainer.state.fn == TrainerFn.VALIDATING:  # a fit prints its last one at the end
            self.print_summary("val")

    def on_test_epoch_end(self) -> None:
        """Log test scores at the validation thresholds and print the table."""
        self._epoch_end("test")
        self.print_summary("test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the class, so the file says what it holds (``crackcascade test --ckpt_path`` reads it)."""
        checkpoint[CLASS_KEY] = class_path(type(self))

    def on_fit_end(self) -> None:
        """Print the last validation scores per scale and class."""
        self.print_summary("val")

    @rank_zero_only
    def print_summary(self, stage: str) -> None:
        """Print a table of a stage's last scores: rows scale/class, columns the main scores."""
        last = self.last_metrics.get(stage)
        if not last:
            return
        columns = (
            ("F1", "f1"),
            ("IoU", "iou"),
            ("prec", "precision"),
            ("recall", "recall"),
            (f"F1@{self.hparams['tolerance']}px", "f1_tol"),
            ("IoU/img", "iou_per_image"),
            ("pix acc", "pixel_acc"),
            ("thresh", "threshold"),
        )
        lines = [
            f"{stage} segmentation metrics per scale and class",
            f"{'scale':<12}{'class':<12}" + "".join(f"{title:>10}" for title, _ in columns),
        ]
        for scale, name, row in last["rows"]:
            lines.append(f"{scale:<12}{name:<12}" + "".join(f"{row[key]:>10.3f}" for _, key in columns))
        mean = last["mean"]
        lines.append(
            f"{'mean':<12}{'':<12}{mean['f1']:>10.3f}{mean['iou']:>10.3f}{'':>10}{'':>10}{mean['f1_tol']:>10.3f}"
        )
        rank_zero_info("\n".join(lines))

    def configure_optimizers(self) -> Any:
        """The configured optimizer over all parameters, with optional cosine annealing."""
        return configure_optimizer(self)
