"""Experiment tracking with Weights & Biases: the resolved config, validation previews, confusion matrices.

Everything here does nothing unless the trainer has a
:class:`~pytorch_lightning.loggers.WandbLogger`, and imports ``wandb`` (an optional extra) only
then. It runs on global rank zero only and makes no collective call, so under DDP no process
waits on another and nothing is logged twice.

Media are logged without a step: the W&B logger then files them under the latest
``trainer/global_step`` that Lightning logged, beside that epoch's metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F  # noqa: N812
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor

PREVIEW_SIDE = 384
"""Longest side of a preview image: full-resolution photos would make every epoch's log megabytes."""


def wandb_loggers(trainer: pl.Trainer | None) -> list[WandbLogger]:
    """The trainer's W&B loggers (none without a trainer)."""
    if trainer is None:
        return []
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


def previews_wanted(trainer: pl.Trainer | None) -> bool:
    """Whether this process should collect validation previews: rank zero, a W&B logger, not the sanity check."""
    return (
        trainer is not None and trainer.is_global_zero and not trainer.sanity_checking and bool(wandb_loggers(trainer))
    )


def push_config(trainer: pl.Trainer, config: Mapping[str, Any]) -> None:
    """Put the fully resolved CLI config into each W&B run's config (call on rank zero only).

    A sweep's own parameters (``model.lr``) stay as the agent set them; the resolved config
    sits beside them under its top-level keys (``model``, ``data``, ``trainer``, ...).
    """
    for logger in wandb_loggers(trainer):
        logger.experiment.config.update(dict(config), allow_val_change=True)


def log_confusion_matrices(trainer: pl.Trainer, stage: str, matrices: Mapping[str, Mapping[str, Any]]) -> None:
    """Log one W&B confusion-matrix chart per task, ``<stage>_confusion_<task>`` (rank zero only).

    The charts are wandb's own (:func:`wandb.plot.confusion_matrix`), fed with the (truth,
    prediction) pairs that the summed matrix stands for.

    Args:
        trainer: The trainer.
        stage: ``val`` or ``test``.
        matrices: Task -> ``{"classes": [...], "matrix": rows of counts, rows = truth}``, as in
            ``confusion_<stage>.json``.
    """
    loggers = wandb_loggers(trainer)
    if not loggers or not trainer.is_global_zero or not matrices:
        return
    import wandb

    charts: dict[str, Any] = {}
    for task, entry in matrices.items():
        classes = list(entry["classes"])
        counts = np.asarray(entry["matrix"], dtype=np.int64)
        truth, predicted = np.indices(counts.shape)
        charts[f"{stage}_confusion_{task}"] = wandb.plot.confusion_matrix(
            y_true=np.repeat(truth.ravel(), counts.ravel()).tolist(),
            preds=np.repeat(predicted.ravel(), counts.ravel()).tolist(),
            class_names=classes,
            title=f"{stage} {task}",
        )
    for logger in loggers:
        logger.log_metrics(charts)


def shrink(image: Tensor, *planes: Tensor, side: int = PREVIEW_SIDE) -> tuple[Tensor, ...]:
    """A photo and its per-pixel planes scaled down together so the longest side is at most ``side``.

    Args:
        image: ``(3, H, W)`` ``uint8`` photo.
        *planes: ``(H, W)`` integer masks (resampled nearest-neighbour, never blended) or
            ``(C, H, W)`` float maps such as probabilities (resampled bilinearly).
        side: Longest side of the result.

    Returns:
        The image and planes, on the CPU, at the reduced size (unchanged if already small).
    """
    height, width = image.shape[-2:]
    scale = min(1.0, side / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    out = [image.detach().cpu(), *(p.detach().cpu() for p in planes)]
    if scale == 1.0:
        return tuple(out)
    resized = [F.interpolate(out[0][None].float(), size, mode="bilinear", antialias=True)[0].round().byte()]
    for plane in out[1:]:
        if plane.is_floating_point():
            resized.append(F.interpolate(plane[None].float(), size, mode="bilinear", antialias=True)[0])
        else:
            resized.append(F.interpolate(plane[None, None].float(), size, mode="nearest")[0, 0].to(plane.dtype))
    return tuple(resized)


def log_mask_previews(
    trainer: pl.Trainer,
    key: str,
    previews: Sequence[tuple[Tensor, Tensor, Tensor, str]],
    classes: Sequence[str],
    ignore_index: int = -1,
) -> None:
    """Log photos with their true and predicted masks as W&B mask overlays (rank zero only).

    Uses :meth:`WandbLogger.log_image` with ``masks=``: in the W&B media panel each photo has a
    ``ground_truth`` and a ``prediction`` layer that can be toggled and compared.

    Args:
        trainer: The trainer.
        key: Media key, e.g. ``val_preview_pixel``.
        previews: ``(image (3, H, W) uint8, truth (H, W) class indices, predicted (H, W) class
            indices, caption)`` per photo; class ``i + 1`` is ``classes[i]``, 0 background.
        classes: The class names.
        ignore_index: Truth value of pixels that are not scored; shown as their own layer class.
    """
    loggers = wandb_loggers(trainer)
    if not loggers or not trainer.is_global_zero or not previews:
        return
    labels = {0: "background", **{i + 1: name for i, name in enumerate(classes)}}
    ignored = len(classes) + 1
    images, masks, captions = [], [], []
    for image, truth, predicted, caption in previews:
        truth = torch.where(truth == ignore_index, ignored, truth)
        layer_labels = {**labels, ignored: "not scored"} if bool((truth == ignored).any()) else labels
        images.append(image.permute(1, 2, 0).numpy())
        masks.append(
            {
                "ground_truth": {"mask_data": truth.numpy().astype(np.uint8), "class_labels": layer_labels},
                "prediction": {"mask_data": predicted.numpy().astype(np.uint8), "class_labels": labels},
            }
        )
        captions.append(caption)
    for logger in loggers:
        logger.log_image(key=key, images=images, masks=masks, caption=captions)


def log_image_previews(trainer: pl.Trainer, key: str, images: Sequence[Tensor], captions: Sequence[str]) -> None:
    """Log ``(3, H, W)`` ``uint8`` photos with captions (rank zero only)."""
    loggers = wandb_loggers(trainer)
    if not loggers or not trainer.is_global_zero or not images:
        return
    arrays = [image.permute(1, 2, 0).numpy() for image in images]
    for logger in loggers:
        logger.log_image(key=key, images=arrays, caption=list(captions))
