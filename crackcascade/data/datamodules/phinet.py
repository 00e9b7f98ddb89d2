"""The Phi-Net data module: eight-task classification data in any of its three formats."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from crackcascade.data.datamodules.base import (
    LoaderDataModule,
    check_batch_options,
    check_fractions,
    eval_sampler,
    predict_photos,
    split_off,
    warn_bad_files,
)
from crackcascade.data.gpu_decode import BatchDecoder, DecodeOn, ImageBytesDataset, collate_encoded, resolve_decode_on
from crackcascade.data.io import BadFiles
from crackcascade.data.phinet import MANIFEST_KEY, ArrayTaskDataset, Entry, Format, ImageFileDataset, Index, read_index
from crackcascade.data.transforms import classification_transform
from crackcascade.data.types import Sample
from crackcascade.errors import ConfigError, DataError
from crackcascade.labels import TASK_NAMES, resolve_tasks

CombinedMode = Literal["max_size_cycle", "min_size", "max_size", "proportional"]


class PhiNetDataModule(LoaderDataModule):
    """PEER Hub ImageNet (Phi-Net) data for the eight-task classifier, in any of three formats.

    Formats (see docs/data.md for trees): PHI Challenge arrays ``root/<task>/X_train.npy`` +
    ``y_train.npy`` (memory-mapped), image folders ``root/<task>/<split>/<class>/*``, or CSV
    manifests ``root/train.csv`` (``path,<task>,...``, blank = unlabelled). A seeded validation
    split is carved from train for every task that has none.

    Training sees every task in every step: one DataLoader per task, combined with Lightning's
    :class:`~pytorch_lightning.utilities.CombinedLoader`, and the model forwards the
    concatenated batch through the backbone once. A CSV manifest is a single loader, so an image
    labelled for several tasks is decoded and forwarded once with all its labels.

    Args:
        root: Dataset root folder.
        tasks: Tasks to load (names or aliases such as ``task1``); None loads every task found.
        format: ``arrays``, ``folders``, ``csv``, or ``auto`` to detect.
        image_size: Side of the square images fed to the model.
        batch_size: Training images per step, shared evenly by the task loaders.
        eval_batch_size: Batch size for validation, test and predict; defaults to ``batch_size``.
        val_fraction: Fraction of train carved out for validation where no val split exists.
        seed: Seed of that split (per task, so adding a task leaves the others' splits unchanged).
        augment: Apply training augmentation (flips and colour jitter).
        combined_mode: How the task sets make an epoch. ``max_size_cycle`` (the default): one
            loader per task, combined by Lightning's CombinedLoader so every step holds every
            task; small tasks cycle, and an epoch is the largest task's set once (a small task's
            images are then seen several times per epoch). ``proportional``: one shuffled loader
            over the union of the task sets, so an epoch sees every task's training set exactly
            once and each batch holds the tasks in proportion to their sizes (the meaning of
            "epoch" in single-task training, as in Bai et al.'s protocol). ``min_size`` and
            ``max_size`` are CombinedLoader's other modes.
        predict_root: Folder of photos for ``predict`` (searched recursively).
        jpeg_draft: Decode JPEGs at least twice ``image_size`` at 1/2, 1/4 or 1/8 scale (no
            smaller than ``image_size``; libjpeg's DCT-domain scaling, several times faster than a
            full decode). The pixels then differ a little from a full decode resized (benchmarks/README.md's
            input-pipeline table measures how much); False always decodes at full size.
        decode_on: ``cpu`` (the workers decode) or ``gpu``: the workers read JPEG files' bytes and
            the training device decodes, resizes and augments each batch after its transfer
            (nvJPEG; see :mod:`crackcascade.data.gpu_decode`), so CPU cores stop limiting
            throughput. Folders and CSV manifests only (arrays are decoded already); falls back to
            ``cpu`` with a warning where CUDA is absent.
        **loader_options: ``num_workers`` (in total, shared by the task loaders), ``pin_memory``,
            ``prefetch_factor`` and ``on_error`` of :class:`LoaderDataModule`.
    """

    def __init__(
        self,
        root: str = "data/phinet",
        tasks: list[str] | None = None,
        format: Format = "auto",
        image_size: int = 224,
        batch_size: int = 40,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: bool = True,
        combined_mode: CombinedMode = "max_size_cycle",
        predict_root: str | None = None,
        jpeg_draft: bool = True,
        decode_on: DecodeOn = "cpu",
        **loader_options: Any,
    ) -> None:
        super().__init__(**loader_options)
        check_batch_options(image_size, batch_size=batch_size, eval_batch_size=eval_batch_size or 1)
        check_fractions(val_fraction=val_fraction)
        try:
            self._requested_tasks = None if tasks is None else resolve_tasks(tasks)
        except ValueError as err:
            raise ConfigError(f"data.tasks: {err}") from None
        # "tasks" stays out of the saved hyperparameters: Lightning refuses to log a run whose
        # model and data hparams share a key with different values, and the model's heads
        # (model.tasks) legitimately differ from the tasks a given dataset labels.
        self.save_hyperparameters(ignore=["tasks"])
        self.root = Path(root)
        self.format = format
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.augment = augment
        self.combined_mode = combined_mode
        self.predict_root = predict_root
        # Side below which no JPEG is decoded, when draft decoding is on (the transform resizes to it).
        self.decode_size: int | None = image_size if jpeg_draft else None
        self.decode_on = resolve_decode_on(decode_on)
        self.decoder = BatchDecoder(image_size) if self.decode_on == "gpu" else None
        self._index: Index | None = None
        self._tasks: tuple[str, ...] | None = self._requested_tasks
        self.datasets: dict[str, dict[str, Dataset[Sample]]] = {}

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks this data provides labels for (all eight until ``setup`` has read the root)."""
        return self._tasks if self._tasks is not None else TASK_NAMES

    def index(self) -> Index:
        """Read (once) and return the split/task index of the root, with validation carved."""
        if self._index is None:
            bad = BadFiles(self.on_error)
            index, self._tasks = read_index(self.root, self.format, self._requested_tasks, bad)
            warn_bad_files(self.root, bad)
            self._index = self._carve_validation(index)
        return self._index

    def _carve_validation(self, index: Index) -> Index:
        carved: Index = {split: dict(entries) for split, entries in index.items()}
        for key, entry in index["train"].items():
            if key in index["val"] or self.val_fraction == 0 or len(entry) < 2:
                continue
            held_out, kept = split_off(len(entry), self.val_fraction, len(entry), (self.seed, _stream(key)))
            carved["val"][key] = entry.subset(held_out)
            carved["train"][key] = entry.subset(kept)
        return carved

    def setup(self, stage: str) -> None:
        """Build the datasets a stage needs (``fit``, ``validate``, ``test`` or ``predict``)."""
        if stage == "predict":
            self.datasets["predict"] = {"photos": self._predict_dataset()}
            return
        index = self.index()
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}[stage]
        for split in needed:
            if split == "val" and not index[split] and stage == "fit" and self.val_fraction == 0:
                self.datasets.pop("val", None)  # no validation asked for: train only
                continue
            if not index[split]:
                where = "test.csv" if MANIFEST_KEY in index["train"] else "X_test.npy or test/ folders"
                raise DataError(f"data.root '{self.root}': no {split} split found (expected {where})")
            transform = classification_transform(self.image_size, train=split == "train", augment=self.augment)
            self.datasets[split] = {
                key: _dataset(entry, transform, self.decode_size, self.decoder is not None)
                for key, entry in index[split].items()
            }

    def _predict_dataset(self) -> Dataset[Sample]:
        paths = predict_photos(self.predict_root)
        transform = classification_transform(self.image_size, train=False)
        return ImageFileDataset(paths, transform=transform, min_size=self.decode_size)

    def train_dataloader(self) -> CombinedLoader:
        """One shuffled loader per task, combined so that each step holds every task.

        With ``combined_mode="proportional"``, one shuffled loader over all tasks' images instead.
        """
        sets = self.datasets["train"]
        if self.combined_mode == "proportional":
            union: Dataset[Sample] = ConcatDataset(list(sets.values()))
            everything = self.loader(union, self.batch_size, True, self._collate(), stream=len(TASK_NAMES) + 1)
            return CombinedLoader({"all": everything}, mode="max_size_cycle")
        per_loader_batch = max(1, math.ceil(self.batch_size / len(sets)))
        per_loader_workers = math.ceil(self.num_workers / len(sets)) if self.num_workers else 0
        loaders = {
            # One seed stream per task, so a task's order does not depend on which others are loaded.
            key: self.loader(
                ds, per_loader_batch, True, self._collate(), stream=_stream(key), workers=per_loader_workers
            )
            for key, ds in sets.items()
        }
        return CombinedLoader(loaders, mode=self.combined_mode)

    def _eval_loader(self, split: str) -> DataLoader:
        dataset: Dataset[Sample] = ConcatDataset(list(self.datasets[split].values()))
        # Predict keeps Lightning's own unrepeated sampler, which also tracks each sample's index.
        sampler = eval_sampler(self, dataset, f"{split} split") if split != "predict" else None
        return self.loader(dataset, self.eval_batch_size, False, self._collate(), sampler=sampler)

    def _collate(self) -> Callable[[list[Sample]], Any] | None:
        return collate_encoded if self.decoder is not None else None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With ``decode_on="gpu"``, decode, resize and augment the batch's JPEGs on the device it was moved to."""
        return batch if self.decoder is None else self.decoder(batch)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """All tasks' validation images in one loader; metrics split them by label.

        Empty (no validation) when there is no val split and ``val_fraction`` is 0.
        """
        return self._eval_loader("val") if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        """All tasks' test images in one loader."""
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Photos under ``predict_root``, unlabelled."""
        return self._eval_loader("predict")


def _stream(key: str) -> int:
    return TASK_NAMES.index(key) if key in TASK_NAMES else len(TASK_NAMES)


def _dataset(entry: Entry, transform: Any, min_size: int | None, encoded: bool = False) -> Dataset[Sample]:
    if entry.x_path is not None:
        return ArrayTaskDataset(entry.x_path, entry.labels, entry.column, entry.rows, transform)
    if encoded:  # decode_on="gpu": the device decodes and transforms after the transfer
        return ImageBytesDataset(entry.paths, entry.labels, transform)
    return ImageFileDataset(entry.paths, entry.labels, transform, min_size=min_size)
