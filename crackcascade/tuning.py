"""The largest training batch that fits: Lightning's batch-size search, held under a memory cap.

Use it from the command line as a callback::

    crackcascade fit --config configs/resnet_multitask.yaml --trainer.callbacks+=crackcascade.LargestBatchFinder
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BatchSizeFinder
from pytorch_lightning.tuner import batch_size_scaling
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.memory import is_oom_error
from pytorch_lightning.utilities.parsing import lightning_setattr

from crackcascade.errors import ConfigError

_CGROUP_V2 = Path("/sys/fs/cgroup")
_CGROUP_V1 = Path("/sys/fs/cgroup/memory")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) is not a number


def available_memory() -> int | None:
    """Bytes of host memory this process may still use: ``MemAvailable``, less where a cgroup limit is tighter.

    None where it cannot be read (not Linux).
    """
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        return None
    for limit_file, usage_file in (
        (_CGROUP_V2 / "memory.max", _CGROUP_V2 / "memory.current"),
        (_CGROUP_V1 / "memory.limit_in_bytes", _CGROUP_V1 / "memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and available is not None:
            available = min(available, max(0, limit - usage))
    return available


def data_segment_size() -> int | None:
    """Bytes this process has in private writable memory (``VmData``), what ``RLIMIT_DATA`` counts; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def is_out_of_memory(exception: BaseException) -> bool:
    """Lightning's out-of-memory test, plus oneDNN's failure to allocate a convolution under the CPU cap.

    On the CPU an allocation refused by the cap can surface from oneDNN as ``could not create a
    primitive`` instead of PyTorch's allocator error; in the search, where the smaller size before
    ran the same convolutions, it means the larger batch does not fit.
    """
    return is_oom_error(exception) or (
        isinstance(exception, RuntimeError) and "could not create a primitive" in str(exception)
    )


@contextmanager
def _count_onednn_failures_as_oom() -> Iterator[None]:
    # Lightning's search looks the test up in its own module at each failure.
    original = batch_size_scaling.is_oom_error
    batch_size_scaling.is_oom_error = is_out_of_memory
    try:
        yield
    finally:
        batch_size_scaling.is_oom_error = original


@contextmanager
def memory_cap(device: torch.device, fraction: float) -> Iterator[int | None]:
    """Let this process allocate at most ``fraction`` of the memory free now on ``device``, then restore.

    On a CUDA device the caching allocator is capped
    (:func:`torch.cuda.set_per_process_memory_fraction`), so an allocation beyond the cap raises
    CUDA's out-of-memory error while the card still has room left. On the CPU (Linux) the
    process's ``RLIMIT_DATA`` is set to its current data size plus ``fraction`` of the available
    RAM, so PyTorch's allocator fails with its "can't allocate memory" error (or oneDNN with
    ``could not create a primitive``, see :func:`is_out_of_memory`) instead of the machine swapping
    or the kernel killing the process. That bounds how far the data segment
    grows: memory the process freed earlier but kept mapped is reused without counting, so the
    cap is tightest in a fresh process, as a training run is. DataLoader workers forked meanwhile
    inherit the limit.

    Yields:
        The number of bytes allowed beyond what is in use now, or None where no cap could be set.
    """
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        allowed = int(fraction * free)
        torch.cuda.set_per_process_memory_fraction(
            min(1.0, (torch.cuda.memory_reserved(index) + allowed) / total), index
        )
        try:
            yield allowed
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, index)
        return
    available, in_use = available_memory(), data_segment_size()
    if device.type != "cpu" or available is None or in_use is None or not hasattr(resource, "RLIMIT_DATA"):
        yield None
        return
    allowed = int(fraction * available)
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = in_use + allowed
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield allowed
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


