"""Training order and augmentation that replay exactly after a restart, and samples skipped on error.

A run killed mid-epoch and resumed from a checkpoint must see the same images in the same order
with the same random crops, flips and colour jitter as a run that was never interrupted. The
global RNG cannot promise that: how far it has advanced depends on the whole history of the
process (workers, prefetching, the sanity check). So the training loaders built by
:func:`~crackcascade.data.datamodules.make_loader` take every random draw from the seed alone:

* :class:`ReplaySampler` orders each epoch by a permutation drawn from ``(seed, stream, epoch,
  pass)``; Lightning calls its ``set_epoch`` at the start of every epoch (also of a restarted
  one), and :meth:`ReplaySampler.resume` makes a restarted epoch skip the batches already trained.
* :class:`ReplayLoader`, the DataLoader around it, counts the batches it has handed to training
  and is *stateful*: Lightning's fit loop saves its ``state_dict`` (epoch, pass, samples trained)
  into every checkpoint and, on a restart, gives it back through ``load_state_dict`` before the
  epoch's first batch, which resumes the sampler at that position.
* each index it yields carries a per-sample seed, and :class:`LoaderDataset` runs the dataset's
  transform under that seed (the global RNG is saved and restored around it), so augmentation
  depends on ``(seed, epoch, position)`` only: the same for any ``num_workers``, persistent
  workers or not, and for skipped batches that are never decoded.

The seed is the one ``seed_everything`` set (``PL_GLOBAL_SEED``, the CLI's ``seed_everything``);
without one the sampler draws a seed once from torch's RNG, so runs still shuffle but do not
replay. Under DDP Lightning replaces the sampler with its ``DistributedSampler`` (this is a
:class:`~torch.utils.data.RandomSampler`), which is seeded per epoch too; samples then carry no
seed and augment from the worker's RNG, and a restart mid-epoch starts the epoch's order anew.

:class:`LoaderDataset` also implements ``on_error="skip"`` at load time: a sample whose file
cannot be decoded becomes a :class:`Skipped` marker, and :class:`SkipCollate` drops it from the
batch and lists its one-line message under ``batch["skipped"]`` (a batch of only skipped samples
is ``{"skipped": [...]}``), which :class:`~crackcascade.callbacks.SkipReport` counts and reports at
the end of the epoch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torch.utils.data._utils.collate import default_collate

from crackcascade.errors import DataError, one_line

SeededIndex = tuple[int, int]
"""``(index, seed)``: what :class:`ReplaySampler` yields."""


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence), for ``torch.manual_seed``."""
    high, low = np.random.SeedSequence([int(v) & 0xFFFFFFFFFFFFFFFF for v in values]).generate_state(2)
    return ((int(high) << 32) | int(low)) & 0x7FFFFFFFFFFFFFFF


def global_seed() -> int | None:
    """The seed ``seed_everything`` set in this process (or its parent), or None."""
    text = os.environ.get("PL_GLOBAL_SEED")
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class ReplaySampler(RandomSampler):
    """Random order per epoch from ``(seed, stream, epoch, pass)``, yielding ``(index, sample seed)``.

    A loader that is cycled within an epoch (a small task under Lightning's ``max_size_cycle``)
    takes a new permutation on each pass. Being a :class:`~torch.utils.data.RandomSampler`,
    it is replaced by Lightning's ``DistributedSampler`` under DDP.

    Its state (:meth:`state_dict`) is the position training has reached: the epoch, the pass
    and how many of that pass's samples were handed to training, as its :class:`ReplayLoader`
    reports them (:meth:`handed_out`, :meth:`give_back`); the sampler itself cannot tell, since
    DataLoader workers draw indices ahead of training.

    Args:
        data_source: The dataset (only its length is used).
        stream: Distinguishes loaders that share a seed (one per Phi-Net task).
        seed: Base seed; None reads ``PL_GLOBAL_SEED`` when iterated, or draws one from torch.
    """

    def __init__(self, data_source: Sequence[Any] | Dataset[Any], stream: int = 0, seed: int | None = None) -> None:
        super().__init__(data_source)  # type: ignore[arg-type]
        self.stream = stream
        self.seed = seed
        self.epoch = 0
        self._pass = 0
        self._skip = 0
        self._pending: tuple[int, int, int] | None = None
        self._drawn: int | None = None
        # (pass, samples of it handed to training) in the current epoch, and before the batch in flight.
        self._position = self._before = (0, 0)

    def __len__(self) -> int:
        return len(self.data_source)

    def _base_seed(self) -> int:
        if self.seed is not None:
            return self.seed
        found = global_seed()
        if found is not None:
            return found
        if self._drawn is None:
            self._drawn = int(torch.empty((), dtype=torch.int64).random_().item())
        return self._drawn

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first pass (or where :meth:`resume` said it stopped)."""
        self.epoch = epoch
        self._pass, self._skip = 0, 0
        if self._pending is not None and self._pending[0] == epoch:
            _, self._pass, self._skip = self._pending
        self._pending = None
        self._position = self._before = (self._pass, self._skip)

    def resume(self, epoch: int, completed_passes: int, samples_done: int) -> None:
        """Make epoch ``epoch`` continue after ``completed_passes`` passes and ``samples_done`` more samples.

        Takes effect at the next :meth:`set_epoch` of that epoch, which Lightning calls before it
        iterates the restarted epoch.
        """
        self._pending = (epoch, completed_passes, samples_done)

    def handed_out(self, samples: int) -> None:
        """Count a batch of ``samples`` more of the current pass as handed to training (by :class:`ReplayLoader`)."""
        current, done = self._position
        self._before = self._position
        self._position = (current, min(done + samples, len(self)))

    def pass_ended(self) -> None:
        """Its loader has handed out the whole pass: no batch of it is in flight any more."""
        self._before = self._position

    def give_back(self) -> None:
        """The batch handed out last was not trained (its step raised): a restart hands it out again."""
        self._position = self._before

    def state_dict(self) -> dict[str, int]:
        """The position training has reached: ``epoch``, ``pass`` and the ``samples`` of that pass trained."""
        current, done = self._position
        if done >= len(self):  # the whole pass: the next sample is the next pass's first
            current, done = current + 1, 0
        return {"epoch": self.epoch, "pass": current, "samples": done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict` once that epoch starts again (see :meth:`resume`)."""
        self.resume(int(state_dict["epoch"]), int(state_dict["pass"]), int(state_dict["samples"]))

    def __iter__(self) -> Iterator[SeededIndex]:  # type: ignore[override]
        seed, n = self._base_seed(), len(self)
        current, start = self._pass, self._skip
        self._pass, self._skip = current + 1, 0
        self._position = self._before = (current, start)
        generator = torch.Generator().manual_seed(mix_seed(seed, self.stream, self.epoch, current))
        order = torch.randperm(n, generator=generator).tolist()
        # One seed per position of the pass, drawn all at once: skipping a prefix leaves the rest unchanged.
        seeds = torch.randint(0, 1 << 62, (n,), generator=generator).tolist()
        for position in range(start, n):
            yield order[position], seeds[position]


