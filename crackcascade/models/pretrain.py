"""SSLPretrainer: self-supervised pretraining of a timm backbone on unlabeled photos, with lightly.

Why BYOL by default. Crack datasets are small (hundreds to a few thousand photos) and training
runs on CPUs with batches of 16-64 as often as on GPUs. Contrastive methods (SimCLR, MoCo) learn
by telling each image apart from the other images of the batch (or a queue), and degrade with
few negatives; SimCLR's paper needs batches in the thousands. BYOL needs no negatives: an online
network predicts a slowly moving (momentum) copy's embedding of another view, which keeps
working with small batches, and its batch-norm CNN recipe is the one ResNets were designed for.
DINO and its relatives shine with ViTs and multi-crop (many views per image, several times the
compute per step), a poor trade on a 2-core CPU. SimCLR stays available (``method: simclr``)
for larger batches, and as a check that a result is not an artefact of one method.

Everything SSL-specific is lightly's: projection and prediction heads, the negative cosine
similarity and NT-Xent losses, the momentum update and its cosine schedule, and the views
(:mod:`crackcascade.data.unlabeled`). The backbone is ``timm.create_model(backbone,
num_classes=0)``, the classifier's, so the file :class:`~crackcascade.SaveBackbone` writes at the
end loads into :class:`~crackcascade.MultiTaskClassifier` and the ``tu-<backbone>`` U-Net encoder
of :class:`~crackcascade.CrackSegmenter`.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import timm
import torch
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead, SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.debug import std_of_l2_normalized
from lightly.utils.scheduler import cosine_schedule
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from crackcascade.checkpoints import load_weights
from crackcascade.data.sampling import has_samples
from crackcascade.errors import ConfigError
from crackcascade.models.base import CrackcascadeModule, Optimization, OptimizerName, SchedulerName
from crackcascade.reliability import check_finite_loss

Batch = dict[str, Any]
Method = Literal["byol", "simclr"]


class SSLPretrainer(CrackcascadeModule):
    """Self-supervised pretraining of a timm backbone (BYOL or SimCLR, from lightly) on pairs of views.

    Batches are :class:`~crackcascade.UnlabeledPhotoDataModule`'s: ``{"image": (B, 2, 3, S, S)}``
    views, already normalized with the ImageNet mean and std (the normalization timm's ResNets,
    the classifier and the U-Net use). Logs ``train_loss`` and ``train_embedding_std``, the mean
    standard deviation of the L2-normalized embeddings: about ``1 / sqrt(projection_dim)`` while
    the embeddings spread, falling towards 0 if they collapse to one point.

    Args:
        backbone: timm model name (resnet18/34/50/152; ``test_resnet`` for tests).
        method: ``byol`` (default, see the module docstring) or ``simclr``.
        pretrained_weights: Start from these backbone weights (.safetensors, .pth, .ckpt), e.g.
            a backbone pretrained on synthetic scenes.
        hidden_dim: Hidden width of the projection and prediction heads (lightly's BYOL uses 4096
            for ResNet-50 on ImageNet; 1024 is plenty for thousands of photos and cheaper on CPU).
        projection_dim: Output width of the heads.
        temperature: NT-Xent temperature (SimCLR; lightly's default 0.5 is steadier than 0.1-0.2 with small batches).
        ema_start: BYOL's momentum at the first step; it rises along a cosine to ``ema_end`` at
            the last (constant at ``ema_start`` when the run length is not known in steps).
        ema_end: BYOL's momentum at the last step.
        lr: Learning rate.
        optimizer: ``adamw``, ``adam`` or ``sgd`` (with ``momentum``).
        momentum: SGD momentum.
        weight_decay: Weight decay.
        scheduler: ``cosine`` annealing over ``trainer.max_epochs``, or ``none``.
        channels_last: Run the networks in channels-last memory layout (faster with oneDNN and cuDNN).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        method: Method = "byol",
        pretrained_weights: str | None = None,
        hidden_dim: int = 1024,
        projection_dim: int = 256,
        temperature: float = 0.5,
        ema_start: float = 0.99,
        ema_end: float = 1.0,
        lr: float = 1e-3,
        optimizer: OptimizerName = "adamw",
        momentum: float = 0.9,
        weight_decay: float = 1e-5,
        scheduler: SchedulerName = "cosine",
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if method not in ("byol", "simclr"):
            raise ConfigError(f"model.method must be byol or simclr, got {method!r}")
        self.optimization = Optimization(lr, optimizer, momentum, weight_decay, scheduler)
        self.optimization.check()
        if not 0.0 <= ema_start <= ema_end <= 1.0:
            raise ConfigError(f"model.ema_start and model.ema_end must satisfy 0 <= start <= end <= 1, got "
                              f"{ema_start} and {ema_end}")  # fmt: skip
        if min(hidden_dim, projection_dim) < 1 or temperature <= 0:
            raise ConfigError("model.hidden_dim and model.projection_dim must be >= 1 and model.temperature > 0")
        try:
            net: Any = timm.create_model(backbone, pretrained=False, num_classes=0)
        except RuntimeError as err:
            raise ConfigError(f"model.backbone '{backbone}': {err}") from None
        if pretrained_weights:
            classifier = net.pretrained_cfg.get("classifier", "fc")
            classifiers = classifier if isinstance(classifier, list | tuple) else [classifier]
            load_weights(net, pretrained_weights, ignore_prefixes=[f"{c}." for c in classifiers])
        self.backbone: nn.Module = net
        features = int(net.num_features)
        self.prediction_head: nn.Module | None = None
        self.backbone_momentum: nn.Module | None = None
        self.projection_head_momentum: nn.Module | None = None
        self.criterion: nn.Module
        if method == "byol":
            self.projection_head: nn.Module = BYOLProjectionHead(features, hidden_dim, projection_dim)
            self.prediction_head = BYOLPredictionHead(projection_dim, hidden_dim, projection_dim)
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projection_head_momentum = copy.deepcopy(self.projection_head)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projection_head_momentum)
            self.criterion = NegativeCosineSimilarity()
        else:
            self.projection_head = SimCLRProjectionHead(features, hidden_dim, projection_dim)
            # Negatives from every process's batch under DDP: more negatives, the same loss on all ranks.
            self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self._warned_small_batch = False

    def embed(self, images: Tensor) -> Tensor:
        """Backbone features ``(B, num_features)`` of normalized images."""
        if self.hparams["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        features: Tensor = self.backbone(images)
        return features

    def forward(self, images: Tensor) -> Tensor:
        """Projection (SimCLR) or prediction (BYOL) of normalized ``(B, 3, H, W)`` images."""
        z: Tensor = self.projection_head(self.embed(images))
        if self.prediction_head is not None:
            z = self.prediction_head(z)
        return z

    @torch.no_grad()
    def _target(self, images: Tensor) -> Tensor:
        """BYOL's target: the momentum networks' projection, without gradient."""
        assert self.backbone_momentum is not None and self.projection_head_momentum is not None
        if self.hparams["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        z: Tensor = self.projection_head_momentum(self.backbone_momentum(images))
        return z.detach()

    def ema_momentum(self) -> float:
        """BYOL's momentum at this step: ``ema_start`` rising along a cosine to ``ema_end`` at the last step."""
        start, end = self.hparams["ema_start"], self.hparams["ema_end"]
        trainer = self.attached_trainer()
        total = trainer.estimated_stepping_batches if trainer is not None else math.inf
        if not math.isfinite(total) or total <= 1:
            return float(start)
        return float(cosine_schedule(min(self.global_step, int(total)), int(total), start, end))

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        """The SSL loss of a batch of view pairs; stops at a NaN or infinite loss."""
        if not has_samples(batch):
            return None  # every photo of the batch was skipped (on_error=skip)
        views: Tensor = batch["image"]
        if views.dim() != 5 or views.shape[1] != 2:
            raise ValueError(f"SSLPretrainer expects (B, 2, 3, H, W) view pairs, got {tuple(views.shape)}")
        if views.shape[0] < 2:
            # Batch norm in the heads cannot normalize one sample: a lone last photo is dropped.
            if not self._warned_small_batch:
                rank_zero_warn("SSLPretrainer: skipped a batch of one photo (batch norm needs two or more)")
                self._warned_small_batch = True
            return None
        first, second = views[:, 0], views[:, 1]
        if self.hparams["method"] == "byol":
            assert self.backbone_momentum is not None and self.projection_head_momentum is not None
            ema = self.ema_momentum()
            update_momentum(self.backbone, self.backbone_momentum, m=ema)
            update_momentum(self.projection_head, self.projection_head_momentum, m=ema)
            p0, p1 = self(first), self(second)
            z0, z1 = self._target(first), self._target(second)
            loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
            embedding = p0
            self.log("train_ema_momentum", ema, batch_size=len(views))
        else:
            embedding = self(first)
            loss = self.criterion(embedding, self(second))
        check_finite_loss(self, loss, {f"{self.hparams['method']} loss": loss}, batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(views))
        self.log("train_embedding_std", std_of_l2_normalized(embedding.detach().float()), batch_size=len(views))
        return loss

    def configure_optimizers(self) -> Any:
        """The configured optimizer over the trained parameters, with optional cosine annealing.

        The momentum copies take no gradient: they are left out, so weight decay never touches them.
        """
        trained = [p for p in self.parameters() if p.requires_grad]
        return self.optimization.build(trained, self.trainer.max_epochs)
