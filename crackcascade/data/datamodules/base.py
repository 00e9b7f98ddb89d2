"""What every crackcascade data module shares: its loader options, DataLoaders and seeded splits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Sampler

from crackcascade.data.io import BadFiles, list_images
from crackcascade.data.sampling import LoaderDataset, ReplayLoader, ReplaySampler, SkipCollate
from crackcascade.data.types import OnError, Sample
from crackcascade.errors import ConfigError, DataError

T = TypeVar("T")


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


def check_batch_options(image_size: int, **batch_sizes: int) -> None:
    """Fail with one line naming the option if a batch size or the image size cannot work."""
    for name, value in batch_sizes.items():
        if value < 1:
            raise ConfigError(f"data.{name} must be >= 1, got {value}")
    if image_size < 16:
        raise ConfigError(f"data.image_size must be >= 16, got {image_size}")


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


def split_off(count: int, fraction: float, total: int, seed: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Draw, from ``seed`` alone, which of ``count`` items to hold out: ``fraction`` of ``total``.

    At least one item is held out and at least one kept; ``total`` may exceed ``count`` when an
    earlier split was already taken from the same items, so that each fraction is of the whole.

    Args:
        count: Number of items to choose from (at least 2).
        fraction: Fraction of ``total`` to hold out, in ``(0, 1)``.
        total: Number of items the fraction is of.
        seed: Entropy of the draw (the run's seed and what tells this draw apart from others).

    Returns:
        The sorted positions held out and the sorted positions kept.
    """
    n_out = min(count - 1, max(1, round(total * fraction)))
    perm = np.random.default_rng(list(seed)).permutation(count)
    return np.sort(perm[:n_out]), np.sort(perm[n_out:])


HELD_OUT_CODES: dict[str, int] = {"test": 1, "val": 0}
"""Seed code of each held-out split; test is carved first, so a change of val_fraction leaves it unchanged."""


def carve_splits(items: Sequence[T], fractions: dict[str, float], seed: int, stream: int) -> dict[str, list[T]]:
    """Carve seeded test and validation splits out of ``items``, test first; the rest is ``train``.

    A split whose fraction is 0, or for which fewer than two items remain, is left out of the
    result. Each fraction is of all ``items``, so the test and validation sizes do not depend
    on each other.

    Args:
        items: What to split (records, paths).
        fractions: Fraction of ``items`` for each of ``test`` and ``val`` to carve (others absent).
        seed: Seed of the splits.
        stream: Tells apart item sets split with the same seed (a scale, a class).

    Returns:
        ``train`` and each split carved, items in their original order.
    """
    rest = list(items)
    carved: dict[str, list[T]] = {}
    for split, code in HELD_OUT_CODES.items():
        fraction = fractions.get(split, 0.0)
        if fraction == 0 or len(rest) < 2:
            continue
        out, kept = split_off(len(rest), fraction, len(items), (seed, stream, code))
        carved[split] = [rest[i] for i in out]
        rest = [rest[i] for i in kept]
    carved["train"] = rest
    return carved


class LoaderDataModule(pl.LightningDataModule):
    """A data module whose DataLoaders share its worker, pinning, prefetch and ``on_error`` options.

    Subclasses take these options as ``**loader_options``, pass them to this ``__init__`` and
    build every DataLoader with :meth:`loader`. The options are saved with the hyper-parameters
    whether given or left at their defaults.

    Args:
        num_workers: DataLoader worker processes (a module with several training loaders shares
            them among those).
        pin_memory: Pin host memory for faster GPU transfer; None pins when CUDA is available.
        prefetch_factor: Batches each worker loads ahead (None: torch's default, 2); used only
            with ``num_workers`` > 0.
        on_error: ``raise`` at the first bad image, mask or annotation (one line naming it), or
            ``skip`` bad ones and count them: those found at set-up (empty, not an image, too
            large, a symlink out of the root, missing from a manifest, a bad annotation) are
            reported once, those found when decoding (truncated) at the end of each epoch. Bad
            Phi-Net labels always raise.
    """

    def __init__(
        self,
        *,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        prefetch_factor: int | None = None,
        on_error: OnError = "raise",
    ) -> None:
        super().__init__()
        if prefetch_factor is not None and prefetch_factor < 1:
            raise ConfigError(f"data.prefetch_factor must be >= 1 or null, got {prefetch_factor}")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}")
        BadFiles(on_error)  # validates the option
        # Subclasses save their own arguments, which hold these options only when given explicitly.
        self.save_hyperparameters(
            {
                "num_workers": num_workers,
                "pin_memory": pin_memory,
                "prefetch_factor": prefetch_factor,
                "on_error": on_error,
            }
        )
        self.num_workers = num_workers
        self.pin_memory: bool = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.prefetch_factor = prefetch_factor
        self.on_error: OnError = on_error

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
