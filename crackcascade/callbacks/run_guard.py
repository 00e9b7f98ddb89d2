"""The callback the ``crackcascade`` command adds to every Trainer: the run guards, composed into one."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from crackcascade.callbacks.preflight import PreflightCheck
from crackcascade.callbacks.resume import MidEpochResume
from crackcascade.callbacks.skip_report import SkipReport
from crackcascade.callbacks.step_seeds import StepSeeds


class RunGuard(Callback):
    """Runs that fail early and clearly, resume exactly and never train on garbage: four guards in one callback.

    * :class:`~crackcascade.callbacks.PreflightCheck`: the output folders are writable and have
      room, checked before the first epoch;
    * :class:`~crackcascade.callbacks.StepSeeds`: the model's random draws (dropout) are seeded
      from ``(seed, epoch, batch)``, so a resumed run replays them;
    * :class:`~crackcascade.callbacks.MidEpochResume`: the loaders' positions, which checkpoints
      hold (see :class:`~crackcascade.data.sampling.ReplayLoader`), leave out a batch whose step
      raised; a run restarted mid-epoch says it goes on after the batches already trained, or
      warns why it cannot;
    * :class:`~crackcascade.callbacks.SkipReport`: the samples skipped under
      ``on_error="skip"`` are reported at the end of each epoch.

    The ``crackcascade`` command adds it to every Trainer; add it yourself to a Trainer you build
    (or any of the four alone). SIGTERM is Lightning's: it finishes the current batch, saves the
    checkpoints configured with ``save_on_exception`` and stops; the command then prints where
    the checkpoint is and exits with status 143 (see :mod:`crackcascade.cli`).

    Args:
        check_output: Run the pre-flight check of the output folders at the start of ``fit``.
    """

    def __init__(self, check_output: bool = True) -> None:
        self.preflight = PreflightCheck(check_output)
        self.seeds = StepSeeds()
        self.resume = MidEpochResume()
        self.skips = SkipReport()

    @property
    def guards(self) -> tuple[Callback, ...]:
        """The guards, in the order their hooks run."""
        return (self.preflight, self.seeds, self.resume, self.skips)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Pre-flight check (``fit``); forget the last run's checkpoint."""
        for guard in self.guards:
            guard.setup(trainer, pl_module, stage)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Note whether the checkpoint holds the loaders' positions."""
        for guard in self.guards:
            guard.on_load_checkpoint(trainer, pl_module, checkpoint)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report how a restarted epoch continues."""
        for guard in self.guards:
            guard.on_train_start(trainer, pl_module)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Seed the step; count skipped samples."""
        for guard in self.guards:
            guard.on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Count skipped validation samples."""
        for guard in self.guards:
            guard.on_validation_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)

    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Count skipped test samples."""
        for guard in self.guards:
            guard.on_test_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)

    def on_predict_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Count skipped photos."""
        for guard in self.guards:
            guard.on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the training samples skipped this epoch."""
        for guard in self.guards:
            guard.on_train_epoch_end(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the validation samples skipped this epoch."""
        for guard in self.guards:
            guard.on_validation_epoch_end(trainer, pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the test samples skipped."""
        for guard in self.guards:
            guard.on_test_epoch_end(trainer, pl_module)

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the photos skipped."""
        for guard in self.guards:
            guard.on_predict_epoch_end(trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Give back the batch of a training step that raised (before checkpoints are saved on the exception)."""
        for guard in self.guards:
            guard.on_exception(trainer, pl_module, exception)
