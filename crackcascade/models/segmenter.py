"""CrackSegmenter: a U-Net that segments cracks (and other damage classes) pixel by pixel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, cast

import segmentation_models_pytorch as smp
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MeanMetric

from crackcascade.callbacks.previews import MaskPreviews
from crackcascade.checkpoints.weights import load_encoder_weights
from crackcascade.data.sampling import has_samples
from crackcascade.errors import ConfigError
from crackcascade.hardware import CompileMode
from crackcascade.labels import CRACK, IGNORE_INDEX
from crackcascade.measure import measure_cracks
from crackcascade.metrics.distributed import names_on_all_ranks, unupdated_metrics_ok
from crackcascade.metrics.segmentation import (
    SCORE_NAMES,
    THRESHOLD_GRID,
    SegmentationMetrics,
    best_threshold_index,
    f1_curve,
    segmentation_scores,
)
from crackcascade.models.base import IMAGENET_MEAN, IMAGENET_STD, TaskModule, encoder_input_stats
from crackcascade.models.losses import segmentation_loss
from crackcascade.reliability import check_finite_loss
from crackcascade.tiling import PAD_MULTIPLE, pad_to_multiple, predict_tiled

Batch = dict[str, Any]
EVAL_STAGES: tuple[str, ...] = ("val", "test")


class CrackSegmenter(TaskModule):
    """U-Net crack segmentation with one sigmoid channel per damage class (Bai et al., 2020).

    Images arrive as ``uint8`` and are normalized inside the module with the mean and std of the
    encoder's pretrained weights (:func:`~crackcascade.models.base.encoder_input_stats`: a
    pretrained ``tu-`` encoder's timm config, else ImageNet's); sizes that are not multiples of
    32 are padded by reflection inside :meth:`forward` and the output is cropped back, so
    validation, test and prediction take any size.

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
            bf16-mixed``): 3.3x per training step on a CPU with AMX (see docs/performance.md).
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

    threshold: Tensor
    offline_hparams: ClassVar[dict[str, Any]] = {**TaskModule.offline_hparams, "encoder_weights": None}
    legacy_input_stats = (IMAGENET_MEAN, IMAGENET_STD)  # what every U-Net normalized with before it was recorded
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
        super().__init__(
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
            scheduler=scheduler,
            channels_last=channels_last,
            compile=compile,
            compile_mode=compile_mode,
        )
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
        self.prepare_network(self.model)  # in place: the state-dict keys stay "model.*"
        pretrained = bool(encoder_weights or pretrained_weights)
        self.set_input_stats(*encoder_input_stats(encoder_name, self.model.encoder, pretrained))
        self.grid: tuple[float, ...] = tuple(sorted({*THRESHOLD_GRID, *([threshold] if threshold is not None else [])}))
        initial = 0.5 if threshold is None else threshold
        self.register_buffer("threshold", torch.full((len(classes),), initial, dtype=torch.float32))
        # Created per scale as scales are seen; keyed "<stage>_<scale>".
        self.seg_metrics = nn.ModuleDict()
        self.seg_losses = nn.ModuleDict()
        self.stage_losses = nn.ModuleDict({stage: MeanMetric() for stage in EVAL_STAGES})
        self._scales: dict[str, list[str]] = {stage: [] for stage in EVAL_STAGES}
        self.last_metrics: dict[str, dict[str, Any]] = {}

    def _check_options(self) -> None:
        hp = self.hparams
        if not self.classes or len(set(self.classes)) != len(self.classes) or len(self.classes) > 255:
            raise ConfigError(f"model.classes must be 1 to 255 distinct names, got {self.classes}")
        losses = ("bce", "dice", "bce+dice")
        if hp["loss"] not in losses:
            raise ConfigError(f"model.loss must be one of {', '.join(losses)}, got {hp['loss']!r}")
        self.optimization.check()
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

    def forward(self, images: Tensor) -> Tensor:
        """Return ``(B, C, H, W)`` logits for ``(B, 3, H, W)`` images (``uint8`` or float 0-255) of any size."""
        height, width = images.shape[-2:]
        inputs = pad_to_multiple(self.normalize(images), PAD_MULTIPLE)
        logits = self.model(self.to_layout(inputs))
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
        found = getattr(self.attached_datamodule(), "classes", None)
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
        return getattr(self.attached_datamodule(), "eval_scales", None)

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

    def _eval_step(self, batch: Batch, stage: str, dataloader_idx: int) -> Batch | None:
        if not has_samples(batch):
            return None
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
        # For the W&B previews (callbacks.previews.MaskPreviews).
        return {"probabilities": probabilities, "scales": scales}

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Batch | None:
        """Loss and threshold-grid counts per scale; returns what the W&B previews show."""
        return self._eval_step(batch, "val", dataloader_idx)

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

    def on_validation_epoch_end(self) -> None:
        """Choose the thresholds (unless fixed) and log the scores per scale and class.

        With a W&B logger, the first :attr:`preview_images` photos of each scale are logged as
        ``val_preview_<scale>``: photo, true mask and predicted mask (at the thresholds just chosen;
        see :meth:`preview_callback`).
        """
        self._epoch_end("val")
        if self.trainer.state.fn == TrainerFn.VALIDATING:  # a fit prints its last one at the end
            self.print_summary("val")

    def on_test_epoch_end(self) -> None:
        """Log test scores at the validation thresholds and print the table."""
        self._epoch_end("test")
        self.print_summary("test")

    def preview_callback(self) -> MaskPreviews:
        """The W&B previews: the first :attr:`preview_images` photos of each scale with true and predicted masks."""
        return MaskPreviews(self.preview_images)

    def summary_lines(self, stage: str) -> list[str]:
        """A table of a stage's last scores: rows scale/class, columns the main scores."""
        last = self.last_metrics.get(stage)
        if not last:
            return []
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
        return lines
