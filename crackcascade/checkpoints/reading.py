"""Reading checkpoints without running code from them: ``weights_only`` loads, trust, globs, Lightning checks.

``torch.load`` unpickles, and unpickling can run any code the file asks for, so a checkpoint
that travelled between people is untrusted input. Every file crackcascade reads (``--ckpt_path``,
the cascade's ``model.classifier`` / ``model.segmenter``, ``model.pretrained_weights``) is loaded
with ``torch.load(weights_only=True)``, which accepts only tensors, containers and plain values,
or with safetensors. A file that needs other pickled objects is refused with one line saying
how to convert it (:mod:`crackcascade.checkpoints.convert`), unless the user trusts it explicitly:
``--trust_checkpoint true`` on the command line or ``CRACKCASCADE_TRUST_CHECKPOINTS=1`` in the environment.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path, PurePath
from typing import Any

import torch

from crackcascade.errors import WeightsError, first_line

TRUST_ENV = "CRACKCASCADE_TRUST_CHECKPOINTS"
"""Set to 1 to load checkpoints that need pickled Python objects (only files from a trusted source)."""

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_UNPICKLER = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")


def trusted() -> bool:
    """Whether pickled objects may be loaded (``CRACKCASCADE_TRUST_CHECKPOINTS=1``, set by ``--trust_checkpoint``)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def refusal(path: str | PurePath, err: BaseException, option: str | None = None) -> WeightsError:
    """The one-line error for a file that ``weights_only`` refused, with how to convert it."""
    found = _GLOBAL.search(str(err))
    what = f"pickled Python objects ({found.group(1)})" if found else "pickled Python objects"
    where = f"{option}: '{path}'" if option else str(path)
    return WeightsError(
        f"{where} holds {what}, which could run code when loaded; if you trust its source, convert it once with "
        f"`crackcascade convert {path} <new>.ckpt` (or <new>.safetensors for the weights alone), "
        f"or pass --trust_checkpoint true ({TRUST_ENV}=1)"
    )


def load_checkpoint(
    path: str | PurePath, option: str | None = None, mmap: bool = False, kind: str = "torch.save file"
) -> Any:
    """Load a ``torch.save`` file on the CPU without executing code from it (unless trusted).

    Args:
        path: The file.
        option: The option that named it, for error messages (``--ckpt_path``, ``model.classifier``).
        mmap: Map the tensors instead of reading them, for a check that looks at the metadata only.
        kind: What the file should be, for the message when it is unreadable.

    Raises:
        WeightsError: One line naming the file: missing, unreadable, or (untrusted) needing pickled objects.
    """
    where = f"{option}: '{path}'" if option else f"'{path}'"
    try:
        return _load(path, True, mmap)
    except pickle.UnpicklingError as err:
        # weights_only names the global it refused; without one the file is not a pickle torch can read.
        if not trusted() and _GLOBAL.search(str(err)):
            raise refusal(path, err, option) from None
        if not trusted():
            found = _UNPICKLER.search(str(err))
            reason = found.group(1).strip() if found else first_line(err)
            raise WeightsError(f"{where} is not a readable {kind} ({reason})") from None
    except FileNotFoundError:
        raise WeightsError(f"{where} not found; give a file a training run wrote") from None
    except Exception as err:
        raise WeightsError(f"{where} is not a readable {kind} ({first_line(err)})") from None
    try:
        return _load(path, False, mmap)
    except Exception as err:
        raise WeightsError(f"{where} is not a readable {kind} ({first_line(err)})") from None


def _load(path: str | PurePath, weights_only: bool, mmap: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except RuntimeError as err:
        if mmap and "mmap" in str(err):  # files in torch's legacy format cannot be mapped
            return torch.load(path, map_location="cpu", weights_only=weights_only)
        raise


# ---- Lightning checkpoints of crackcascade's models -------------------------------------------------


def resolve_checkpoint(path: str | Path, option: str) -> Path:
    """The checkpoint a path names; a path with ``*``, ``?`` or ``[`` is a glob and picks the newest match.

    So ``logs/demo/version_*/checkpoints/last.ckpt`` is the last epoch of the latest run.

    Raises:
        WeightsError: If a glob matches no file.
    """
    text = str(path)
    if not any(c in text for c in "*?["):
        return Path(text)
    anchor = Path("/") if text.startswith("/") else Path()
    matches = [p for p in anchor.glob(text.lstrip("/")) if p.is_file()]
    if not matches:
        raise WeightsError(f"{option}: no checkpoint matches '{text}'; train the model first or give the .ckpt path")
    return max(matches, key=lambda p: (p.stat().st_mtime, str(p)))


def read_lightning_checkpoint(path: str | Path, option: str) -> dict[str, Any]:
    """Read a Lightning checkpoint (weights-only), checking that it holds a state dict and hyper-parameters.

    Raises:
        WeightsError: One line naming the file and option, if it is missing, unreadable or not a
            Lightning checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{option}: checkpoint '{path}' not found; give the .ckpt file a training run wrote")
    checkpoint = load_checkpoint(path, option, kind="Lightning checkpoint")
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise WeightsError(f"{option}: '{path}' is not a Lightning checkpoint (no state_dict/hyper_parameters)")
    return checkpoint


def checkpoint_kind(checkpoint: dict[str, Any]) -> str:
    """What a Lightning checkpoint holds, in words, judged by its hyper-parameters (for messages)."""
    hparams = checkpoint["hyper_parameters"]
    if "backbone" in hparams:
        return "classifier (MultiTaskClassifier)"
    if "encoder_name" in hparams:
        return "U-Net (CrackSegmenter)"
    return "model of another kind"
