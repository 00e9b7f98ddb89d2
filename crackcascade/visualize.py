"""Writing predictions for people: per-image CSV/JSON records."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_info


class PredictionWriter(BasePredictionWriter):
    """Write the records returned by ``predict_step`` as ``predictions.json`` and ``predictions.csv``.

    The CSV has one row per image: ``path``, then per task the predicted class and its
    probability; the JSON keeps every class probability. Under DDP each rank writes its own
    ``predictions.rank<k>.*`` files, so no rank waits on another and nothing is written twice.

    Args:
        output_dir: Folder for the files; defaults to ``<log dir>/predictions``.
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir

    def _folder(self, trainer: pl.Trainer) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir) / "predictions"

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """Flatten the per-batch record lists and write them."""
        records = [record for batch in predictions for record in batch]
        folder = self._folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        json_path = folder / f"predictions{suffix}.json"
        json_path.write_text(json.dumps(records, indent=1))
        write_records_csv(records, folder / f"predictions{suffix}.csv")
        rank_zero_info(f"wrote {len(records)} predictions to {json_path} and {json_path.with_suffix('.csv')}")


def write_records_csv(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Write classification records as CSV: path, then ``<task>`` and ``<task>_probability`` columns."""
    tasks = list(records[0]["tasks"]) if records else []
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", *[c for t in tasks for c in (t, f"{t}_probability")]])
        for record in records:
            cells = [record["path"]]
            for task in tasks:
                cells += [record["tasks"][task]["class"], f"{record['tasks'][task]['probability']:.6f}"]
            writer.writerow(cells)
