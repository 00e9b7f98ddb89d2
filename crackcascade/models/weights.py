"""Offline weight loading: a backbone from a local .safetensors, .pth/.pt or Lightning .ckpt file."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from crackcascade.checkpoints import load_checkpoint
from crackcascade.errors import WeightsError
from crackcascade.models.backbone_file import recorded_architecture, sidecar

KNOWN_PREFIXES: tuple[str, ...] = (
    "",
    "backbone.",
    "module.",
    "model.",
    "model.backbone.",
    "encoder.",
    "model.encoder.",
)
"""Key prefixes stripped when matching a file to a module (Lightning, DDP and timm wrappers)."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a weight file without executing code from it.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``, which refuses pickled Python objects unless the user
    trusts the file (:func:`crackcascade.checkpoints.load_checkpoint`). A Lightning checkpoint's
    ``state_dict`` (or a ``model``/``state_dict`` entry of a plain dict) is unwrapped.

    Args:
        path: The weight file.

    Raises:
        WeightsError: One line naming the file, if it is missing or cannot be read safely.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file '{path}' not found; give a local .safetensors, .pth or .ckpt file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:
            raise WeightsError(f"{path}: cannot read safetensors file ({err})") from None
    obj = load_checkpoint(path, kind="weight file")
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors; save model.state_dict()")
    return dict(obj)


def load_weights(
    module: nn.Module,
    path: str | Path,
    ignore_prefixes: Iterable[str] = (),
    what: str = "backbone",
) -> None:
    """Load a weight file into ``module``, matching keys under the usual wrapper prefixes.

    The prefix that matches most of the module's keys wins, so a timm/torchvision state dict, a
    DDP ``module.`` one and a crackcascade Lightning checkpoint (``backbone.``) all load.
    Classifier tensors (``ignore_prefixes``, e.g. timm's ``fc.``) are dropped because the heads
    are task specific.

    Args:
        module: Module to fill.
        path: Weight file.
        ignore_prefixes: Key prefixes (after stripping) to drop from the file.
        what: Name of the module in error messages.

    Raises:
        WeightsError: If tensors are missing, unexpected or of the wrong shape.
    """
    state = read_state_dict(path)
    own = module.state_dict()
    best_prefix, best_hits = "", -1
    for prefix in KNOWN_PREFIXES:
        hits = sum(1 for k in state if k.startswith(prefix) and k[len(prefix) :] in own)
        if hits > best_hits:
            best_prefix, best_hits = prefix, hits
    stripped = {k[len(best_prefix) :]: v for k, v in state.items() if k.startswith(best_prefix)}
    ignore = tuple(p for p in ignore_prefixes if p)
    stripped = {k: v for k, v in stripped.items() if not (ignore and k.startswith(ignore))}
    missing = [k for k in own if k not in stripped]
    unexpected = [k for k in stripped if k not in own]
    wrong_shape = [k for k in own if k in stripped and stripped[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"{len(missing)} of {len(own)} tensors missing (e.g. {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong_shape:
            k = wrong_shape[0]
            problems.append(
                f"{len(wrong_shape)} of wrong shape (e.g. {k}: {tuple(stripped[k].shape)} vs {tuple(own[k].shape)})"
            )
        recorded = recorded_architecture(path)
        hint = f"it holds a {recorded} backbone ({sidecar(path).name})" if recorded else "check the architecture name"
        raise WeightsError(f"{path}: does not match the {what}: {'; '.join(problems)}; {hint}")
    module.load_state_dict(stripped, strict=True)
