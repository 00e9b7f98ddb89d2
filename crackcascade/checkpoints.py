"""Checkpoints and weight files read without running code from them, and a converter for those that need it.

``torch.load`` unpickles, and unpickling can run any code the file asks for, so a checkpoint
that travelled between people is untrusted input. Every file crackcascade reads (``--ckpt_path``,
the cascade's ``model.classifier`` / ``model.segmenter``, ``model.pretrained_weights``) is loaded
with ``torch.load(weights_only=True)``, which accepts only tensors, containers and plain values,
or with safetensors. A file that needs other pickled objects is refused with one line saying
how to convert it, unless the user trusts it explicitly: ``--trust_checkpoint true`` on the
command line or ``CRACKCASCADE_TRUST_CHECKPOINTS=1`` in the environment.

``crackcascade convert IN OUT`` (:func:`main`) is the conversion: it loads ``IN`` with pickle
(run it only where the file's source is trusted), turns what is not a tensor or plain value into
plain values (or drops it, saying so), and writes ``OUT`` as a weights-only checkpoint, or as
``.safetensors`` holding the state dict.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib
import os
import pickle
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

import torch

from crackcascade.errors import ConfigError, WeightsError, first_line

CLASS_KEY = "crackcascade_class_path"
"""Checkpoint entry naming the class of its model as a config names it (``crackcascade.CrackSegmenter``)."""

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


# ---- the class a checkpoint holds -----------------------------------------------------------------

# Hyper-parameters only one model class has: how checkpoints saved before CLASS_KEY are told apart.
_SIGNATURES = {
    "crackcascade.MultiTaskClassifier": ("backbone", "tasks"),
    "crackcascade.CrackSegmenter": ("encoder_name", "classes"),
    "crackcascade.CrackCascade": ("classifier", "segmenter"),
}


def class_path(cls: type) -> str:
    """The import path of ``cls`` as a config writes it: ``crackcascade.<Name>`` for the public classes."""
    import crackcascade  # here: crackcascade's __init__ imports the models, which call this

    if getattr(crackcascade, cls.__name__, None) is cls:
        return f"crackcascade.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def import_class(path: str, option: str = "--model") -> type:
    """The class at an import path (``crackcascade.CrackSegmenter``).

    Raises:
        ConfigError: One line naming ``option`` and the path, if it cannot be imported.
    """
    module, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name) if module else None
    except Exception as err:  # ImportError, or any error the module raises while it is imported
        raise ConfigError(f"{option}: cannot import the model class '{path}' ({first_line(err)})") from None
    if not isinstance(found, type):
        raise ConfigError(f"{option}: '{path}' is not a class that can be imported")
    return found


def saved_class(checkpoint: Mapping[str, Any]) -> tuple[str | None, bool]:
    """The class path of the model a Lightning checkpoint holds, and whether the checkpoint records it.

    The record is ``CLASS_KEY`` (crackcascade's models write it) or the ``_class_path``
    hyper-parameter (Lightning's CLI writes it). A checkpoint with neither is judged by its
    hyper-parameters (``backbone``: a classifier, ``encoder_name``: a U-Net); that guess comes back
    with ``False``, and ``(None, False)`` when there is no guess either.
    """
    hparams = checkpoint.get("hyper_parameters") or {}
    recorded = hparams.get("_class_path") or checkpoint.get(CLASS_KEY)
    if recorded:
        return str(recorded), True
    for path, keys in _SIGNATURES.items():
        if all(key in hparams for key in keys):
            return path, False
    return None, False


# ---- conversion -------------------------------------------------------------------------------

_PLAIN = (str, int, float, bool, type(None), bytes, torch.Tensor, torch.dtype, torch.device, torch.Size)


def to_plain(value: Any, where: str = "", dropped: list[str] | None = None) -> Any:
    """``value`` with every object that ``weights_only`` refuses made plain, or dropped.

    Mappings (also ``AttributeDict``, ``Namespace`` via ``vars``) become dicts, sequences lists
    or tuples, paths strings, enums their values, dataclasses dicts, numpy values tensors or
    Python numbers; anything else is dropped and its key recorded in ``dropped``.
    """
    dropped = dropped if dropped is not None else []
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            plain = to_plain(item, f"{where}.{key}" if where else str(key), dropped)
            if plain is not _DROP:
                out[key if isinstance(key, str | int) else str(key)] = plain
        return out
    if isinstance(value, list | tuple):
        items = [to_plain(item, f"{where}[{i}]", dropped) for i, item in enumerate(value)]
        kept = [item for item in items if item is not _DROP]
        return kept if isinstance(value, list) else tuple(kept)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return to_plain(value.value, where, dropped)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(dataclasses.asdict(value), where, dropped)
    if type(value).__module__ == "numpy":
        import numpy as np

        return torch.from_numpy(np.array(value)) if isinstance(value, np.ndarray) else value.item()
    if isinstance(value, argparse.Namespace) or type(value).__name__ == "Namespace":
        return to_plain(vars(value), where, dropped)
    dropped.append(f"{where} ({type(value).__module__}.{type(value).__qualname__})")
    return _DROP


_DROP = object()


def convert(source: str | PurePath, target: str | PurePath) -> list[str]:
    """Re-save ``source`` as a file that loads with ``weights_only=True`` (or as ``.safetensors``).

    Loads ``source`` with pickle: only for files whose source you trust.

    Returns:
        The entries dropped because they could not be made plain.

    Raises:
        WeightsError: If ``source`` cannot be read or ``target`` does not load back safely.
    """
    try:
        obj = torch.load(source, map_location="cpu", weights_only=False)
    except Exception as err:
        raise WeightsError(f"{source} cannot be read ({first_line(err)})") from None
    dropped: list[str] = []
    plain = to_plain(obj, "", dropped)
    if str(target).endswith(".safetensors"):
        from safetensors.torch import save_file

        state = plain.get("state_dict", plain) if isinstance(plain, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{source}: holds no state dict of tensors to write as safetensors")
        # safetensors refuses tensors that share memory; each is written as its own copy.
        save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(target))
        return dropped
    torch.save(plain, target)
    load_checkpoint(target)  # proves the result loads without pickled objects
    return dropped


def main(argv: Sequence[str] | None = None) -> int:
    """``crackcascade convert IN OUT``: re-save a checkpoint so it loads without running code."""
    parser = argparse.ArgumentParser(
        prog="crackcascade convert",
        description=(
            "Re-save a checkpoint or weight file that needs pickled Python objects as one that loads with "
            "torch.load(weights_only=True), or as .safetensors (the state dict). IN is unpickled: convert only "
            "files whose source you trust."
        ),
    )
    parser.add_argument("source", help="checkpoint or weight file to convert (.ckpt, .pth, .pt)")
    parser.add_argument("target", help="file to write (.ckpt/.pt, or .safetensors for the state dict only)")
    args = parser.parse_args(argv)
    dropped = convert(args.source, args.target)
    for entry in dropped:
        print(f"crackcascade convert: dropped {entry}: not a tensor or plain value", file=sys.stderr)
    print(f"wrote {args.target}: loads with torch.load(weights_only=True)")
    return 0
