"""Runs that fail early and clearly, resume exactly, and never train on garbage.

* :func:`preflight` checks, before the first epoch, that every folder a run writes to (logs,
  checkpoints) can be written and has room for the checkpoints it will keep.
* :func:`check_finite_loss` stops training at the first NaN or infinite loss, before the update,
  naming the global step, the task or loss term and the batch's files.
* :class:`RunGuard`, which the ``crackcascade`` command adds to every Trainer, runs the pre-flight
  check, seeds the model's random draws (dropout) from ``(seed, epoch, batch)`` so a resumed run
  replays them, makes a run restarted mid-epoch skip the batches it already trained (see
  :mod:`crackcascade.data.sampling`), and reports the samples skipped under ``on_error="skip"``
  at the end of each epoch.

SIGTERM (a scheduler or ``kill``) is Lightning's: it finishes the current batch, saves the
checkpoints configured with ``save_on_exception`` and stops; the ``crackcascade`` command then
prints where the checkpoint is and exits with status 143 (see :mod:`crackcascade.cli`).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader

from crackcascade.data.sampling import ReplaySampler, global_seed, mix_seed
from crackcascade.errors import ConfigError, NumericalError

MIB = 1 << 20
_MID_EPOCH_WARNING = "You're resuming from a checkpoint that ended before the epoch ended"
DEFAULT_OPTION = "--trainer.default_root_dir or logger save_dir"
"""The options that choose where logs and checkpoints go, for error messages."""
LOG_SPACE = 16 * MIB
"""Free space a log folder needs (metrics, configs, confusion matrices)."""


# ---- pre-flight -------------------------------------------------------------------------------


def checkpoint_bytes(module: torch.nn.Module) -> int:
    """About how large a checkpoint of ``module`` is: weights, buffers and two optimizer moments (Adam)."""
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    return 3 * params + buffers


def output_dirs(trainer: pl.Trainer) -> dict[Path, str]:
    """The folders a ``fit`` writes to, each with its role: ``logs`` or ``checkpoints``.

    Computed as the loggers and :class:`~pytorch_lightning.callbacks.ModelCheckpoint` will
    resolve them (the version folder of a CSV or TensorBoard logger is fixed by asking), without
    creating anything.
    """
    dirs: dict[Path, str] = {}
    for logger in trainer.loggers:
        folder = logger.log_dir if isinstance(logger, CSVLogger | TensorBoardLogger) else logger.save_dir
        if folder is not None:
            dirs[Path(folder)] = "logs"
    if not trainer.loggers:
        dirs[Path(trainer.default_root_dir)] = "logs"
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            dirs[Path(checkpoint_dir(trainer, callback))] = "checkpoints"
    return dirs


def checkpoint_dir(trainer: pl.Trainer, callback: ModelCheckpoint) -> str:
    """Where ``callback`` saves: ``dirpath``, else ``<save_dir>/<name>/<version>/checkpoints`` as in Lightning."""
    if callback.dirpath is not None:
        return str(callback.dirpath)
    if not trainer.loggers:
        return os.path.join(trainer.default_root_dir, "checkpoints")
    logger = trainer.loggers[0]
    save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return os.path.join(save_dir, str(logger.name), version, "checkpoints")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(folder: Path, role: str, option: str = DEFAULT_OPTION) -> Path:
    """Fail with one line unless ``folder`` (or the nearest existing folder above it) takes a file.

    Creates nothing: it writes and removes a probe file in the nearest existing folder.

    Args:
        folder: The folder a run will write to.
        role: What goes there, for the message (``logs``, ``checkpoints``, ``predictions``).
        option: The option(s) that choose the folder, for the message.

    Returns:
        The nearest existing folder.

    Raises:
        ConfigError: Naming the folder and ``option``: a file is in the way, no permission, read-only.
    """
    base = _existing_ancestor(folder)
    probe = base / f".crackcascade-write-test-{os.getpid()}"
    try:
        if not base.is_dir():
            raise NotADirectoryError(f"{base} is a file")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(f"cannot write the {role} folder '{folder}' ({reason}); choose a writable {option}") from None
    return base


def preflight(trainer: pl.Trainer, module: torch.nn.Module | None = None) -> None:
    """Check before training that every output folder is writable and has room, or fail with one line.

    Checkpoint folders need room for one checkpoint per checkpoint callback plus the one being
    written (about :func:`checkpoint_bytes` each); log folders 16 MiB.

    Args:
        trainer: The trainer about to ``fit``.
        module: The model, to size its checkpoints; None checks writability and log space only.

    Raises:
        ConfigError: Naming the folder: not writable (read-only, under a file, no permission), or
            too little free space.
    """
    callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    size = checkpoint_bytes(module) if module is not None else 0
    for folder, role in output_dirs(trainer).items():
        base = check_writable(folder, role)
        free = shutil.disk_usage(base).free
        if role == "checkpoints":
            count = len(callbacks) + 1
            need = count * size + LOG_SPACE
            detail = f"this run keeps up to {count} checkpoints of about {size / MIB:.0f} MiB"
        else:
            need, detail = LOG_SPACE, f"logs need {LOG_SPACE // MIB} MiB"
        if free < need:
            raise ConfigError(
                f"only {free / MIB:.0f} MiB free for the {role} folder '{folder}', but {detail}; "
                "free disk space or choose another --trainer.default_root_dir"
            )


# ---- the folders of a failed run ----------------------------------------------------------------

_BOOKKEEPING = ("config.yaml", "hparams.yaml")
"""What every run writes to its log folder before it does anything: the resolved config, the loggers' hparams."""
_EVENTS = "events.out.tfevents."


