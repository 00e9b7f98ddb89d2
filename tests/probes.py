"""A callback the multi-process tests add from the command line to see which samples each process got."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class SampleProbe(Callback):
    """Record the samples each process trains and validates on, per epoch, in ``<out_dir>/rank<k>.json``.

    Training samples are ``"<loader>:<path>"`` (the task of a CombinedLoader part, or ``all``);
    validation samples are their paths (sanity-check batches are not recorded).
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.seen: dict[str, list[str]] = {}

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        parts = [("all", batch)] if "image" in batch else list(batch.items())
        seen = self.seen.setdefault(f"train{trainer.current_epoch}", [])
        seen.extend(f"{key}:{path}" for key, part in parts if part is not None for path in part["path"])

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not trainer.sanity_checking:
            self.seen.setdefault(f"val{trainer.current_epoch}", []).extend(batch["path"])

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        folder = Path(self.out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))
