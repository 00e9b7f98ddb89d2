"""Offline weight loading: a backbone or U-Net encoder from a local .safetensors, .pth/.pt or Lightning .ckpt file."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from crackcascade.checkpoints.backbone import recorded_architecture, sidecar
from crackcascade.checkpoints.reading import load_checkpoint
from crackcascade.errors import WeightsError

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
    trusts the file (:func:`crackcascade.checkpoints.reading.load_checkpoint`). A Lightning checkpoint's
    ``state_dict`` (or a ``model``/``state_dict`` entry of a plain dict) is unwrapped.

    Args:
        path: The weight file.

    Raises:
        WeightsError: One line naming the file, if it is missing or cannot be read safely.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"model.pretrained_weights: weight file '{path}' not found; put a local .safetensors, .pth or .ckpt "
            "file there or pass its path (on a machine with internet: timm.create_model(name, pretrained=True), "
            "then safetensors.torch.save_file(model.state_dict(), path); see docs/data.md, 'Bring your own weights')"
        )
    if path.suffix == ".safetensors":
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


# ---- U-Net encoders -----------------------------------------------------------------------------

CLASSIFIER_PREFIXES: tuple[str, ...] = ("fc.", "classifier.", "head.", "last_linear.", "_fc.")
"""Classifier tensors of ImageNet checkpoints that an encoder without a head drops."""


def _matching_keys(state: dict[str, Tensor], own: dict[str, Tensor]) -> int:
    """Most keys of ``own`` that ``state`` holds under any of :data:`KNOWN_PREFIXES`."""
    return max(sum(1 for k in state if k.startswith(p) and k[len(p) :] in own) for p in KNOWN_PREFIXES)


def _unused_prefixes(own: dict[str, Tensor]) -> list[str]:
    return [p for p in CLASSIFIER_PREFIXES if not any(k.startswith(p) for k in own)]


def load_encoder_weights(encoder: nn.Module, encoder_name: str, path: str | Path) -> None:
    """Fill a U-Net encoder from a local weight file, offline.

    Three layouts load: a checkpoint of the encoder itself or of a :class:`CrackSegmenter`
    (``encoder.``/``model.encoder.`` keys); an ImageNet classifier of the same backbone as
    torchvision/smp name it (its classifier is dropped); and, for ``tu-`` (timm) encoders, a
    plain timm state dict of the backbone. smp wraps timm backbones as ``encoder.model`` built
    with ``features_only``, which drops the classifier and final layers and renames flattened
    stages (``stages.0`` -> ``stages_0``); so a timm file is loaded into the full timm model first,
    with :func:`load_weights`' checks, and copied over from there.
    The layout whose keys match more of the file is used.

    Args:
        encoder: ``smp.Unet(...).encoder``.
        encoder_name: The smp encoder name (``tu-<timm name>`` for timm backbones).
        path: Weight file (.safetensors, .pth/.pt or Lightning .ckpt).

    Raises:
        WeightsError: If the file is missing, unsafe, or does not match the encoder.
    """
    own = encoder.state_dict()
    timm_model: Any = None  # a timm model; typed Any for its pretrained_cfg attribute
    if encoder_name.startswith("tu-") and isinstance(getattr(encoder, "model", None), nn.Module):
        timm_model = timm.create_model(encoder_name[3:], pretrained=False, num_classes=0)
        state = read_state_dict(path)
        if _matching_keys(state, timm_model.state_dict()) <= _matching_keys(state, own):
            timm_model = None
    if timm_model is None:
        load_weights(encoder, path, ignore_prefixes=_unused_prefixes(own), what="encoder")
        return
    classifier = timm_model.pretrained_cfg.get("classifier", "fc")
    classifiers = [classifier] if isinstance(classifier, str) else list(classifier)
    load_weights(timm_model, path, ignore_prefixes=[f"{c}." for c in classifiers], what="encoder")
    source = timm_model.state_dict()
    features: nn.Module = encoder.model  # type: ignore[assignment]
    mapped: dict[str, Tensor] = {}
    for key in features.state_dict():
        head, _, rest = key.partition(".")
        flattened = re.fullmatch(r"(.+)_(\d+)", head)
        original = f"{flattened[1]}.{flattened[2]}.{rest}" if flattened and key not in source else key
        if original not in source:
            raise WeightsError(f"{path}: does not match the encoder: no tensor for {key}; check the architecture name")
        mapped[key] = source[original]
    features.load_state_dict(mapped, strict=True)