def missing_folders(trainer: pl.Trainer) -> set[Path]:
    """The output folders of a run about to start (see :func:`output_dirs`) and their parents that do not exist yet."""
    missing: set[Path] = set()
    for folder in output_dirs(trainer):
        path = folder.absolute()
        while not path.exists() and path != path.parent:
            missing.add(path)
            path = path.parent
    return missing


def discard_unused_folders(trainer: pl.Trainer, created: set[Path]) -> list[Path]:
    """After a failed run, remove the folders it created if it wrote nothing there but bookkeeping.

    A run that fails before training (a bad data root, an option that only the data can refute)
    has already made its log folder (``version_N``) and written the resolved ``config.yaml``,
    the loggers' ``hparams.yaml`` and a TensorBoard event file into it; left behind, each failed
    try adds an empty-looking version and moves the next run's number on. A folder is removed
    only if this run created it (it is in ``created``, taken by :func:`missing_folders` before the
    run), holds nothing but those files and removed sub-folders, and the run logged no metric;
    anything else (a checkpoint, ``metrics.csv``, a folder that existed before) is kept whole.

    Returns:
        The folders removed.
    """
    if trainer.logged_metrics or trainer.callback_metrics:
        return []  # the event files and loggers may hold this run's curves
    removed: list[Path] = []
    for folder in sorted(created, key=lambda p: len(p.parts), reverse=True):
        if folder.is_symlink() or not folder.is_dir():
            continue
        entries = list(folder.iterdir())
        if not all(_bookkeeping(entry) for entry in entries):
            continue
        try:
            for entry in entries:
                entry.unlink()
            folder.rmdir()
        except OSError:
            continue  # a file appeared meanwhile, or no permission: keep what is left
        removed.append(folder)
    return removed


def _bookkeeping(entry: Path) -> bool:
    """A file that a run writes before it produces anything (see :data:`_BOOKKEEPING`)."""
    if entry.is_symlink() or not entry.is_file():
        return False
    return entry.name in _BOOKKEEPING or entry.name.startswith(_EVENTS)


# ---- numerical faults -------------------------------------------------------------------------


def check_finite_loss(
    module: pl.LightningModule,
    loss: Tensor,
    terms: Mapping[str, Tensor] | Callable[[], Mapping[str, Tensor]],
    batch: Mapping[str, Any],
) -> None:
    """Stop training at a NaN or infinite loss, before the update that would spread it to the weights.

    Reading the loss's finiteness is a device-to-host copy of one value per step, a sync on a GPU.
    That is the price of not taking a single step on garbage: by the time an asynchronous check
    reported, the optimizer would have written NaN into the weights (and into a checkpoint saved
    on the error). The progress bar reads the loss every step already.

    Args:
        module: The module being trained (for the step and epoch).
        loss: The scalar loss of the step.
        terms: Its named parts (a task's loss, a class's BCE or Dice), or a function computing
            them, called only when the loss is not finite.
        batch: The batch, whose ``path`` entries name the files.

    Raises:
        NumericalError: One line with the global step, the non-finite terms and the batch's files.
    """
    if bool(torch.isfinite(loss.detach())):
        return
    parts = terms() if callable(terms) else terms
    bad = [f"{name} {float(value):g}" for name, value in parts.items() if not bool(torch.isfinite(value).all())]
    which = "non-finite " + ", ".join(bad) if bad else "every term finite but their sum not"
    paths = [str(p) for p in batch.get("path", [])]
    files = ", ".join(paths[:4]) + (f" and {len(paths) - 4} more" if len(paths) > 4 else "")
    trainer = module.trainer
    where = f"global step {trainer.global_step} (epoch {trainer.current_epoch})"
    raise NumericalError(
        f"training loss is {float(loss):g} at {where}: {which}; batch files: {files or 'unnamed'}; "
        "stopped before the update (lower --model.lr, set --trainer.gradient_clip_val, or check these files)"
    )


