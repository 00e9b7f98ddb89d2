"""The model's random draws in a training step (dropout) come from the seed, the epoch and the batch alone."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from crackcascade.data.sampling import global_seed, mix_seed


class StepSeeds(Callback):
    """Seed torch's RNG before every training step from ``(seed, epoch, batch index)``.

    How far the global RNG has advanced by a given step depends on the process's history (the
    sanity check, workers, a restart); seeding each step from its place in the run makes a run
    resumed from a checkpoint draw the same dropout masks as one that was never interrupted.
    Without a seed (``seed_everything``) it does nothing.
    """

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Seed this step's model randomness."""
        seed = global_seed()
        if seed is not None:
            torch.manual_seed(mix_seed(seed, trainer.current_epoch, batch_idx))
