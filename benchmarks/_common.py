"""What the benchmark scripts share (imported as ``_common``: scripts run with their folder on ``sys.path``)."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytorch_lightning as pl


def quiet_trainer(**options: Any) -> pl.Trainer:
    """A CPU Trainer that prints only what the benchmark prints: no logger, checkpoints, bars or sanity check.

    Lightning's own messages (devices found, precision used, tips, "fit stopped") are silenced too,
    with two warnings that say nothing about the measurement, so that the tables print without
    lines in between.

    Args:
        options: Further ``pl.Trainer`` arguments (epochs, time, precision...), which may override these.
    """
    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message="You defined a `validation_step` but have no `val_dataloader`")
    defaults: dict[str, Any] = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return pl.Trainer(**{**defaults, **options})


def validated_test_row(trainer: pl.Trainer, model: Any, data: pl.LightningDataModule) -> dict[str, Any]:
    """A U-Net's first test row (scale and class) after validation has picked its threshold.

    Validation runs first so that the threshold comes from the validation photos, never from test.
    """
    trainer.validate(model, datamodule=data, verbose=False)
    trainer.test(model, datamodule=data, verbose=False)
    (_, _, row), *_ = model.last_metrics["test"]["rows"]
    return dict(row)
