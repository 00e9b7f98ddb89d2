"""W&B validation previews: a few validation images with what the model made of them, each epoch.

The models add these callbacks themselves (``configure_callbacks``), so every trainer with a
:class:`~pytorch_lightning.loggers.WandbLogger` gets previews, from the CLI or not; without one
they collect nothing. Only global rank zero collects, outside the sanity check, and nothing
waits on another process. Validation loaders are not shuffled, so the same images are shown
every epoch.

The models' ``validation_step`` returns what a preview needs (the batch's images and the
model's output); the previews are logged in ``on_validation_end``, after the model's epoch end
has computed that epoch's metrics (the U-Net its thresholds, with which its masks are drawn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytorch_lightning as pl
import torch
from torch import Tensor

from crackcascade.labels import IGNORE_INDEX, get_task, task_index
from crackcascade.tracking import log_image_previews, log_mask_previews, previews_wanted, shrink


class ValidationPreviews(pl.Callback):
    """Collect previews from the validation steps' outputs on rank zero with W&B, and log them once per epoch.

    Subclasses say what to keep from a step (:meth:`collect`) and how to log it (:meth:`log_previews`).
    """

    def __init__(self) -> None:
        self.active = False

    def reset(self) -> None:
        """Forget what was collected."""

    def collect(self, pl_module: pl.LightningModule, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        """Keep what a validation step's ``outputs`` and ``batch`` show (subclasses)."""

    def log_previews(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log what was collected (subclasses)."""

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start collecting when a W&B logger is attached (rank zero, outside the sanity check)."""
        self.reset()
        self.active = previews_wanted(trainer)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keep the previews of a validation step that returned its outputs."""
        if self.active and isinstance(outputs, Mapping):
            self.collect(pl_module, outputs, batch)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the epoch's previews, then forget them."""
        if self.active:
            self.log_previews(trainer, pl_module)
        self.active = False
        self.reset()


class TaskPreviews(ValidationPreviews):
    """The first validation image labelled for each task, captioned with prediction and truth (``val_previews``).

    Reads ``outputs = {"images": (B, 3, H, W), "labels": (B, tasks), "logits": {task: (B, C)}}``
    (the tasks the data labels, in head order).
    """

    def __init__(self) -> None:
        super().__init__()
        self.previews: dict[str, tuple[Tensor, str]] = {}
        self.order: list[str] = []

    def reset(self) -> None:
        """Forget the collected images."""
        self.previews, self.order = {}, []

    def collect(self, pl_module: pl.LightningModule, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        """Keep the first labelled image of each task not shown yet."""
        images, labels, logits = outputs["images"], outputs["labels"], outputs["logits"]
        for task in logits:
            if task not in self.order:
                self.order.append(task)
            if task in self.previews:
                continue
            labelled = (labels[:, task_index(task)] != IGNORE_INDEX).nonzero()
            if len(labelled) == 0:
                continue
            i = int(labelled[0])
            classes = get_task(task).classes
            probabilities = logits[task][i].detach().float().softmax(0)
            best = int(probabilities.argmax())
            caption = (
                f"{task}: predicted {classes[best]} ({float(probabilities[best]):.2f}), "
                f"true {classes[int(labels[i, task_index(task)])]}"
            )
            (image,) = shrink(images[i].to(torch.uint8))
            self.previews[task] = (image, caption)

    def log_previews(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the images in head order as ``val_previews``."""
        shown = [self.previews[t] for t in self.order if t in self.previews]
        log_image_previews(trainer, "val_previews", [i for i, _ in shown], [c for _, c in shown])


class MaskModel(Protocol):
    """What :class:`MaskPreviews` needs of a segmentation model."""

    classes: list[str]

    def class_map(self, probabilities: Tensor) -> Tensor:
        """``(H, W)`` class map of ``(C, H, W)`` probabilities at the model's thresholds."""
        ...


class MaskPreviews(ValidationPreviews):
    """The first validation photos of each scale with their true and predicted masks (``val_preview_<scale>``).

    Reads ``outputs = {"probabilities": (B, C, H, W), "scales": [scale per image]}`` and the
    batch's ``image``, ``mask`` and ``path``; the predicted masks are drawn at log time, with the
    thresholds the model chose on that epoch's validation.

    Args:
        images_per_scale: Photos shown per scale.
    """

    def __init__(self, images_per_scale: int = 4) -> None:
        super().__init__()
        self.images_per_scale = images_per_scale
        self.previews: dict[str, list[tuple[Tensor, Tensor, Tensor, str]]] = {}

    def reset(self) -> None:
        """Forget the collected photos."""
        self.previews = {}

    def collect(self, pl_module: pl.LightningModule, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        """Keep the first photos of each scale, cropped to the photo and scaled down."""
        probabilities: Tensor = outputs["probabilities"]
        scales: Sequence[str] = outputs["scales"]
        mask = batch["mask"]
        for i, scale in enumerate(scales):
            kept = self.previews.setdefault(scale, [])
            if len(kept) >= self.images_per_scale:
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

    def log_previews(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log photo, true mask and predicted mask per scale."""
        model: MaskModel = pl_module  # type: ignore[assignment]
        for scale, kept in self.previews.items():
            shown = [(image, truth, model.class_map(probs), Path(path).name) for image, truth, probs, path in kept]
            log_mask_previews(trainer, f"val_preview_{scale}", shown, model.classes, IGNORE_INDEX)
