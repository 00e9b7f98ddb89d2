"""A callback the fault tests put into a ``crackcascade fit`` subprocess, so they interrupt it at a known point.

``PauseAt`` writes a marker file when training reaches a global step and then holds the process
there: until it is killed, or (``until_sigterm``) until Lightning has seen a SIGTERM, after which
the run goes on to stop the way it stops on a real SIGTERM. Tests wait for the marker instead of
sleeping, so a slow machine cannot make them flaky.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class PauseAt(Callback):
    """Write ``marker`` after training step ``step``, then wait there (at most ``timeout`` seconds).

    Args:
        step: Global step after which to pause.
        marker: File to write (JSON with epoch and global step) when pausing.
        until_sigterm: Resume once the trainer has received SIGTERM; otherwise wait to be killed.
        timeout: Give up waiting after this many seconds, so a broken test cannot hang CI.
    """

    def __init__(self, step: int, marker: str, until_sigterm: bool = False, timeout: float = 120.0) -> None:
        self.step = step
        self.marker = Path(marker)
        self.until_sigterm = until_sigterm
        self.timeout = timeout

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Pause once, after the configured step."""
        if trainer.global_step != self.step or self.marker.exists():
            return
        state = {"epoch": trainer.current_epoch, "global_step": trainer.global_step, "batch_idx": batch_idx}
        self.marker.write_text(json.dumps(state))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline and not (self.until_sigterm and trainer.received_sigterm):
            time.sleep(0.05)
