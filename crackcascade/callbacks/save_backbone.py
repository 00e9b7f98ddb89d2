"""SaveBackbone: the model's backbone written as a ``.safetensors`` file with its JSON when ``fit`` ends."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

from crackcascade.checkpoints.backbone import backbone_state, describe, sidecar, write_backbone
from crackcascade.errors import ConfigError


class SaveBackbone(pl.Callback):
    """At the end of ``fit``, write the model's backbone as ``.safetensors`` with a JSON beside it (rank zero).

    Works for any crackcascade model with a timm backbone or U-Net encoder (see
    :func:`backbone_state`), so self-supervised pretraining, and supervised pretraining on
    synthetic scenes, end with the same kind of file; ``--model.pretrained_weights`` of the
    classifier and of the U-Net loads it. A fit stopped by an error writes nothing.

    Args:
        path: The ``.safetensors`` file; None writes ``backbone.safetensors`` in the run's log
            folder (``trainer.log_dir``, else ``default_root_dir``).
    """

    def __init__(self, path: str | None = None) -> None:
        if path is not None and Path(path).suffix != ".safetensors":
            raise ConfigError(f"SaveBackbone.path '{path}' must end in .safetensors")
        self.path = path
        self.written: Path | None = None

    def target(self, trainer: pl.Trainer) -> Path:
        """The file this fit writes (every rank may ask: ``log_dir`` is a broadcast)."""
        if self.path is not None:
            return Path(self.path)
        return Path(trainer.log_dir or trainer.default_root_dir) / "backbone.safetensors"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Fail before training, not after it, when the model has no backbone to write."""
        if stage == "fit":
            backbone_state(pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the backbone file and its JSON (rank zero)."""
        path = self.target(trainer)
        if not trainer.is_global_zero:
            return
        architecture, state = backbone_state(pl_module)
        info = describe(trainer, pl_module, architecture)
        self.written = write_backbone(path, state, info)
        rank_zero_info(f"SaveBackbone: wrote {architecture} backbone to {path} (and {sidecar(path).name})")
