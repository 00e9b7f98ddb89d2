"""The largest training batch that fits: Lightning's batch-size search, held under a memory cap.

Use it from the command line as a callback::

    crackcascade fit --config configs/resnet_multitask.yaml --trainer.callbacks+=crackcascade.LargestBatchFinder
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BatchSizeFinder
from pytorch_lightning.tuner import batch_size_scaling
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.memory import is_oom_error
from pytorch_lightning.utilities.parsing import lightning_setattr

from crackcascade.errors import ConfigError
from crackcascade.hardware import memory_cap


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


class LargestBatchFinder(BatchSizeFinder):
    """Find the largest training batch that fits in memory, before ``fit`` trains with it.

    Lightning's :class:`~pytorch_lightning.callbacks.BatchSizeFinder` (power mode by default):
    from ``init_val`` it doubles ``data.batch_size`` while ``steps_per_trial`` training steps
    succeed, stops at the first out-of-memory error and keeps the last size that ran, then
    restores the model and trains with it. During the search this process may use only
    ``memory_fraction`` of the memory free at its start (see :func:`~crackcascade.hardware.memory_cap`), so the size
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
