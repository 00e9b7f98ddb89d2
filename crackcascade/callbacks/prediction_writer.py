"""Writing predictions for people: per-image CSV/JSON records, crack mask PNGs, overlays and an HTML report."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch.distributed as dist
from PIL import Image
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import ConcatDataset

from crackcascade.outputs import check_writable
from crackcascade.report import describe, overlay, overlay_thumbnail, write_report


class PredictionWriter(BasePredictionWriter):
    """Write what ``predict_step`` returns: ``predictions.json``, ``predictions.csv`` and mask PNGs.

    Classification records (``{"path", "tasks": {task: {"class", "probability", ...}}}``) become
    one CSV row per image with each task's class and probability; the JSON keeps every class
    probability. Segmentation records (``{"path", "mask", "classes", ...}``) have their mask
    written as ``masks/<name>.png`` as soon as the batch is done (0/255 for one class, class
    indices for several) and their arrays dropped, so memory stays flat over thousands of
    full-resolution photos; the CSV then lists the mask file and each class's pixel fraction.

    U-Net and cascade records (:class:`~crackcascade.models.cascade.CrackCascade`) also carry
    the photo: it becomes ``overlays/<name>.png`` (cracks red on the photo tinted light blue) and a small
    thumbnail, each record gets its one-sentence ``summary``, and the run ends with
    ``report.html``, a self-contained page (summary, per-scale figures, gallery linking to the
    overlays) that opens in any browser.

    Under DDP each process predicts its share of the photos (Lightning gives each photo to one
    process) and writes their masks and overlays itself, under names fixed in advance from the
    whole photo list, so no two processes pick the same name. At the end the records and
    thumbnails are gathered on rank zero, which alone writes ``predictions.json``, ``.csv`` and
    ``report.html``, in photo order: the files are the same as from one process.

    Args:
        output_dir: Folder for the files; defaults to ``<log dir>/predictions``.
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch_and_epoch")
        self.output_dir = output_dir
        self._names: set[str] = set()
        self._planned: dict[str, str] | None = None
        self._output: Path | None = None
        self._thumbnails: dict[str, np.ndarray] = {}
        self._overlays: dict[str, str] = {}

    def _resolve_folder(self, trainer: pl.Trainer) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir) / "predictions"

    def _folder(self, trainer: pl.Trainer) -> Path:
        return self._output if self._output is not None else self._resolve_folder(trainer)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start a fresh set of output names for this run; fix the output folder and check it can be written."""
        self._names = set()
        self._thumbnails = {}
        self._overlays = {}
        # trainer.log_dir is a broadcast: every process asks once, here, never per batch (their
        # batch counts may differ by one).
        self._output = self._resolve_folder(trainer)
        # Now, not after every photo was predicted: writing starts with the first batch's masks or at the end.
        chosen = "" if self.output_dir is not None else " (or --trainer.default_root_dir)"
        check_writable(self._output, "predictions", f"--prediction_writer.output_dir{chosen}")
        # Named in photo order, as one process names them while it goes; every process plans the same names.
        paths = _dataset_paths(trainer.predict_dataloaders)
        self._planned = None if paths is None else {path: self._unique_name(path) for path in paths}

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Write the masks of a batch's segmentation records and keep only their summaries."""
        for record in prediction:
            image = record.pop("image", None)
            mask = np.asarray(record["mask"], dtype=np.uint8) if "mask" in record else None
            if mask is not None:
                folder = self._folder(trainer)
                name = self._write_mask(folder / "masks", record, trainer.global_rank)
                if image is not None:
                    self._write_overlay(folder / "overlays" / f"{name}.png", record, np.asarray(image), mask)
            if "segmented" in record:
                record["summary"] = describe(record)

    def _unique_name(self, path: str) -> str:
        # Photos from different sub-folders may share a file name; never overwrite one's mask.
        stem = Path(path).stem
        name, counter = stem, 1
        while name in self._names:
            counter += 1
            name = f"{stem}_{counter}"
        self._names.add(name)
        return name

    def _name(self, path: str, rank: int) -> str:
        if self._planned is not None and path in self._planned:
            return self._planned[path]
        # No photo list to plan from: names are unique per process, so other processes' names carry their rank.
        name = self._unique_name(path)
        return name if rank == 0 else f"{name}_rank{rank}"

    def _write_mask(self, folder: Path, record: dict[str, Any], rank: int = 0) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        mask = np.asarray(record.pop("mask"), dtype=np.uint8)
        record.pop("probabilities", None)
        classes = list(record.get("classes", ["crack"]))
        pixels = (mask * 255 if len(classes) == 1 else mask).astype(np.uint8)
        name = self._name(record["path"], rank)
        mask_path = folder / f"{name}.png"
        Image.fromarray(pixels).save(mask_path)
        record["mask_path"] = str(mask_path)
        record["fractions"] = {c: float((mask == i + 1).mean()) for i, c in enumerate(classes)}
        return name

    def _write_overlay(self, path: Path, record: dict[str, Any], image: np.ndarray, mask: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        classes = list(record.get("classes", ["crack"]))
        Image.fromarray(overlay(image, mask, classes)).save(path)
        record["overlay_path"] = str(path)
        self._overlays[record["path"]] = str(path.resolve())
        self._thumbnails[record["path"]] = overlay_thumbnail(image, mask, classes)

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """Gather all records of the run on rank zero and write them as JSON and CSV (and the report)."""
        records = [record for batch in predictions for record in batch]
        # Lightning's batch indices are per dataloader, then per batch: the photos' places in the dataset.
        loaders = list(batch_indices or ())
        indices = [int(i) for batch in (loaders[0] if len(loaders) == 1 else ()) for i in batch]
        if len(indices) != len(records):
            indices = list(range(len(records)))  # photo order is then this process's order
        shares = _gather_on_zero(trainer, (indices, records, self._overlays, self._thumbnails))
        if shares is None:
            return  # not rank zero: rank zero writes
        ordered = sorted(
            (index, rank, record)
            for rank, (rank_indices, rank_records, _, _) in enumerate(shares)
            for index, record in zip(rank_indices, rank_records, strict=True)
        )
        records = [record for _, _, record in ordered]
        overlays = {path: file for share in shares for path, file in share[2].items()}
        thumbnails = {path: image for share in shares for path, image in share[3].items()}
        folder = self._folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        json_path = folder / "predictions.json"
        json_path.write_text(json.dumps(records, indent=1))
        write_records_csv(records, folder / "predictions.csv")
        rank_zero_info(f"wrote {len(records)} predictions to {json_path} and {json_path.with_suffix('.csv')}")
        if any("summary" in r for r in records):
            report = write_report(
                folder / "report.html",
                records,
                title=f"crackcascade: {len(records)} photos",
                overlays=overlays,
                thumbnails=thumbnails,
            )
            rank_zero_info(f"wrote the report {report}")


def _dataset_paths(dataloaders: Any) -> list[str] | None:
    """The photo paths of the (single) predict loader's dataset in order, or None if it does not list them."""
    if isinstance(dataloaders, (list, tuple)):
        if len(dataloaders) != 1:
            return None
        dataloaders = dataloaders[0]
    dataset = getattr(dataloaders, "dataset", None)
    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    paths: list[str] = []
    for part in parts:
        found = getattr(part, "paths", None)
        if found is None:
            return None
        paths.extend(str(p) for p in found)
    return paths


def _gather_on_zero(trainer: pl.Trainer, share: Any) -> list[Any] | None:
    """Every process's ``share`` on rank zero (in rank order), None on the others; ``[share]`` on one process."""
    if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [share]
    shares: list[Any] | None = [None] * trainer.world_size if trainer.global_rank == 0 else None
    dist.gather_object(share, shares, dst=0)
    return shares


def write_records_csv(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Write prediction records as CSV, one row per image.

    Classification records give ``<task>`` and ``<task>_probability`` columns; segmentation
    records give ``mask_path``, ``<class>_fraction`` and crack measurement columns; cascade records give each
    task's class, the scale, gate score, whether the U-Net ran, crack count, length and width,
    the mask and overlay files and the one-sentence summary. Records measured with a pixel size
    (``--model.px_per_mm``) add ``total_length_mm`` and ``max_width_mm`` after the pixel values.
    """
    first = records[0] if records else {}
    if "tasks" in first and "segmented" in first:
        header, rows = _cascade_rows(records)
    elif "tasks" in first:
        tasks = list(first["tasks"])
        header = ["path", *[c for t in tasks for c in (t, f"{t}_probability")]]
        rows = [
            [r["path"], *[v for t in tasks for v in (r["tasks"][t]["class"], f"{r['tasks'][t]['probability']:.6f}")]]
            for r in records
        ]
    else:
        classes = list(first.get("fractions", {}))
        header = ["path", "mask_path", *[f"{c}_fraction" for c in classes]]
        rows = [[r["path"], r.get("mask_path", ""), *[f"{r['fractions'][c]:.6f}" for c in classes]] for r in records]
        if "summary" in first:
            in_mm = _measured_in_mm(records)
            header += ["cracks", "total_length_px", "max_width_px", *(MM_COLUMNS if in_mm else [])]
            header += ["overlay_path", "summary"]
            for row, r in zip(rows, records, strict=True):
                found = r.get("measurements") or {}
                row += [found.get("count", 0), f"{found.get('total_length_px', 0.0):.1f}"]
                row += [f"{found.get('max_width_px', 0.0):.1f}", *(_mm_values(found) if in_mm else [])]
                row += [r.get("overlay_path", ""), r.get("summary", "")]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


MM_COLUMNS = ["total_length_mm", "max_width_mm"]
"""CSV columns of the crack measurements in mm, present when some record was measured with a pixel size."""


def _measured_in_mm(records: Sequence[dict[str, Any]]) -> bool:
    return any((r.get("measurements") or {}).get("px_per_mm") is not None for r in records)


def _mm_values(found: dict[str, Any]) -> list[str]:
    # Empty for a photo not measured (gated out) or measured in pixels only.
    return [f"{found[c]:.4f}" if found.get(c) is not None else "" for c in MM_COLUMNS]


def _cascade_rows(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    tasks = list(records[0]["tasks"])
    in_mm = _measured_in_mm(records)
    header = ["path", *tasks, "scale", "gate_score", "segmented", "cracks", "total_length_px", "max_width_px"]
    header += [*(MM_COLUMNS if in_mm else []), "mask_path", "overlay_path", "summary"]
    rows = []
    for r in records:
        gate = r.get("gate") or {}
        found = r.get("measurements") or {}
        rows.append(
            [
                r["path"],
                *[r["tasks"][t]["class"] for t in tasks],
                r.get("scale") or "",
                f"{gate['score']:.6f}" if "score" in gate else "",
                int(bool(r.get("segmented"))),
                found.get("count", 0),
                f"{found.get('total_length_px', 0.0):.1f}",
                f"{found.get('max_width_px', 0.0):.1f}",
                *(_mm_values(found) if in_mm else []),
                r.get("mask_path", ""),
                r.get("overlay_path", ""),
                r.get("summary", ""),
            ]
        )
    return header, rows
