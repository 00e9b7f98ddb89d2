"""LightningDataModules: Phi-Net multi-task classification (and its synthetic twin)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from crackcascade.data.datasets import ArrayTaskDataset, ImageFileDataset, Sample
from crackcascade.data.io import list_images
from crackcascade.data.phinet import MANIFEST_KEY, Entry, Format, Index, read_index
from crackcascade.data.transforms import classification_transform
from crackcascade.errors import ConfigError, DataError
from crackcascade.labels import TASK_NAMES, resolve_tasks

CombinedMode = Literal["max_size_cycle", "min_size", "max_size"]


class PhiNetDataModule(pl.LightningDataModule):
    """PEER Hub ImageNet (Phi-Net) data for the eight-task classifier, in any of three formats.

    Formats (see the README for trees): PHI Challenge arrays ``root/<task>/X_train.npy`` +
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
        num_workers: DataLoader worker processes in total, shared by the task loaders.
        val_fraction: Fraction of train carved out for validation where no val split exists.
        seed: Seed of that split (per task, so adding a task leaves the others' splits unchanged).
        augment: Apply training augmentation (flips and colour jitter).
        combined_mode: CombinedLoader mode; ``max_size_cycle`` cycles small tasks so every
            step has all tasks, an epoch being the largest task once.
        predict_root: Folder of photos for ``predict`` (searched recursively).
        pin_memory: Pin host memory for faster GPU transfer; None pins when CUDA is available.
    """

    def __init__(
        self,
        root: str = "data/phinet",
        tasks: list[str] | None = None,
        format: Format = "auto",
        image_size: int = 224,
        batch_size: int = 40,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: bool = True,
        combined_mode: CombinedMode = "max_size_cycle",
        predict_root: str | None = None,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        if image_size < 16:
            raise ConfigError(f"data.image_size must be >= 16, got {image_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}")
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
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.augment = augment
        self.combined_mode = combined_mode
        self.predict_root = predict_root
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
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
            index, self._tasks = read_index(self.root, self.format, self._requested_tasks)
            self._index = self._carve_validation(index)
        return self._index

    def _carve_validation(self, index: Index) -> Index:
        carved: Index = {split: dict(entries) for split, entries in index.items()}
        for key, entry in index["train"].items():
            if key in index["val"] or self.val_fraction == 0 or len(entry) < 2:
                continue
            order = TASK_NAMES.index(key) if key in TASK_NAMES else len(TASK_NAMES)
            perm = np.random.default_rng([self.seed, order]).permutation(len(entry))
            n_val = min(len(entry) - 1, max(1, round(len(entry) * self.val_fraction)))
            carved["val"][key] = entry.subset(np.sort(perm[:n_val]))
            carved["train"][key] = entry.subset(np.sort(perm[n_val:]))
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
            self.datasets[split] = {key: _dataset(entry, transform) for key, entry in index[split].items()}

    def _predict_dataset(self) -> Dataset[Sample]:
        if self.predict_root is None:
            raise ConfigError("data.predict_root is not set; pass --data.predict_root <folder of photos>")
        folder = Path(self.predict_root)
        if not folder.is_dir():
            raise DataError(f"data.predict_root '{folder}' does not exist or is not a folder")
        paths = list_images(folder)
        if not paths:
            raise DataError(f"data.predict_root '{folder}': no images found (jpg, png, tif, bmp, webp)")
        return ImageFileDataset(paths, transform=classification_transform(self.image_size, train=False))

    def _loader(self, dataset: Dataset[Sample], batch_size: int, workers: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> CombinedLoader:
        """One shuffled loader per task, combined so that each step holds every task."""
        sets = self.datasets["train"]
        per_loader_batch = max(1, math.ceil(self.batch_size / len(sets)))
        per_loader_workers = math.ceil(self.num_workers / len(sets)) if self.num_workers else 0
        loaders = {key: self._loader(ds, per_loader_batch, per_loader_workers, True) for key, ds in sets.items()}
        return CombinedLoader(loaders, mode=self.combined_mode)

    def _eval_loader(self, split: str) -> DataLoader:
        dataset: Dataset[Sample] = ConcatDataset(list(self.datasets[split].values()))
        return self._loader(dataset, self.eval_batch_size, self.num_workers, False)

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


def _dataset(entry: Entry, transform: Any) -> Dataset[Sample]:
    if entry.x_path is not None:
        return ArrayTaskDataset(entry.x_path, entry.labels, entry.column, entry.rows, transform)
    return ImageFileDataset(entry.paths, entry.labels, transform)


class SyntheticPhiNetDataModule(PhiNetDataModule):
    """:class:`PhiNetDataModule` over built-in synthetic scenes, written to ``root`` on first use.

    The scenes are procedural (see :mod:`crackcascade.data.synthetic`) and written in a real
    Phi-Net format, so the same readers load them; a fresh machine can train with no download.
    The folder is regenerated only when the generation settings change.

    Args:
        root: Folder to write the synthetic set to (created if needed).
        n_train: Training images per task.
        n_test: Test images per task.
        synthetic_size: Side of the generated images.
        synthetic_seed: Seed of the generator.
        write_format: On-disk format to write (``arrays``, ``folders`` or ``csv``).
        write_workers: Processes rendering the set (the files are identical for any number);
            None uses up to 4 CPU cores.
        **kwargs: Any :class:`PhiNetDataModule` argument.
    """

    MARKER = ".crackcascade-synthetic.json"

    def __init__(
        self,
        root: str = "data/synthetic",
        n_train: int = 300,
        n_test: int = 60,
        synthetic_size: int = 224,
        synthetic_seed: int = 0,
        write_format: Literal["arrays", "folders", "csv"] = "arrays",
        write_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("format", write_format)
        super().__init__(root=root, **kwargs)
        self.write_workers = write_workers or min(4, os.cpu_count() or 1)
        self.spec: dict[str, Any] = {
            "format": write_format,
            "n_train": n_train,
            "n_test": n_test,
            "size": synthetic_size,
            "seed": synthetic_seed,
            "tasks": list(self._requested_tasks or TASK_NAMES),
        }

    def prepare_data(self) -> None:
        """Write the synthetic set unless ``root`` already holds one made with the same settings."""
        from crackcascade.data.synthetic import write_phinet

        marker = self.root / self.MARKER
        if marker.is_file():
            if json.loads(marker.read_text()) == self.spec:
                return
            # Our own set made with other settings: replace it whole, so no stale task folder
            # or split of the old set is read with the new one.
            shutil.rmtree(self.root)
        elif self.root.exists() and any(self.root.iterdir()):
            raise DataError(
                f"data.root '{self.root}' holds files that are not crackcascade synthetic data; "
                "choose an empty or new folder for the synthetic set"
            )
        write_phinet(self.root, workers=self.write_workers, **self.spec)
        marker.write_text(json.dumps(self.spec))