# ---- the callback -----------------------------------------------------------------------------


def _loaders(trainer: pl.Trainer) -> list[DataLoader]:
    combined = trainer.fit_loop._combined_loader
    return [dl for dl in (combined.flattened if combined is not None else []) if isinstance(dl, DataLoader)]


def _skipped(batch: Any) -> list[str]:
    """Messages of the samples left out of a batch (``on_error="skip"``), also inside a CombinedLoader batch."""
    if not isinstance(batch, Mapping):
        return []
    found = list(batch.get("skipped", []))
    for value in batch.values():
        if isinstance(value, Mapping):
            found += _skipped(value)
    return found


class RunGuard(Callback):
    """Pre-flight checks, replayable random draws, exact mid-epoch resume and skip reports (see the module docs).

    The ``crackcascade`` command adds it to every Trainer; add it yourself to a Trainer you build.

    Args:
        check_output: Run :func:`preflight` at the start of ``fit``.
    """

    def __init__(self, check_output: bool = True) -> None:
        self.check_output = check_output
        self.checked = False
        self._skips: dict[str, list[str]] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the output folders before ``fit`` (the CLI checks them earlier, before the loggers start)."""
        if stage == "fit" and self.check_output and not self.checked and trainer.is_global_zero:
            preflight(trainer, pl_module)
        self.checked = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """On a restart mid-epoch, make each training loader skip the batches the checkpoint already trained."""
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if not 0 < done < trainer.num_training_batches:
            return  # a fresh start, or a checkpoint from the end of an epoch: the next epoch starts anew
        combined = trainer.fit_loop._combined_loader
        cycle = combined is None or combined._mode == "max_size_cycle"
        loaders = _loaders(trainer)
        replayable = 0
        for loader in loaders:
            sampler, length = loader.sampler, len(loader)
            if not isinstance(sampler, ReplaySampler) or length == 0 or loader.batch_size is None:
                continue
            passes, rest = divmod(done, length) if cycle else (0, min(done, length))
            sampler.resume(trainer.current_epoch, passes, rest * loader.batch_size)
            replayable += 1
        if loaders and replayable == len(loaders):
            rank_zero_info(f"resuming epoch {trainer.current_epoch} after its first {done} batches, in the same order")
            # Lightning warns that a mid-epoch restart of a loader without state_dict() is unreliable;
            # these loaders replay their order from the seed, as arranged just above.
            warnings.filterwarnings("ignore", message=_MID_EPOCH_WARNING)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Seed this step's model randomness (dropout) from the seed, epoch and batch; count skipped samples."""
        seed = global_seed()
        if seed is not None:
            torch.manual_seed(mix_seed(seed, trainer.current_epoch, batch_idx))
        self._count("train", batch)

    def _count(self, stage: str, batch: Any) -> None:
        messages = _skipped(batch)
        if messages:
            self._skips.setdefault(stage, []).extend(messages)

    def _report(self, trainer: pl.Trainer, stage: str) -> None:
        messages = self._skips.pop(stage, [])
        if not messages or trainer.sanity_checking:
            return
        kinds = Counter(m.split(": ", 1)[-1].split(" (")[0] for m in messages)
        summary = "; ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        rank = f"rank {trainer.global_rank}: " if trainer.world_size > 1 else ""
        # Every rank warns: each skipped its own samples, and a collective here could deadlock.
        warnings.warn(
            f"{rank}epoch {trainer.current_epoch} {stage}: skipped {len(messages)} samples that could not be "
            f"loaded (on_error=skip): {summary}; first: {messages[0]}",
            UserWarning,
            stacklevel=2,
        )

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Count skipped validation samples (not during the sanity check)."""
        if not trainer.sanity_checking:
            self._count("val", batch)

    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Count skipped test samples."""
        self._count("test", batch)

    def on_predict_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Count skipped photos."""
        self._count("predict", batch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the training samples skipped this epoch."""
        self._report(trainer, "train")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the validation samples skipped this epoch."""
        self._report(trainer, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the test samples skipped."""
        self._report(trainer, "test")

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the photos skipped."""
        self._report(trainer, "predict")
