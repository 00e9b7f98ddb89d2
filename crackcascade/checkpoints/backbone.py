"""Backbone files: a trained model's timm backbone as ``.safetensors``, with a JSON saying what it is.

Any crackcascade model with a timm backbone writes one: :class:`~crackcascade.SSLPretrainer`
(self-supervised), :class:`~crackcascade.MultiTaskClassifier` (``backbone``) and
:class:`~crackcascade.CrackSegmenter` (its U-Net encoder, ``tu-<timm name>`` or an smp encoder
with timm's layout such as ``resnet18``). The file always holds the state dict of
``timm.create_model(<architecture>, num_classes=0)``, so ``--model.pretrained_weights`` of either
the classifier or the U-Net (``tu-<architecture>`` or the smp name) reads it, whichever model wrote
it. :class:`~crackcascade.callbacks.SaveBackbone` writes it at the end of ``fit``::

    backbone.safetensors   the tensors (the JSON is also in its metadata, under "crackcascade")
    backbone.json          {"architecture", "method", "data_root", "images", "steps", "epochs",
                            "initialized_from", "date", "written_by"}
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import timm
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader

from crackcascade.errors import ConfigError

METADATA_KEY = "crackcascade"
"""safetensors metadata entry holding the same JSON as the sidecar file."""


def sidecar(path: str | Path) -> Path:
    """The JSON file beside a backbone file (``backbone.safetensors`` -> ``backbone.json``)."""
    return Path(path).with_suffix(".json")


def recorded_architecture(path: str | Path) -> str | None:
    """The architecture a backbone file's JSON records, or None (no JSON, or unreadable)."""
    try:
        info = json.loads(sidecar(path).read_text())
    except (OSError, ValueError):
        return None
    found = info.get("architecture") if isinstance(info, dict) else None
    return str(found) if found else None


def _timm_model(architecture: str, what: str) -> nn.Module:
    try:
        model: nn.Module = timm.create_model(architecture, pretrained=False, num_classes=0)
    except RuntimeError as err:
        raise ConfigError(f"{what}: '{architecture}' is no timm model ({err}); use a timm backbone") from None
    return model


def _encoder_state(encoder: nn.Module, encoder_name: str) -> tuple[str, dict[str, Tensor]]:
    """A U-Net encoder's weights in the layout of the timm model it stands for.

    smp wraps a ``tu-`` backbone as ``encoder.model``, built ``features_only``: flattened stage
    names (``stages_0``) are turned back into timm's (``stages.0``), the inverse of
    :func:`~crackcascade.models.segmenter.load_encoder_weights`. smp's own ResNet encoders already
    use timm's (torchvision's) names.
    """
    architecture = encoder_name[3:] if encoder_name.startswith("tu-") else encoder_name
    features = getattr(encoder, "model", None) if encoder_name.startswith("tu-") else encoder
    if not isinstance(features, nn.Module):
        raise ConfigError(f"model.encoder_name '{encoder_name}': the encoder holds no backbone to write")
    target = _timm_model(architecture, f"model.encoder_name '{encoder_name}'").state_dict()
    source: dict[str, Tensor] = {}
    for key, value in features.state_dict().items():
        head, _, rest = key.partition(".")
        flattened = re.fullmatch(r"(.+)_(\d+)", head)
        original = f"{flattened[1]}.{flattened[2]}.{rest}" if flattened and key not in target else key
        source[original] = value
    missing = [k for k in target if k not in source or source[k].shape != target[k].shape]
    if missing:
        raise ConfigError(
            f"model.encoder_name '{encoder_name}': the encoder lacks {len(missing)} of the {len(target)} tensors of "
            f"timm's {architecture} (e.g. {missing[0]}); use an encoder that keeps the whole backbone (tu-resnet*)"
        )
    return architecture, {k: source[k] for k in target}


def backbone_state(module: nn.Module) -> tuple[str, dict[str, Tensor]]:
    """The timm architecture name and backbone weights of a model, as ``timm.create_model(name, num_classes=0)`` keys.

    Args:
        module: A model with a timm ``backbone`` (``hparams["backbone"]`` names it), or a U-Net
            ``model.encoder`` (``hparams["encoder_name"]``).

    Raises:
        ConfigError: One line if the model has neither, or its encoder is not a whole timm backbone.
    """
    hparams: Mapping[str, Any] = getattr(module, "hparams", {})
    backbone = getattr(module, "backbone", None)
    if isinstance(backbone, nn.Module) and isinstance(hparams.get("backbone"), str):
        return str(hparams["backbone"]), dict(backbone.state_dict())
    encoder = getattr(getattr(module, "model", None), "encoder", None)
    if isinstance(encoder, nn.Module) and isinstance(hparams.get("encoder_name"), str):
        return _encoder_state(encoder, str(hparams["encoder_name"]))
    raise ConfigError(
        f"SaveBackbone: {type(module).__name__} has no timm backbone or U-Net encoder to write; "
        "use it with SSLPretrainer, MultiTaskClassifier or CrackSegmenter"
    )


def write_backbone(path: str | Path, state: Mapping[str, Tensor], info: Mapping[str, Any]) -> Path:
    """Write ``state`` as safetensors (``info`` in its metadata) and ``info`` as the JSON beside it.

    Tensors are copied to contiguous CPU memory (channels-last weights are not contiguous, which
    safetensors refuses). Returns the file written.

    Raises:
        ConfigError: One line naming the file if it does not end in ``.safetensors`` or cannot be written.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"SaveBackbone.path '{path}' must end in .safetensors")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    text = json.dumps(dict(info), indent=1, default=str)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata={METADATA_KEY: text})
        sidecar(path).write_text(text + "\n")
    except OSError as err:
        raise ConfigError(f"SaveBackbone.path '{path}': cannot write ({err.strerror or err})") from None
    return path


def training_images(trainer: pl.Trainer) -> int | None:
    """Samples per epoch of the fit's training loaders (summed over a dict of per-task loaders), or None."""
    found = getattr(getattr(trainer, "datamodule", None), "num_images", None)
    if isinstance(found, int):
        return found
    loaders: Any = trainer.train_dataloader
    if isinstance(loaders, DataLoader):
        loaders = [loaders]
    elif isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    if not isinstance(loaders, list | tuple):
        return None
    total = 0
    for loader in loaders:
        dataset: Any = getattr(loader, "dataset", None)
        if not hasattr(dataset, "__len__"):
            return None  # an iterable dataset has no length: the count is unknown
        total += len(dataset)
    return total


def method_of(module: nn.Module) -> str:
    """What trained the backbone: the SSL method, or ``supervised (<class>)``."""
    hparams: Mapping[str, Any] = getattr(module, "hparams", {})
    method = hparams.get("method")
    if isinstance(method, str):
        return f"self-supervised {method}"
    return f"supervised ({type(module).__name__})"


def describe(trainer: pl.Trainer, module: pl.LightningModule, architecture: str) -> dict[str, Any]:
    """The JSON of a backbone file: what it is, what trained it, on what, for how long, and when."""
    datamodule = getattr(trainer, "datamodule", None)
    root = getattr(datamodule, "root", None)
    return {
        "architecture": architecture,
        "method": method_of(module),
        "data_root": str(Path(root).resolve()) if root else None,
        "data": type(datamodule).__name__ if datamodule is not None else None,
        "images": training_images(trainer),
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "initialized_from": module.hparams.get("pretrained_weights"),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "written_by": f"crackcascade {_version()}",
    }


def _version() -> str:
    try:
        return version("crackcascade")
    except PackageNotFoundError:
        return "unknown"
