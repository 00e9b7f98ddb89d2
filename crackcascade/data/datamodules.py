"""LightningDataModules: Phi-Net multi-task classification (and its synthetic twin), crack masks."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.utilities import CombinedLoader, rank_zero_warn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from crackcascade.data.cracks import (
    DEFAULT_CLASSES,
    CrackMaskDataset,
    MaskFormat,
    MaskRecord,
    OnError,
    PhotoDataset,
    class_lookup,
    pad_collate,
    read_mask_splits,
)
from crackcascade.data.datasets import ArrayTaskDataset, ImageFileDataset, Sample
from crackcascade.data.io import BadFiles, escape_message, list_images, scan_images
from crackcascade.data.phinet import MANIFEST_KEY, Entry, Format, Index, read_index
from crackcascade.data.sampling import LoaderDataset, ReplayLoader, ReplaySampler, SkipCollate
from crackcascade.data.transforms import classification_transform, segmentation_transform
from crackcascade.errors import ConfigError, DataError
from crackcascade.labels import IGNORE_INDEX, SCALES, TASK_NAMES, get_task, normalize_name, resolve_tasks, task_index

CombinedMode = Literal["max_size_cycle", "min_size", "max_size"]


def make_loader(
    dataset: Dataset[Sample],
    batch_size: int,
    shuffle: bool,
    workers: int,
    pin_memory: bool,
    collate: Any = None,
    on_error: OnError = "raise",
    stream: int = 0,
    prefetch_factor: int | None = None,
    sampler: Sampler[int] | None = None,
) -> DataLoader:
    """The DataLoader every crackcascade data module builds: workers kept alive between epochs.

    A shuffled loader draws its order and every sample's augmentation from the seed alone
    (:class:`~crackcascade.data.sampling.ReplaySampler`), so an interrupted run resumes exactly;
    ``stream`` tells apart loaders that share the seed. With ``on_error="skip"`` a sample whose
    file cannot be decoded is left out of its batch and listed under ``batch["skipped"]``.
    ``prefetch_factor`` (batches each worker loads ahead; None keeps torch's default of 2) only
    applies with workers, so it is dropped for ``workers=0`` instead of failing. ``sampler``
    orders an unshuffled loader (e.g. :func:`eval_sampler`'s share under DDP).
    """
    skip = on_error == "skip"
    if shuffle or skip:
        dataset = LoaderDataset(dataset, skip=skip)
    # A shuffled (training) loader is a ReplayLoader: its position reaches checkpoints, so a restart resumes there.
    return (ReplayLoader if shuffle else DataLoader)(
        dataset,
        batch_size=batch_size,
        sampler=ReplaySampler(dataset, stream=stream) if shuffle else sampler,
        num_workers=workers,
        collate_fn=SkipCollate(collate) if skip else collate,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch_factor if workers > 0 else None,
    )


def warn_bad_files(root: Path, bad: BadFiles) -> None:
    """Warn once about the image files a reader skipped (``on_error="skip"``) or ignored as non-images."""
    if bad.total:
        rank_zero_warn(f"data.root '{root}': skipped {bad.total} bad images ({bad.summary()})")
    if bad.ignored:
        more = f" and {len(bad.ignored) - 1} more" if len(bad.ignored) > 1 else ""
        rank_zero_warn(f"data.root '{root}': ignored {len(bad.ignored)} non-image files: {bad.ignored[0]}{more}")


def eval_sampler(datamodule: pl.LightningDataModule, dataset: Dataset[Sample], what: str) -> Sampler[int] | None:
    """Under DDP, a sampler that gives each validation or test sample to exactly one process.

    Lightning would otherwise insert a :class:`~torch.utils.data.DistributedSampler`, which pads
    the last batch with repeated samples so that every process has as many; validation and test
    metrics would count those twice and differ from a single-process run. The metrics here are
    sums synced across processes, so unequal shares are fine. Training keeps Lightning's sampler:
    every process must take the same number of optimizer steps.

    Args:
        datamodule: The data module, attached to its trainer (or not: then no sampler).
        dataset: The evaluation dataset.
        what: What it is, for the error message (``val split``, ``test split of scale 'pixel'``).

    Returns:
        None on a single process (the loader iterates in order), else the process's share.

    Raises:
        DataError: If the split has fewer samples than processes: a process with nothing to
            validate would wait forever on the others in DDP's first validation forward pass.
    """
    trainer = datamodule.trainer
    kwargs = trainer.distributed_sampler_kwargs if trainer is not None else None
    if not kwargs or kwargs.get("num_replicas", 1) < 2:
        return None
    replicas, size = int(kwargs["num_replicas"]), len(dataset)  # type: ignore[arg-type]
    if size < replicas:
        raise DataError(
            f"data: the {what} has {size} samples for {replicas} processes; each needs at least one "
            "(add samples, or use fewer --trainer.devices / --trainer.num_nodes)"
        )
    return UnrepeatedDistributedSampler(dataset, shuffle=False, **kwargs)


def check_loader_options(
    image_size: int, num_workers: int, *, prefetch_factor: int | None = None, **batch_sizes: int
) -> None:
    """Fail with one line naming the option if an image size, worker count, prefetch or batch size cannot work."""
    if prefetch_factor is not None and prefetch_factor < 1:
        raise ConfigError(f"data.prefetch_factor must be >= 1 or null, got {prefetch_factor}")
    for name, value in batch_sizes.items():
        if value < 1:
            raise ConfigError(f"data.{name} must be >= 1, got {value}")
    if image_size < 16:
        raise ConfigError(f"data.image_size must be >= 16, got {image_size}")
    if num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}")


def check_fractions(**fractions: float) -> None:
    """Fail with one line if split fractions are outside ``[0, 1)`` or leave no training data."""
    for name, fraction in fractions.items():
        if not 0.0 <= fraction < 1.0:
            raise ConfigError(f"data.{name} must be in [0, 1), got {fraction}")
    if sum(fractions.values()) >= 1.0:
        names = " + ".join(f"data.{name}" for name in fractions)
        raise ConfigError(f"{names} must be < 1 so that training data remains")


def predict_photos(predict_root: str | None) -> list[Path]:
    """List the photos under ``data.predict_root`` (recursively), failing with one line if there are none."""
    if predict_root is None:
        raise ConfigError("data.predict_root is not set; pass --data.predict_root <folder of photos>")
    folder = Path(predict_root)
    if not folder.is_dir():
        raise DataError(f"data.predict_root '{folder}' does not exist or is not a folder")
    paths = list_images(folder)
    if not paths:
        raise DataError(f"data.predict_root '{folder}': no images found (jpg, png, tif, bmp, webp)")
    return paths


class LoaderDataModule(pl.LightningDataModule):
    """A data module whose loaders share its worker, pinning, prefetch and ``on_error`` options.

    Subclasses keep ``num_workers``, ``pin_memory``, ``prefetch_factor`` and ``on_error`` with
    :meth:`_keep_loader_options` in their ``__init__`` and build every DataLoader with :meth:`loader`.
    """

    num_workers: int
    pin_memory: bool
    prefetch_factor: int | None
    on_error: OnError

    def _keep_loader_options(
        self, num_workers: int, pin_memory: bool | None, prefetch_factor: int | None, on_error: OnError
    ) -> None:
        """Keep the options :meth:`loader` uses; ``pin_memory`` None pins where CUDA is available."""
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.prefetch_factor = prefetch_factor
        self.on_error = on_error

    def loader(
        self,
        dataset: Dataset[Sample],
        batch_size: int,
        shuffle: bool,
        collate: Any = None,
        *,
        sampler: Sampler[int] | None = None,
        stream: int = 0,
        workers: int | None = None,
    ) -> DataLoader:
        """:func:`make_loader` with this module's options (``workers`` overrides ``num_workers``)."""
        return make_loader(
            dataset,
            batch_size,
            shuffle,
            self.num_workers if workers is None else workers,
            self.pin_memory,
            collate,
            self.on_error,
            stream,
            self.prefetch_factor,
            sampler,
        )


class PhiNetDataModule(LoaderDataModule):
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
        on_error: ``raise`` at the first bad image file (one line naming it), or ``skip`` bad
            images and count them: those found at set-up (empty, not an image, too large, a
            symlink out of the root, missing from a manifest) are reported once, those found
            when decoding (truncated) at the end of each epoch. Bad labels always raise.
        prefetch_factor: Batches each worker loads ahead (None: torch's default, 2); used only
            with ``num_workers`` > 0.
        jpeg_draft: Decode JPEGs at least twice ``image_size`` at 1/2, 1/4 or 1/8 scale (no
            smaller than ``image_size``; libjpeg's DCT-domain scaling, several times faster than a
            full decode). The pixels then differ a little from a full decode resized (the README's
            input-pipeline table measures how much); False always decodes at full size.
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
        on_error: OnError = "raise",
        prefetch_factor: int | None = None,
        jpeg_draft: bool = True,
    ) -> None:
        super().__init__()
        check_loader_options(
            image_size,
            num_workers,
            prefetch_factor=prefetch_factor,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size or 1,
        )
        check_fractions(val_fraction=val_fraction)
        BadFiles(on_error)  # validates the option
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
        self._keep_loader_options(num_workers, pin_memory, prefetch_factor, on_error)
        self.val_fraction = val_fraction
        self.seed = seed
        self.augment = augment
        self.combined_mode = combined_mode
        self.predict_root = predict_root
        # Side below which no JPEG is decoded, when draft decoding is on (the transform resizes to it).
        self.decode_size: int | None = image_size if jpeg_draft else None
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
            perm = np.random.default_rng([self.seed, _stream(key)]).permutation(len(entry))
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
            self.datasets[split] = {
                key: _dataset(entry, transform, self.decode_size) for key, entry in index[split].items()
            }

    def _predict_dataset(self) -> Dataset[Sample]:
        paths = predict_photos(self.predict_root)
        transform = classification_transform(self.image_size, train=False)
        return ImageFileDataset(paths, transform=transform, min_size=self.decode_size)

    def train_dataloader(self) -> CombinedLoader:
        """One shuffled loader per task, combined so that each step holds every task."""
        sets = self.datasets["train"]
        per_loader_batch = max(1, math.ceil(self.batch_size / len(sets)))
        per_loader_workers = math.ceil(self.num_workers / len(sets)) if self.num_workers else 0
        loaders = {
            # One seed stream per task, so a task's order does not depend on which others are loaded.
            key: self.loader(ds, per_loader_batch, True, stream=_stream(key), workers=per_loader_workers)
            for key, ds in sets.items()
        }
        return CombinedLoader(loaders, mode=self.combined_mode)

    def _eval_loader(self, split: str) -> DataLoader:
        dataset: Dataset[Sample] = ConcatDataset(list(self.datasets[split].values()))
        # Predict keeps Lightning's own unrepeated sampler, which also tracks each sample's index.
        sampler = eval_sampler(self, dataset, f"{split} split") if split != "predict" else None
        return self.loader(dataset, self.eval_batch_size, False, sampler=sampler)

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


def _dataset(entry: Entry, transform: Any, min_size: int | None) -> Dataset[Sample]:
    if entry.x_path is not None:
        return ArrayTaskDataset(entry.x_path, entry.labels, entry.column, entry.rows, transform)
    return ImageFileDataset(entry.paths, entry.labels, transform, min_size=min_size)


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
        self.write_workers = write_workers
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

        prepare_synthetic(self.root, self.spec, write_phinet, self.write_workers)


SYNTHETIC_MARKER = ".crackcascade-synthetic.json"
"""File in a synthetic set's root recording the settings it was written with."""


def prepare_synthetic(root: Path, spec: dict[str, Any], write: Callable[..., Path], workers: int | None) -> None:
    """Write a synthetic set to ``root`` unless it already holds one made with the same settings.

    Args:
        root: Folder of the set.
        spec: Keyword arguments of ``write`` that determine the files (recorded in a marker).
        write: The writer, e.g. :func:`~crackcascade.data.synthetic.write_phinet`.
        workers: Processes for the writer (the files are identical for any number); None uses
            up to 4 CPU cores.

    Raises:
        DataError: If ``root`` holds files that are not a crackcascade synthetic set.
    """
    marker = root / SYNTHETIC_MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) == spec:
            return
        # Our own set made with other settings: replace it whole, so no stale folder or split of
        # the old set is read with the new one.
        shutil.rmtree(root)
    elif root.exists() and any(root.iterdir()):
        raise DataError(
            f"data.root '{root}' holds files that are not crackcascade synthetic data; "
            "choose an empty or new folder for the synthetic set"
        )
    write(root, workers=workers or min(4, os.cpu_count() or 1), **spec)
    marker.write_text(json.dumps(spec))


class CrackMaskDataModule(LoaderDataModule):
    """Crack (and other damage) masks for the U-Net, one dataset folder per scene scale.

    ``root/<scale>/`` holds, for each chosen scale, a COCO export or image/mask pairs in one of
    three layouts (one dataset; ``train/ val/ test/`` folders; or ``train.txt`` / ``test.txt``
    id lists), see :mod:`crackcascade.data.cracks`. With a single scale, ``root`` may also be the
    dataset folder itself (``--data.root crackforest --data.scales [pixel]``).

    Training draws shuffled batches from all chosen scales together; validation and test give one
    loader per scale, in the order of :attr:`eval_scales`, so the model can log each scale by
    ``dataloader_idx``. Validation is carved from train where a scale has none, and test too when
    ``test_fraction`` > 0 and the scale has none; both are seeded per scale, test first, so a
    change of ``val_fraction`` leaves the test images unchanged.

    Samples are ``{"image": uint8 (3, H, W), "mask": int64 (H, W), "path", "scale"}`` with mask
    values 0 (background) and ``1..K`` (``classes``). Training crops ``image_size`` squares;
    evaluation keeps native resolution, and batches are padded to a multiple of 32 with image 0
    and mask -1 (:data:`~crackcascade.data.cracks.MASK_IGNORE`), which losses and metrics must
    ignore. Predict yields ``{"image", "path"}`` one photo at a time at native size.

    Args:
        root: Folder holding one sub-folder per scale (or, for one scale, the dataset itself).
        scales: Scene scales to load (:data:`~crackcascade.labels.SCALES`).
        classes: Mask classes; value ``i`` is ``classes[i - 1]``. COCO categories match by name.
        format: ``coco``, ``masks`` (image/mask pairs) or ``auto`` (COCO where both exist).
        image_size: Side of the square training crops.
        scale_range: Training zoom: crop-window area over ``image_size**2`` (see
            :class:`~crackcascade.data.transforms.RandomScaledCrop`).
        batch_size: Training crops per step.
        eval_batch_size: Images per validation/test batch (1 avoids padding images of unequal size).
        num_workers: DataLoader worker processes per loader.
        val_fraction: Fraction of train carved out for validation where a scale has no val split.
        test_fraction: Fraction carved out for test where a scale has no test split (0: none).
        seed: Seed of the carved splits.
        augment: Apply training augmentation (zoom, flips, 90-degree turns, colour jitter).
        on_error: ``raise`` at the first bad image, mask or annotation, or ``skip`` and count them.
        predict_root: Folder of photos for ``predict`` (searched recursively).
        pin_memory: Pin host memory for faster GPU transfer; None pins when CUDA is available.
        prefetch_factor: Batches each worker loads ahead (None: torch's default, 2); used only
            with ``num_workers`` > 0.
    """

    def __init__(
        self,
        root: str = "data/cracks",
        scales: Sequence[str] = (SCALES[0],),
        classes: Sequence[str] = DEFAULT_CLASSES,
        format: MaskFormat = "auto",
        image_size: int = 256,
        scale_range: tuple[float, float] = (0.5, 1.0),
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        seed: int = 0,
        augment: bool = True,
        on_error: OnError = "raise",
        predict_root: str | None = None,
        pin_memory: bool | None = None,
        prefetch_factor: int | None = None,
    ) -> None:
        super().__init__()
        check_loader_options(
            image_size,
            num_workers,
            prefetch_factor=prefetch_factor,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
        )
        check_fractions(val_fraction=val_fraction, test_fraction=test_fraction)
        low, high = scale_range
        if not 0.0 < low <= high:
            raise ConfigError(f"data.scale_range must be (low, high) with 0 < low <= high, got {list(scale_range)}")
        if format not in ("auto", "coco", "masks"):
            raise ConfigError(f"data.format must be auto, coco or masks, got {format!r}")
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"data.on_error must be raise or skip, got {on_error!r}")
        class_lookup(classes)  # validates: not empty, no duplicates
        # Plain lists, however they were given: Lightning refuses to log a run whose model and data
        # hparams share a key with values of different types, and the segmenter saves a list.
        classes = [classes] if isinstance(classes, str) else [str(c) for c in classes]
        scales = list(_resolve_scales(scales))
        self.save_hyperparameters()
        self.root = Path(root)
        self.scales: tuple[str, ...] = tuple(scales)
        self.classes: tuple[str, ...] = tuple(classes)
        self.format = format
        self.image_size = image_size
        self.scale_range = (float(low), float(high))
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self._keep_loader_options(num_workers, pin_memory, prefetch_factor, on_error)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.augment = augment
        self.predict_root = predict_root
        self.eval_scales: list[str] = list(self.scales)
        self._index: dict[str, dict[str, list[MaskRecord]]] | None = None
        self.datasets: dict[str, list[Dataset[Sample]]] = {}

    @property
    def num_classes(self) -> int:
        """Number of mask values: background plus ``classes``."""
        return len(self.classes) + 1

    def scale_folder(self, scale: str) -> Path:
        """Folder of one scale: ``root/<scale>``, or ``root`` itself for a single scale without one."""
        if not self.root.is_dir():
            raise DataError(f"data.root '{self.root}' does not exist or is not a folder; set --data.root")
        children = {normalize_name(c.name): c for c in sorted(self.root.iterdir()) if c.is_dir()}
        if normalize_name(scale) in children:
            return children[normalize_name(scale)]
        # A lone dataset folder stands for the one scale asked for, unless the root is laid out by scale.
        if len(self.scales) == 1 and not any(normalize_name(s) in children for s in SCALES):
            return self.root
        raise DataError(
            f"data.root '{self.root}': no '{scale}' folder; add it or choose data.scales among the folders there"
        )

    def index(self) -> dict[str, dict[str, list[MaskRecord]]]:
        """Read (once) every scale's splits, with validation and test carved; scale -> split -> records."""
        if self._index is None:
            index: dict[str, dict[str, list[MaskRecord]]] = {}
            skipped: Counter[str] = Counter()
            examples: dict[str, str] = {}
            for scale in self.scales:
                splits = read_mask_splits(self.scale_folder(scale), self.classes, self.format, self.on_error)
                for records in splits.values():
                    skipped.update(records.skipped)
                    examples = {**records.examples, **examples}
                index[scale] = self._carve(scale, {split: list(records) for split, records in splits.items()})
            if skipped:
                kinds = "; ".join(f"{count} {kind}" for kind, count in sorted(skipped.items()))
                top = skipped.most_common(1)[0][0]
                example = f"; e.g. {examples[top]}" if top in examples else ""
                rank_zero_warn(
                    f"data.root '{self.root}': skipped {sum(skipped.values())} bad entries ({kinds}){example}"
                )
            self._index = index
        return self._index

    def _carve(self, scale: str, splits: dict[str, list[MaskRecord]]) -> dict[str, list[MaskRecord]]:
        stream = SCALES.index(scale)
        train = splits.get("train", [])
        total = len(train)  # fractions are of the whole set, so test and val sizes do not depend on each other
        for split, fraction, code in (("test", self.test_fraction, 1), ("val", self.val_fraction, 0)):
            if split in splits or fraction == 0 or len(train) < 2:
                continue
            n_out = min(len(train) - 1, max(1, round(total * fraction)))
            perm = np.random.default_rng([self.seed, stream, code]).permutation(len(train))
            splits[split] = [train[i] for i in np.sort(perm[:n_out])]
            train = [train[i] for i in np.sort(perm[n_out:])]
        if "train" in splits:
            splits["train"] = train
        return splits

    def setup(self, stage: str) -> None:
        """Build the datasets a stage needs (``fit``, ``validate``, ``test`` or ``predict``)."""
        if stage == "predict":
            self.datasets["predict"] = [self._predict_dataset()]
            return
        index = self.index()
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}[stage]
        for split in needed:
            missing = [scale for scale in self.scales if not index[scale].get(split)]
            if split == "val" and stage == "fit" and len(missing) == len(self.scales) and self.val_fraction == 0:
                self.datasets.pop("val", None)  # no validation asked for: train only
                continue
            if missing:
                folder = self.scale_folder(missing[0])
                hint = {
                    "train": "add train/ or images to it",
                    "val": "add val/ or val.txt, or set data.val_fraction > 0",
                    "test": "add test/ or test.txt, or set data.test_fraction > 0",
                }[split]
                raise DataError(f"{folder}: no {split} images for scale '{missing[0]}'; {hint}")
            transform = segmentation_transform(
                self.image_size, train=split == "train", augment=self.augment, scale_range=self.scale_range
            )
            self.datasets[split] = [
                CrackMaskDataset(index[scale][split], len(self.classes), scale, transform) for scale in self.scales
            ]

    def _predict_dataset(self) -> Dataset[Sample]:
        return PhotoDataset(predict_photos(self.predict_root))

    def _loader(
        self, dataset: Dataset[Sample], batch_size: int, shuffle: bool, collate: Any, split: str | None = None
    ) -> DataLoader:
        what = f"{split} split of scale '{getattr(dataset, 'scale', '')}'"
        sampler = eval_sampler(self, dataset, what) if split is not None else None
        return self.loader(dataset, batch_size, shuffle, collate, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        """One shuffled loader over the training images of every chosen scale."""
        dataset: Dataset[Sample] = ConcatDataset(self.datasets["train"])
        return self._loader(dataset, self.batch_size, True, pad_collate)

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per scale (see :attr:`eval_scales`); empty when there is no validation."""
        datasets = self.datasets.get("val", [])
        return [self._loader(ds, self.eval_batch_size, False, pad_collate, "val") for ds in datasets]

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per scale (see :attr:`eval_scales`)."""
        return [self._loader(ds, self.eval_batch_size, False, pad_collate, "test") for ds in self.datasets["test"]]

    def predict_dataloader(self) -> DataLoader:
        """Photos under ``predict_root``, one at a time at native size."""
        return self._loader(self.datasets["predict"][0], 1, False, None)


def _resolve_scales(scales: Sequence[str]) -> tuple[str, ...]:
    """Canonical scale names in :data:`SCALES` order, without duplicates."""
    if isinstance(scales, str):
        scales = [scales]
    if not scales:
        raise ConfigError(f"data.scales is empty; choose from: {', '.join(SCALES)}")
    by_key = {normalize_name(s): s for s in SCALES}
    unknown = [s for s in scales if normalize_name(str(s)) not in by_key]
    if unknown:
        raise ConfigError(f"data.scales: unknown scale {unknown[0]!r}; choose from: {', '.join(SCALES)}")
    chosen = {by_key[normalize_name(str(s))] for s in scales}
    return tuple(s for s in SCALES if s in chosen)


class SyntheticCrackMaskDataModule(CrackMaskDataModule):
    """:class:`CrackMaskDataModule` over built-in synthetic crack masks, written on first use.

    Scenes at each chosen scale with cracks of known width (about a third crack-free, with
    distractors), written as image/mask pairs or a COCO export under ``root/<scale>/train`` and
    ``root/<scale>/test``; regenerated only when the generation settings change.

    Args:
        root: Folder to write the synthetic set to (created if needed).
        n_train: Training images per scale.
        n_test: Test images per scale.
        synthetic_size: Side of the generated images.
        synthetic_seed: Seed of the generator.
        write_format: ``masks`` (image/mask pairs) or ``coco``.
        write_workers: Processes rendering the set; None uses up to 4 CPU cores.
        **kwargs: Any :class:`CrackMaskDataModule` argument.
    """

    def __init__(
        self,
        root: str = "data/synthetic_cracks",
        n_train: int = 40,
        n_test: int = 10,
        synthetic_size: int = 256,
        synthetic_seed: int = 0,
        write_format: Literal["masks", "coco"] = "masks",
        write_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("format", write_format)
        super().__init__(root=root, **kwargs)
        self.write_workers = write_workers
        self.spec: dict[str, Any] = {
            "format": write_format,
            "scales": list(self.scales),
            "classes": list(self.classes),
            "n_train": n_train,
            "n_test": n_test,
            "size": synthetic_size,
            "seed": synthetic_seed,
        }

    def prepare_data(self) -> None:
        """Write the synthetic masks unless ``root`` already holds a set made with the same settings."""
        from crackcascade.data.synthetic import write_crack_masks

        prepare_synthetic(self.root, self.spec, write_crack_masks, self.write_workers)


CONCRETE_CRACK_FOLDERS: tuple[tuple[str, bool], ...] = (("Positive", True), ("Negative", False))
"""Class folders of the Özgenel (2018) concrete-crack set and whether their images show a crack."""


class _ConcreteCrackDataset(ImageFileDataset):
    """:class:`ImageFileDataset` whose samples also carry ``"crack"`` (1 or 0) for cross-dataset metrics."""

    def __init__(self, paths: Sequence[Path], cracks: Sequence[bool], transform: Any, min_size: int | None) -> None:
        damage_state = get_task("damage_state")
        labels = np.full((len(paths), len(TASK_NAMES)), IGNORE_INDEX, dtype=np.int64)
        labels[:, task_index(damage_state.name)] = [
            damage_state.class_index("damaged" if crack else "undamaged") for crack in cracks
        ]
        super().__init__(paths, labels, transform, min_size)
        self.cracks = [int(crack) for crack in cracks]

    def __getitem__(self, index: int) -> Sample:
        sample = super().__getitem__(index)
        sample["crack"] = self.cracks[index]
        return sample


class ConcreteCrackDataModule(LoaderDataModule):
    """The concrete-crack set of Özgenel (2018): ``root/Positive/*`` (crack) and ``root/Negative/*`` (none).

    Images (227 x 227 in the original) are resized to ``image_size`` and labelled in the Phi-Net
    format for the ``damage_state`` task (Positive is damaged, Negative undamaged; every other task
    unlabelled), so :class:`~crackcascade.models.multitask.MultiTaskClassifier` fine-tunes on them
    unchanged. Each sample also carries ``"crack"`` (1 or 0): a classifier with a ``damage_type``
    head then also logs whether that head finds the cracks (the paper's cross-dataset Table 2),
    which is how a Phi-Net-trained checkpoint is evaluated on this set.

    The set has no splits of its own: test and validation are carved per class (stratified, so
    each split keeps the class balance), seeded, test first, so a change of ``val_fraction`` leaves
    the test images unchanged. Folder names match case-insensitively.

    Args:
        root: Folder holding ``Positive/`` and ``Negative/``.
        image_size: Side of the square images fed to the model (224 in the paper).
        batch_size: Training images per step.
        eval_batch_size: Batch size for validation, test and predict; defaults to ``batch_size``.
        num_workers: DataLoader worker processes per loader.
        val_fraction: Fraction of each class held out for validation (0: no validation).
        test_fraction: Fraction of each class held out for test (0: no test split).
        seed: Seed of the splits.
        augment: Apply training augmentation (flips and colour jitter).
        predict_root: Folder of photos for ``predict`` (searched recursively).
        pin_memory: Pin host memory for faster GPU transfer; None pins when CUDA is available.
        on_error: ``raise`` at the first bad image (one line naming it), or ``skip`` bad images and
            count them (at set-up, and at the end of each epoch for those found when decoding).
        prefetch_factor: Batches each worker loads ahead (None: torch's default, 2); used only
            with ``num_workers`` > 0.
        jpeg_draft: Decode JPEGs at least twice ``image_size`` at 1/2, 1/4 or 1/8 scale (no
            smaller than ``image_size``; libjpeg's DCT-domain scaling, several times faster than a
            full decode). The pixels then differ a little from a full decode resized (the README's
            input-pipeline table measures how much); False always decodes at full size.
    """

    def __init__(
        self,
        root: str = "data/concrete_crack",
        image_size: int = 224,
        batch_size: int = 40,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        augment: bool = True,
        predict_root: str | None = None,
        pin_memory: bool | None = None,
        on_error: OnError = "raise",
        prefetch_factor: int | None = None,
        jpeg_draft: bool = True,
    ) -> None:
        super().__init__()
        check_loader_options(
            image_size,
            num_workers,
            prefetch_factor=prefetch_factor,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size or 1,
        )
        check_fractions(val_fraction=val_fraction, test_fraction=test_fraction)
        BadFiles(on_error)  # validates the option
        self.save_hyperparameters()
        self.root = Path(root)
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self._keep_loader_options(num_workers, pin_memory, prefetch_factor, on_error)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.augment = augment
        self.predict_root = predict_root
        # Side below which no JPEG is decoded, when draft decoding is on (the transform resizes to it).
        self.decode_size: int | None = image_size if jpeg_draft else None
        self._splits: dict[str, tuple[list[Path], list[bool]]] | None = None
        self.datasets: dict[str, Dataset[Sample]] = {}

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks this data provides labels for: the damage state only."""
        return (get_task("damage_state").name,)

    def class_folder(self, name: str) -> Path:
        """The class folder ``root/<name>``, matched case-insensitively, holding at least one image."""
        if not self.root.is_dir():
            raise DataError(f"data.root '{self.root}' does not exist or is not a folder; set --data.root")
        matches = [c for c in sorted(self.root.iterdir()) if c.is_dir() and c.name.lower() == name.lower()]
        if not matches:
            expected = " and ".join(f"{n}/" for n, _ in CONCRETE_CRACK_FOLDERS)
            raise DataError(f"data.root '{self.root}': no '{name}' folder; the set needs {expected}")
        if len(matches) > 1:
            spellings = ", ".join(f"'{m.name}'" for m in matches)
            raise DataError(f"data.root '{self.root}': folders {spellings} differ only in case; keep one")
        if not list_images(matches[0], recursive=False):
            raise DataError(f"{matches[0]}: '{name}' folder has no images (jpg, png, tif, bmp, webp)")
        return matches[0]

    def splits(self) -> dict[str, tuple[list[Path], list[bool]]]:
        """Read (once) both class folders and split them; split -> (paths, crack flags)."""
        if self._splits is None:
            splits: dict[str, tuple[list[Path], list[bool]]] = {s: ([], []) for s in ("train", "val", "test")}
            bad = BadFiles(self.on_error)
            for stream, (name, crack) in enumerate(CONCRETE_CRACK_FOLDERS):
                folder = self.class_folder(name)
                scan = scan_images(folder, boundary=self.root, recursive=False)
                bad.ignored.extend(scan.others)
                for path, target in scan.escaping:
                    bad.report("symlinks out of the root", escape_message(path, target, self.root))
                paths = [path for path in scan.images if bad.check(path)]
                if not paths:
                    raise DataError(f"{folder}: '{name}' folder has no readable images")
                for split, chosen in self._carve(paths, stream).items():
                    splits[split][0].extend(chosen)
                    splits[split][1].extend([crack] * len(chosen))
            warn_bad_files(self.root, bad)
            self._splits = splits
        return self._splits

    def _carve(self, paths: list[Path], stream: int) -> dict[str, list[Path]]:
        # Fractions are of the whole class, so the test and validation sizes do not depend on each other.
        total = len(paths)
        carved: dict[str, list[Path]] = {}
        for split, fraction, code in (("test", self.test_fraction, 1), ("val", self.val_fraction, 0)):
            n_out = 0 if fraction == 0 else min(len(paths) - 1, max(1, round(total * fraction)))
            perm = np.random.default_rng([self.seed, stream, code]).permutation(len(paths))
            carved[split] = [paths[i] for i in np.sort(perm[:n_out])]
            paths = [paths[i] for i in np.sort(perm[n_out:])]
        carved["train"] = paths
        return carved

    def setup(self, stage: str) -> None:
        """Build the datasets a stage needs (``fit``, ``validate``, ``test`` or ``predict``)."""
        if stage == "predict":
            paths = predict_photos(self.predict_root)
            self.datasets["predict"] = ImageFileDataset(
                paths, transform=self._transform(train=False), min_size=self.decode_size
            )
            return
        splits = self.splits()
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}[stage]
        for split in needed:
            paths, cracks = splits[split]
            if split == "val" and stage == "fit" and self.val_fraction == 0:
                self.datasets.pop("val", None)  # no validation asked for: train only
                continue
            if not paths:
                # Carving always leaves training images, so only a held-out split can be empty here.
                hint = f"set data.{split}_fraction > 0 (each class needs 2+ images)"
                raise DataError(f"data.root '{self.root}': no {split} images; {hint}")
            transform = self._transform(train=split == "train")
            self.datasets[split] = _ConcreteCrackDataset(paths, cracks, transform, self.decode_size)

    def _transform(self, train: bool) -> Any:
        return classification_transform(self.image_size, train=train, augment=self.augment)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        sampler = eval_sampler(self, dataset, f"{split} split") if split in ("val", "test") else None
        return self.loader(dataset, batch_size, shuffle, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training images of both classes."""
        return self._loader("train", self.batch_size, True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Validation images; empty (no validation) when ``val_fraction`` is 0."""
        return self._loader("val", self.eval_batch_size, False) if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        """Test images of both classes."""
        return self._loader("test", self.eval_batch_size, False)

    def predict_dataloader(self) -> DataLoader:
        """Photos under ``predict_root``, unlabelled."""
        return self._loader("predict", self.eval_batch_size, False)
