"""Mid-epoch resume: the loaders' positions stay in step with training, and a restarted epoch says how it goes on.

The training loaders (:class:`~crackcascade.data.sampling.ReplayLoader`) have a position
(epoch, pass, samples trained) that Lightning's fit loop saves in every checkpoint and restores
before the restarted epoch's first batch, so the epoch goes on with the batches not yet trained,
in the same order and with the same augmentation. :class:`MidEpochResume` gives back the batch
of a step that raised (Lightning trains it again after a restart) and tells the user how a
restarted epoch continues.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import CombinedLoader, rank_zero_info, rank_zero_warn

from crackcascade.data.sampling import ReplayLoader


def saved_loader_positions(checkpoint: dict[str, Any]) -> bool:
    """Whether a Lightning checkpoint holds the training loaders' positions (the fit loop's ``combined_loader``)."""
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    return bool((fit_loop.get("state_dict") or {}).get("combined_loader"))


def training_loaders(trainer: pl.Trainer) -> list[Any]:
    """Every training loader of ``trainer`` (each one of a dict or list of loaders), through public attributes."""
    if trainer.train_dataloader is None:
        return []
    return list(CombinedLoader(trainer.train_dataloader).flattened)


def epoch_batches(trainer: pl.Trainer) -> tuple[int, int]:
    """Batches of the current epoch handed to training, and those whose step ran to the end (Lightning's progress)."""
    current = trainer.fit_loop.epoch_loop.batch_progress.current
    # The batch loop's tracker counts processed steps too; Lightning types it as the base class.
    return current.ready, current.processed  # type: ignore[attr-defined]


class MidEpochResume(Callback):
    """Keep the loaders' positions in step with training, and say how a restarted epoch continues.

    When a training step raises (Ctrl-C, a NaN loss, out of memory), its batch was handed out but
    not trained, and Lightning trains it again after a restart: the loaders give it back before
    a checkpoint is saved on the exception (Lightning calls checkpoint callbacks last).

    On a restart mid-epoch it logs that the epoch resumes after the batches already trained. It
    warns instead when a :class:`~crackcascade.data.sampling.ReplayLoader` cannot replay (its
    sampler is Lightning's ``DistributedSampler`` under DDP) or the checkpoint holds no loader
    positions (written before crackcascade saved them): the rest of that epoch then differs
    from an uninterrupted run. Lightning itself warns about loaders without a state.
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
        # Steps that ran to the end: a checkpoint saved in on_train_batch_end has not yet counted its step completed.
        _, done = epoch_batches(trainer)
        if not 0 < done < trainer.num_training_batches:
            return  # a fresh start, or a checkpoint from the end of an epoch: the next epoch starts anew
        loaders = training_loaders(trainer)
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

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Give back the batch of a training step that raised, so a checkpoint saved now resumes with it."""
        handed_out, trained = epoch_batches(trainer)
        if trainer.state.fn != TrainerFn.FITTING or trained >= handed_out:
            return
        for loader in training_loaders(trainer):
            if isinstance(loader, ReplayLoader):
                loader.give_back()
