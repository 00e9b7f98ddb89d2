"""A run checks its output folders before the first epoch, and fails with one line if it could not save."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from crackcascade.outputs import preflight


class PreflightCheck(Callback):
    """Run :func:`~crackcascade.outputs.preflight` once, at the start of ``fit``, on rank zero.

    The ``crackcascade`` command checks earlier (before the loggers start writing) and then marks
    the check :attr:`done`, so it is not repeated.

    Args:
        check_output: Check the folders; False turns the check off.
    """

    def __init__(self, check_output: bool = True) -> None:
        self.check_output = check_output
        self.done = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the output folders before ``fit`` trains, unless already checked."""
        if stage == "fit" and self.check_output and not self.done and trainer.is_global_zero:
            preflight(trainer, pl_module)
        self.done = True
