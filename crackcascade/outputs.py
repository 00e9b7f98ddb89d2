"""The folders a run writes to: checked before it starts, removed again if it fails having written nothing.

* :func:`preflight` checks, before the first epoch, that every folder a run writes to (logs,
  checkpoints) can be written and has room for the checkpoints it will keep;
  :func:`check_writable` checks one folder (the prediction writer's, too).
* :func:`missing_folders` and :func:`discard_unused_folders` let the ``crackcascade`` command
  remove the log folders of a run that failed before it produced anything.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from crackcascade.errors import ConfigError

MIB = 1 << 20
DEFAULT_OPTION = "--trainer.default_root_dir or logger save_dir"
"""The options that choose where logs and checkpoints go, for error messages."""
LOG_SPACE = 16 * MIB
"""Free space a log folder needs (metrics, configs, confusion matrices)."""


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
