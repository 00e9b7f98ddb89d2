"""Numerical faults: training stops at the first NaN or infinite loss, before the update that would spread it.

:func:`check_finite_loss`, which the models call in every training step, names the global step,
the task or loss term and the batch's files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from crackcascade.errors import NumericalError


def check_finite_loss(
    module: pl.LightningModule,
    loss: Tensor,
    terms: Mapping[str, Tensor] | Callable[[], Mapping[str, Tensor]],
    batch: Mapping[str, Any],
) -> None:
    """Stop training at a NaN or infinite loss, before the update that would spread it to the weights.

    Reading the loss's finiteness is a device-to-host copy of one value per step, a sync on a GPU.
    That is the price of not taking a single step on garbage: by the time an asynchronous check
    reported, the optimizer would have written NaN into the weights (and into a checkpoint saved
    on the error). The progress bar reads the loss every step already.

    Args:
        module: The module being trained (for the step and epoch).
        loss: The scalar loss of the step.
        terms: Its named parts (a task's loss, a class's BCE or Dice), or a function computing
            them, called only when the loss is not finite.
        batch: The batch, whose ``path`` entries name the files.

    Raises:
        NumericalError: One line with the global step, the non-finite terms and the batch's files.
    """
    if bool(torch.isfinite(loss.detach())):
        return
    parts = terms() if callable(terms) else terms
    bad = [f"{name} {float(value):g}" for name, value in parts.items() if not bool(torch.isfinite(value).all())]
    which = "non-finite " + ", ".join(bad) if bad else "every term finite but their sum not"
    paths = [str(p) for p in batch.get("path", [])]
    files = ", ".join(paths[:4]) + (f" and {len(paths) - 4} more" if len(paths) > 4 else "")
    trainer = module.trainer
    where = f"global step {trainer.global_step} (epoch {trainer.current_epoch})"
    raise NumericalError(
        f"training loss is {float(loss):g} at {where}: {which}; batch files: {files or 'unnamed'}; "
        "stopped before the update (lower --model.lr, set --trainer.gradient_clip_val, or check these files)"
    )
