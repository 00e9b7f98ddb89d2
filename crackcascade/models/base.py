"""The base classes of crackcascade's LightningModules.

:class:`CrackcascadeModule` is the root of every model the command line takes (``--model``):
it records its class in checkpoints and prints a stage's summary table. :class:`TaskModule` adds
what the two trained models share: ``uint8`` images normalized inside the module with the
backbone's pretrained mean and std, the channels-last layout and ``torch.compile``, the
optimizer and learning-rate schedule, and W&B validation previews (a callback the model adds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pytorch_lightning as pl
import timm
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only
from torch import Tensor, nn

from crackcascade.checkpoints.classes import CLASS_KEY, class_path
from crackcascade.errors import ConfigError
from crackcascade.hardware import CompileMode

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
INPUT_STATS_KEY = "crackcascade_input_stats"
"""Checkpoint entry with the mean and std (0-1 units) the model normalized its inputs with."""

OptimizerName = Literal["sgd", "adamw", "adam"]
SchedulerName = Literal["none", "cosine"]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw", "adam")
SCHEDULERS: tuple[str, ...] = ("none", "cosine")


def timm_input_stats(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std (0-1 units) of a timm model's pretrained config (timm's defaults where it has none)."""
    config = timm.data.resolve_model_data_config(model)
    return tuple(float(v) for v in config["mean"]), tuple(float(v) for v in config["std"])


def encoder_input_stats(
    encoder_name: str, encoder: nn.Module, pretrained: bool
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std (0-1 units) an smp encoder's inputs are normalized with.

    A pretrained ``tu-`` (timm) encoder takes its backbone's pretrained config, as
    ``smp.encoders.get_preprocessing_params`` gives it. Every other encoder takes the ImageNet
    statistics: smp's own encoders were pretrained with them (smp would read their settings
    from its hub, which needs the network), and an encoder trained from scratch learns with
    whatever it is given, so the long-standing convention stays.

    Args:
        encoder_name: The smp encoder name.
        encoder: ``smp.Unet(...).encoder``.
        pretrained: Whether the encoder starts from pretrained weights (hub or local file).
    """
    timm_model = getattr(encoder, "model", None)
    if pretrained and encoder_name.startswith("tu-") and isinstance(timm_model, nn.Module):
        return timm_input_stats(timm_model)
    return IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class Optimization:
    """The optimizer and schedule of a :class:`TaskModule` (its ``--model.*`` options of those names)."""

    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    scheduler: str

    def check(self) -> None:
        """Refuse settings that cannot train, with one line naming the option.

        Raises:
            ConfigError: For an unknown optimizer or scheduler, or a learning rate that is not positive.
        """
        for option, value, allowed in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("scheduler", self.scheduler, SCHEDULERS),
        ):
            if value not in allowed:
                raise ConfigError(f"model.{option} must be one of {', '.join(allowed)}, got {value!r}")
        if self.lr <= 0:
            raise ConfigError(f"model.lr must be > 0, got {self.lr}")

    def build(self, parameters: Any, max_epochs: int | None) -> Any:
        """What ``configure_optimizers`` returns: the optimizer, with cosine annealing over ``max_epochs`` if asked."""
        opt: torch.optim.Optimizer
        if self.optimizer == "sgd":
            opt = torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        elif self.optimizer == "adamw":
            opt = torch.optim.AdamW(parameters, lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.Adam(parameters, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler == "cosine":
            epochs = max(1, max_epochs or 1)
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)}
        return opt


class CrackcascadeModule(pl.LightningModule):
    """Root of crackcascade's models: what ``--model`` takes, and what every checkpoint of them records.

    Checkpoints record the model's class (:data:`~crackcascade.checkpoints.classes.CLASS_KEY`), so
    ``--ckpt_path`` alone says which model to build.
    """

    def attached_trainer(self) -> pl.Trainer | None:
        """The trainer the module is attached to, or None."""
        try:
            return self.trainer
        except RuntimeError:  # Lightning's answer for a module without a trainer
            return None

    def attached_datamodule(self) -> Any:
        """The data module of the trainer the module is attached to, or None (no trainer, or plain loaders)."""
        return getattr(self.attached_trainer(), "datamodule", None)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the class, so the file says what it holds (``crackcascade test --ckpt_path`` reads it)."""
        checkpoint[CLASS_KEY] = class_path(type(self))

    def summary_lines(self, stage: str) -> list[str]:
        """The lines of a stage's summary table; none when there is nothing to show (subclasses)."""
        return []

    @rank_zero_only
    def print_summary(self, stage: str) -> None:
        """Print the table of a stage's last metrics (:meth:`summary_lines`), on rank zero."""
        lines = self.summary_lines(stage)
        if lines:
            rank_zero_info("\n".join(lines))


