"""What the benchmark scripts share (imported as ``_common``: scripts run with their folder on ``sys.path``)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


def quiet_trainer(**options: Any) -> pl.Trainer:
    """A CPU Trainer that prints only what the benchmark prints: no logger, checkpoints, bars or sanity check.

    Args:
        options: Further ``pl.Trainer`` arguments (epochs, time, precision...), which may override these.
    """
    defaults: dict[str, Any] = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return pl.Trainer(**{**defaults, **options})