class ReplayLoader(DataLoader):
    """A training DataLoader whose position in the epoch goes into checkpoints, so a restart resumes there.

    With a :class:`ReplaySampler` (and a ``batch_size``) it tells the sampler of every batch it
    hands out, and its ``state_dict``/``load_state_dict`` are the sampler's: Lightning's fit loop
    saves the state of such stateful loaders with its own and restores it before iterating a
    restarted epoch. Lightning knows the length of these loaders, so it fetches no batch ahead
    of the step that trains it, and the position saved at the end of a step is that of the
    batches trained. A step that raises leaves its batch in flight, and Lightning runs it again
    after a restart: :class:`~crackcascade.callbacks.MidEpochResume` gives it back
    (:meth:`give_back`) before the checkpoint saved on the exception is written. With any other
    sampler (Lightning's ``DistributedSampler`` under DDP) it is a plain DataLoader whose state
    is empty.

    It takes exactly :class:`~torch.utils.data.DataLoader`'s arguments, so Lightning can rebuild
    it with another sampler.
    """

    @property
    def replay_sampler(self) -> ReplaySampler | None:
        """The :class:`ReplaySampler` this loader resumes a restarted epoch with, or None (it cannot)."""
        sampler = self.sampler
        return sampler if isinstance(sampler, ReplaySampler) and self.batch_size is not None else None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler = self.replay_sampler
        if sampler is None or self.batch_size is None:  # batch_size: for mypy, see replay_sampler
            return super().__iter__()
        return self._counted(sampler, self.batch_size)

    def _counted(self, sampler: ReplaySampler, batch_size: int) -> Iterator[Any]:
        # A generator: nothing is drawn until the first batch is asked for, after Lightning's set_epoch.
        for batch in super().__iter__():
            sampler.handed_out(batch_size)
            yield batch
        sampler.pass_ended()

    def give_back(self) -> None:
        """The batch handed out last was not trained: a restart from a checkpoint saved now hands it out again."""
        sampler = self.replay_sampler
        if sampler is not None:
            sampler.give_back()

    def state_dict(self) -> dict[str, Any]:
        """The sampler's position (:meth:`ReplaySampler.state_dict`); empty without a replay sampler."""
        sampler = self.replay_sampler
        return {} if sampler is None else {"sampler": sampler.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the sampler where the saved state says; a state this loader cannot replay is ignored."""
        sampler = self.replay_sampler
        if sampler is not None and "sampler" in state_dict:
            sampler.load_state_dict(state_dict["sampler"])


@dataclass(frozen=True)
class Skipped:
    """A sample left out under ``on_error="skip"``: the one-line reason, naming the file."""

    message: str


class LoaderDataset(Dataset[Any]):
    """The dataset a crackcascade DataLoader reads: seeded augmentation and ``on_error`` at load time.

    Args:
        dataset: The map-style dataset.
        skip: Return :class:`Skipped` for a sample whose loading raises :class:`DataError`
            instead of raising (``on_error="skip"``).
    """

    def __init__(self, dataset: Dataset[Any], skip: bool = False) -> None:
        self.dataset = dataset
        self.skip = skip

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | SeededIndex) -> Any:
        index, seed = key if isinstance(key, tuple) else (key, None)
        try:
            if seed is None:
                return self.dataset[index]
            # Only this sample's transform sees the seed; the process's own stream (dropout, the
            # next sample in a worker) continues unchanged.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.dataset[index]
        except DataError as err:
            if not self.skip:
                raise
            return Skipped(one_line(err))


class SkipCollate:
    """Collate the samples that loaded and list the skipped ones' messages under ``"skipped"``.

    Args:
        collate: The collate function for the kept samples (torch's default if None).
    """

    def __init__(self, collate: Callable[[list[Any]], Any] | None = None) -> None:
        self.collate = collate or default_collate

    def __call__(self, samples: list[Any]) -> Any:
        """Return the collated kept samples, with ``"skipped"`` listing the others' messages."""
        kept = [s for s in samples if not isinstance(s, Skipped)]
        skipped = [s.message for s in samples if isinstance(s, Skipped)]
        batch = self.collate(kept) if kept else {}
        if skipped:
            batch["skipped"] = skipped
        return batch


def has_samples(batch: Any) -> bool:
    """False for a batch whose every sample was skipped (``{"skipped": [...]}``)."""
    return not (isinstance(batch, dict) and "image" not in batch and "skipped" in batch)