class LargestBatchFinder(BatchSizeFinder):
    """Find the largest training batch that fits in memory, before ``fit`` trains with it.

    Lightning's :class:`~pytorch_lightning.callbacks.BatchSizeFinder` (power mode by default):
    from ``init_val`` it doubles ``data.batch_size`` while ``steps_per_trial`` training steps
    succeed, stops at the first out-of-memory error and keeps the last size that ran, then
    restores the model and trains with it. During the search this process may use only
    ``memory_fraction`` of the memory free at its start (see :func:`memory_cap`), so the size
    found leaves the rest for evaluation, fragmentation and other processes, and on the CPU the
    search ends on an allocation error instead of swapping. The search also stops at the
    dataset's length and at 8192.

    With several Phi-Net tasks the batch is shared by the task loaders (see
    :class:`~crackcascade.data.datamodules.PhiNetDataModule`). The size found is written to the
    data module's ``batch_size`` and saved hyper-parameters, so checkpoints record it. It runs in
    a single process only (not under DDP) and for ``fit`` only.

    Args:
        memory_fraction: Fraction of the memory free at the start that the search may use.
        mode: ``power`` (doubling) or ``binsearch`` (doubling, then bisection after a failure).
        steps_per_trial: Training steps run at each size.
        init_val: First batch size tried.
        max_trials: Most sizes tried.
        margin: Fraction taken off the size found in ``binsearch`` mode, as a safety buffer.
    """

    def __init__(
        self,
        memory_fraction: float = 0.9,
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        margin: float = 0.05,
    ) -> None:
        if not 0.0 < memory_fraction <= 1.0:
            raise ConfigError(f"LargestBatchFinder memory_fraction must be in (0, 1], got {memory_fraction}")
        if mode not in self.SUPPORTED_MODES:
            raise ConfigError(f"LargestBatchFinder mode must be one of {', '.join(self.SUPPORTED_MODES)}, got {mode!r}")
        if steps_per_trial < 1 or init_val < 1 or max_trials < 1:
            raise ConfigError("LargestBatchFinder steps_per_trial, init_val and max_trials must be >= 1")
        if not 0.0 <= margin < 1.0:
            raise ConfigError(f"LargestBatchFinder margin must be in [0, 1), got {margin}")
        super().__init__(mode, steps_per_trial, init_val, max_trials, "batch_size", margin)
        self.memory_fraction = memory_fraction

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str | None = None) -> None:
        """Check the run can be searched (single process, a data module with ``batch_size``); fit only."""
        if stage == "fit":
            super().setup(trainer, pl_module, stage)

    def scale_batch_size(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Search under the memory cap, then record the size found on the data module."""
        datamodule = getattr(trainer, "datamodule", None)
        # Lightning compares the configured size with the dataset's length before it sets
        # init_val, and keeps a configured size that is already too large; start from init_val.
        lightning_setattr(pl_module, "batch_size", self._init_val)
        try:
            with memory_cap(pl_module.device, self.memory_fraction) as allowed, _count_onednn_failures_as_oom():
                if allowed is None:
                    rank_zero_warn(f"LargestBatchFinder: no memory cap on {pl_module.device}; searching without one")
                super().scale_batch_size(trainer, pl_module)
        except MemoryError:
            # Python or numpy hit the cap before PyTorch did, which Lightning does not take for an
            # out-of-memory error. The model is restored by then; the size that failed is still set.
            size = getattr(datamodule, "batch_size", "?")
            raise ConfigError(
                f"LargestBatchFinder: the memory cap was reached outside PyTorch at batch size {size}; "
                "raise memory_fraction or set data.batch_size yourself"
            ) from None
        hparams = getattr(datamodule, "hparams", None)
        if self.optimal_batch_size is not None and hparams is not None and "batch_size" in hparams:
            hparams["batch_size"] = self.optimal_batch_size
        cap = f"{allowed / 2**30:.1f} GiB" if allowed is not None else "no cap"
        rank_zero_info(f"LargestBatchFinder: training with batch size {self.optimal_batch_size} (memory {cap})")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Do nothing: only training batches are searched."""

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Do nothing: only training batches are searched."""

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Do nothing: only training batches are searched."""
