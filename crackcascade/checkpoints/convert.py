"""``crackcascade convert IN OUT``: re-save a checkpoint that needs pickled objects as one that loads safely.

:func:`main` loads ``IN`` with pickle (run it only where the file's source is trusted), turns what
is not a tensor or plain value into plain values (or drops it, saying so), and writes ``OUT`` as a
weights-only checkpoint, or as ``.safetensors`` holding the state dict.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import sys
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from crackcascade.checkpoints.reading import load_checkpoint
from crackcascade.errors import WeightsError, first_line

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
