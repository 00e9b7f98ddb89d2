"""A training time budget whose learning rate anneals to zero exactly when the time is up."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

from crackcascade.errors import ConfigError

Anneal = Literal["cosine", "linear", "none"]


class TimeBudget(pl.Callback):
    """Train for a wall-clock budget, annealing the learning rate over that budget instead of over epochs.

    ``scheduler: cosine`` anneals over ``trainer.max_epochs``, which only fits a time budget if one
    knows the machine's speed beforehand: the same 30 minutes are 250 epochs on one 2-core CPU and
    200 on another, and a run stopped by ``max_time`` halfway down its cosine ends at a high learning
    rate. This callback sets every parameter group's learning rate before each training step from
    the fraction of the budget spent, ``lr = base_lr * f(elapsed / budget)`` with ``f`` a half cosine
    (or linear ramp) from 1 to 0, and stops training once the budget is spent. Only time spent in
    training steps and the validations between them counts; elapsed time is saved in checkpoints,
    so a resumed run continues the same schedule.

    Use it with ``model.scheduler: none`` and a large ``trainer.max_epochs`` (e.g. ``-1``)::

        trainer:
          max_epochs: -1
          callbacks:
            - class_path: crackcascade.callbacks.TimeBudget
              init_args: {minutes: 30}

    Args:
        minutes: The training budget.
        anneal: ``cosine`` (half cosine to zero), ``linear`` (straight line to zero) or ``none`` (keep
            the learning rate; only stop at the deadline).
        clock: Seconds counter (``time.perf_counter``); tests pass a fake one.
    """

    def __init__(self, minutes: float, anneal: Anneal = "cosine", clock: Callable[[], float] | None = None) -> None:
        if not minutes > 0:
            raise ConfigError(f"TimeBudget.minutes must be > 0, got {minutes}")
        if anneal not in ("cosine", "linear", "none"):
            raise ConfigError(f"TimeBudget.anneal must be cosine, linear or none, got {anneal!r}")
        self.seconds = float(minutes) * 60.0
        self.anneal = anneal
        self.clock = clock or time.perf_counter
        self.elapsed = 0.0
        self.base_lrs: list[float] | None = None
        self._since: float | None = None

    @property
    def progress(self) -> float:
        """Fraction of the budget spent, in ``[0, 1]``."""
        running = 0.0 if self._since is None else self.clock() - self._since
        return min(1.0, (self.elapsed + running) / self.seconds)

    def factor(self, progress: float) -> float:
        """Learning-rate multiplier at a fraction ``progress`` of the budget."""
        if self.anneal == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.anneal == "linear":
            return 1.0 - progress
        return 1.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record the base learning rates (unless restored from a checkpoint) and start the clock."""
        if getattr(pl_module, "hparams", {}).get("scheduler", "none") != "none":
            raise ConfigError(
                "TimeBudget anneals the learning rate itself; set model.scheduler none "
                f"(got {pl_module.hparams['scheduler']!r})"
            )
        groups = [group for optimizer in trainer.optimizers for group in optimizer.param_groups]
        if self.base_lrs is None or len(self.base_lrs) != len(groups):
            self.base_lrs = [float(group["lr"]) for group in groups]
        self._since = self.clock()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Set every learning rate for this step from the budget spent."""
        # Rank zero's clock decides, so all DDP ranks step with the same learning rate.
        progress = float(trainer.strategy.broadcast(self.progress, src=0))
        assert self.base_lrs is not None  # set in on_train_start
        groups = [group for optimizer in trainer.optimizers for group in optimizer.param_groups]
        for group, base in zip(groups, self.base_lrs, strict=True):
            group["lr"] = base * self.factor(progress)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Stop once the budget is spent (validation still runs after the last step)."""
        spent = bool(trainer.strategy.broadcast(self.progress >= 1.0, src=0))
        if spent and not trainer.should_stop:
            trainer.should_stop = True
            rank_zero_info(f"TimeBudget: {self.seconds / 60:g} minutes spent; stopping at step {trainer.global_step}")

    def _pause(self) -> None:
        if self._since is not None:
            self.elapsed += self.clock() - self._since
            self._since = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop the clock."""
        self._pause()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Stop the clock, so a checkpoint written on the way out holds the time really spent."""
        self._pause()

    def state_dict(self) -> dict[str, Any]:
        """Elapsed seconds and base learning rates, so a resumed run continues the schedule."""
        running = 0.0 if self._since is None else self.clock() - self._since
        return {"elapsed": self.elapsed + running, "base_lrs": self.base_lrs, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore elapsed time and base learning rates from a checkpoint."""
        self.elapsed = float(state_dict.get("elapsed", 0.0))
        base_lrs = state_dict.get("base_lrs")
        self.base_lrs = None if base_lrs is None else [float(v) for v in base_lrs]
