"""A run restarted mid-epoch says whether it continues exactly where the checkpoint stopped.

The resume itself needs no callback: the training loaders
(:class:`~crackcascade.data.sampling.ReplayLoader`) have a position (epoch, pass, samples
trained) that Lightning's fit loop saves in every checkpoint and restores before the restarted epoch's
first batch, so the epoch goes on with the batches not yet trained, in the same order and with
the same augmentation. :class:`MidEpochResume` tells the user so, or warns where it cannot be so.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import CombinedLoader, rank_zero_info, rank_zero_warn

from crackcascade.data.sampling import ReplayLoader


def saved_loader_positions(checkpoint: dict[str, Any]) -> bool:
    """Whether a Lightning checkpoint holds the training loaders' positions (the fit loop's ``combined_loader``)."""
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    return bool((fit_loop.get("state_dict") or {}).get("combined_loader"))


class MidEpochResume(Callback):
    """On a restart mid-epoch, log that the epoch resumes after the batches already trained, or warn why not.

    It warns when a training loader is a :class:`~crackcascade.data.sampling.ReplayLoader` that
    cannot replay (its sampler is Lightning's ``DistributedSampler`` under DDP) or the checkpoint
    holds no loader positions (written before crackcascade saved them): the rest of that epoch
    then differs from an uninterrupted run. Lightning itself warns about loaders without a state.
    """

    def __init__(self) -> None:
        self._positions_saved: bool | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Forget the last run's checkpoint (Lightning restores the next one after ``setup``)."""
        self._positions_saved = None

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Note whether the checkpoint carries the loaders' positions."""
        self._positions_saved = saved_loader_positions(checkpoint)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report how the restarted epoch continues."""
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if not 0 < done < trainer.num_training_batches or trainer.train_dataloader is None:
            return  # a fresh start, or a checkpoint from the end of an epoch: the next epoch starts anew
        loaders = CombinedLoader(trainer.train_dataloader).flattened
        ours = [loader for loader in loaders if isinstance(loader, ReplayLoader)]
        if not ours:
            return
        epoch = trainer.current_epoch
        cannot = [loader for loader in ours if loader.replay_sampler is None]
        if cannot:
            sampler = type(cannot[0].sampler).__name__
            rank_zero_warn(
                f"resuming epoch {epoch} after its first {done} batches, but its loaders cannot replay the order "
                f"with a {sampler}: the rest of the epoch differs from an uninterrupted run"
            )
        elif not self._positions_saved:
            rank_zero_warn(
                f"resuming epoch {epoch} after its first {done} batches from a checkpoint without the loaders' "
                "positions (written by an older crackcascade): the epoch's order starts again; resume from an "
                "end-of-epoch checkpoint to replay exactly"
            )
        elif len(ours) == len(loaders):
            rank_zero_info(f"resuming epoch {epoch} after its first {done} batches, in the same order")
