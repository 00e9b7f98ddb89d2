"""Samples left out under ``on_error="skip"`` are counted and reported at the end of each epoch."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


def skipped_messages(batch: Any) -> list[str]:
    """Messages of the samples left out of a batch (``batch["skipped"]``), also inside a CombinedLoader batch."""
    if not isinstance(batch, Mapping):
        return []
    found = list(batch.get("skipped", []))
    for value in batch.values():
        if isinstance(value, Mapping):
            found += skipped_messages(value)
    return found


class SkipReport(Callback):
    """Warn at the end of each epoch of every stage how many samples could not be loaded, by kind.

    The loaders (:class:`~crackcascade.data.sampling.SkipCollate`) list each skipped sample's
    one-line message under ``batch["skipped"]``; one warning per stage and epoch sums them up and
    quotes the first. Validation during the sanity check is not counted.
    """

    def __init__(self) -> None:
        self._skips: dict[str, list[str]] = {}

    def _count(self, stage: str, batch: Any) -> None:
        messages = skipped_messages(batch)
        if messages:
            self._skips.setdefault(stage, []).extend(messages)

    def _report(self, trainer: pl.Trainer, stage: str) -> None:
        messages = self._skips.pop(stage, [])
        if not messages or trainer.sanity_checking:
            return
        kinds = Counter(m.split(": ", 1)[-1].split(" (")[0] for m in messages)
        summary = "; ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        rank = f"rank {trainer.global_rank}: " if trainer.world_size > 1 else ""
        # Every rank warns: each skipped its own samples, and a collective here could deadlock.
        warnings.warn(
            f"{rank}epoch {trainer.current_epoch} {stage}: skipped {len(messages)} samples that could not be "
            f"loaded (on_error=skip): {summary}; first: {messages[0]}",
            UserWarning,
            stacklevel=2,
        )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Count skipped training samples."""
        self._count("train", batch)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Count skipped validation samples (not during the sanity check)."""
        if not trainer.sanity_checking:
            self._count("val", batch)

    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Count skipped test samples."""
        self._count("test", batch)

    def on_predict_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Count skipped photos."""
        self._count("predict", batch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the training samples skipped this epoch."""
        self._report(trainer, "train")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the validation samples skipped this epoch."""
        self._report(trainer, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the test samples skipped."""
        self._report(trainer, "test")

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the photos skipped."""
        self._report(trainer, "predict")
