"""Optimizers shared by crackcascade's LightningModules."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch


def configure_optimizer(module: pl.LightningModule) -> Any:
    """Build the optimizer (and scheduler) a module's hyper-parameters ask for.

    Reads ``optimizer`` (``sgd`` with ``momentum``, ``adamw`` or ``adam``), ``lr``,
    ``weight_decay`` and ``scheduler`` (``cosine`` annealing over ``trainer.max_epochs``, or
    ``none``) from ``module.hparams``, over all of the module's parameters.

    Returns:
        What ``LightningModule.configure_optimizers`` returns.
    """
    hp = module.hparams
    params = module.parameters()
    if hp["optimizer"] == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"]
        )
    elif hp["optimizer"] == "adamw":
        opt = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    else:
        opt = torch.optim.Adam(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    if hp["scheduler"] == "cosine":
        epochs = max(1, module.trainer.max_epochs or 1)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)}
    return opt
