"""The training losses: masked multi-task cross-entropy (classifier) and BCE/Dice on sigmoid masks (U-Net)."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from crackcascade.labels import IGNORE_INDEX, task_index
from crackcascade.metrics.segmentation import class_targets


def masked_cross_entropy(
    logits: dict[str, Tensor],
    labels: Tensor,
    weights: dict[str, float] | None = None,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy per task over the images labelled for it, and their weighted sum.

    Each task's loss is the mean over its labelled images (label ``-1`` means unknown). A task
    with no labelled image in the batch contributes an exact zero that still depends on its
    head, so every parameter takes part in the graph (DDP needs that).

    Args:
        logits: Task name -> ``(B, C_task)`` logits.
        labels: ``(B, len(TASK_NAMES))`` label vectors.
        weights: Task name -> loss weight (default 1).
        label_smoothing: Passed to :func:`torch.nn.functional.cross_entropy`.

    Returns:
        The total loss and the per-task losses.
    """
    total = labels.new_zeros((), dtype=torch.float32)
    per_task: dict[str, Tensor] = {}
    for task, task_logits in logits.items():
        target = labels[:, task_index(task)]
        summed = F.cross_entropy(
            task_logits.float(),
            target,
            ignore_index=IGNORE_INDEX,
            reduction="sum",
            label_smoothing=label_smoothing,
        )
        count = (target != IGNORE_INDEX).sum().clamp(min=1)
        per_task[task] = summed / count
        total = total + (1.0 if weights is None else weights.get(task, 1.0)) * per_task[task]
    return total, per_task


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