class TaskModule(CrackcascadeModule):
    """Base of the trained models: input normalization, memory layout, compile, optimizer, summaries, previews.

    Subclasses build their network, hand it to :meth:`prepare_network`, and set the input
    statistics with :meth:`set_input_stats`. Images arrive as ``uint8`` (or floats 0-255) and
    :meth:`normalize` maps them with the backbone's pretrained mean and std, held in the
    non-persistent ``mean`` / ``std`` buffers (0-255 units); checkpoints record them beside the
    weights (:data:`INPUT_STATS_KEY`), so a model normalizes as it was trained.

    Args:
        lr: Learning rate.
        optimizer: ``sgd`` (with ``momentum``), ``adamw`` or ``adam``.
        momentum: SGD momentum.
        weight_decay: Weight decay.
        scheduler: ``cosine`` annealing over ``trainer.max_epochs``, or ``none``.
        channels_last: Run the network in channels-last memory layout.
        compile: Compile the network with ``torch.compile``, in place.
        compile_mode: ``torch.compile`` mode.
    """

    mean: Tensor
    std: Tensor
    offline_hparams: ClassVar[dict[str, Any]] = {"pretrained_weights": None, "compile": False}
    """Hyper-parameters replaced when the model is rebuilt from a checkpoint for inference (the weights
    come from the checkpoint; compiling is a training speed-up that every new photo size would redo)."""
    legacy_input_stats: ClassVar[tuple[Sequence[float], Sequence[float]] | None] = None
    """Mean and std of checkpoints saved before :data:`INPUT_STATS_KEY` existed; None: as the model builds them."""

    def __init__(
        self,
        *,
        lr: float,
        optimizer: str,
        momentum: float,
        weight_decay: float,
        scheduler: str,
        channels_last: bool,
        compile: bool,
        compile_mode: CompileMode,
    ) -> None:
        super().__init__()
        self.optimization = Optimization(lr, optimizer, momentum, weight_decay, scheduler)
        self.channels_last = channels_last
        self.compile_network = compile
        self.compile_mode = compile_mode
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    # ---- network and inputs ------------------------------------------------------------------

    def prepare_network(self, network: nn.Module) -> None:
        """Put the network in channels-last layout and compile it, as asked.

        ``nn.Module.compile`` compiles in place (no ``OptimizedModule`` wrapper), so state-dict
        keys stay plain and checkpoints load with or without compile. It compiles lazily, at the
        first forward pass, on whatever device the module is on by then.
        """
        if self.channels_last:
            network.to(memory_format=torch.channels_last)
        if self.compile_network:
            network.compile(mode=self.compile_mode)

    def to_layout(self, images: Tensor) -> Tensor:
        """``images`` in the network's memory layout (channels-last when asked)."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def set_input_stats(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalize inputs with this mean and std (0-1 units, per RGB channel)."""
        self.mean.copy_(torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1) * 255)
        self.std.copy_(torch.tensor([float(v) for v in std]).view(1, 3, 1, 1) * 255)

    def normalize(self, images: Tensor) -> Tensor:
        """Map ``uint8`` images (or floats in ``[0, 255]``) to the network's normalized input."""
        return (images.float() - self.mean) / self.std

    # ---- checkpoints -------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the class and the input statistics."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[INPUT_STATS_KEY] = {
            "mean": (self.mean.flatten() / 255).tolist(),
            "std": (self.std.flatten() / 255).tolist(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Normalize as the checkpoint's model did."""
        stats = checkpoint.get(INPUT_STATS_KEY)
        if stats is not None:
            self.set_input_stats(stats["mean"], stats["std"])
        elif self.legacy_input_stats is not None:
            self.set_input_stats(*self.legacy_input_stats)

    # ---- training ----------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        """The configured optimizer over all parameters, with optional cosine annealing."""
        return self.optimization.build(self.parameters(), self.trainer.max_epochs)

    def configure_callbacks(self) -> list[pl.Callback]:
        """The model's own callbacks: its W&B validation previews (:meth:`preview_callback`)."""
        previews = self.preview_callback()
        return [previews] if previews is not None else []

    def preview_callback(self) -> pl.Callback | None:
        """The callback that logs this model's validation previews to W&B (subclasses)."""
        return None

    def on_fit_end(self) -> None:
        """Print the last validation metrics."""
        self.print_summary("val")
