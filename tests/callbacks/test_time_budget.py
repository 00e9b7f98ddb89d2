"""TimeBudget: the learning rate follows the budget spent, training stops at the deadline, resume continues."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel

from crackcascade.callbacks import TimeBudget
from crackcascade.cli import main
from crackcascade.errors import ConfigError

from ..conftest import CONF


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tick(pl.Callback):
    """Each training step takes one fake second; records the learning rate it ran with."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.lrs: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.clock.now += 1.0


class Boring(BoringModel):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _trainer(root: Path, budget: TimeBudget, tick: Tick, **options: Any) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        max_epochs=-1,
        limit_train_batches=4,
        limit_val_batches=1,
        callbacks=[tick, budget],  # the step's second has passed when TimeBudget looks at the clock
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )


def test_cosine_over_the_budget_and_stop_at_the_deadline(tmp_path: Path) -> None:
    clock = FakeClock()
    budget, tick = TimeBudget(minutes=10 / 60, clock=clock), Tick(clock)
    trainer = _trainer(tmp_path, budget, tick, enable_checkpointing=False)
    trainer.fit(Boring())
    assert trainer.global_step == 10, "ten one-second steps fill a ten-second budget, not one more"
    expected = [0.5 * 0.5 * (1 + math.cos(math.pi * k / 10)) for k in range(10)]
    assert tick.lrs == pytest.approx(expected)
    assert budget.elapsed == pytest.approx(10.0)


def test_linear_and_none_anneal() -> None:
    assert TimeBudget(1, anneal="linear").factor(0.25) == pytest.approx(0.75)
    assert TimeBudget(1, anneal="none").factor(0.9) == 1.0
    assert TimeBudget(1).factor(1.0) == pytest.approx(0.0)


def test_resume_continues_the_schedule(tmp_path: Path) -> None:
    clock = FakeClock()
    first = _trainer(tmp_path / "a", TimeBudget(minutes=10 / 60, clock=clock), Tick(clock), max_steps=6)
    first.fit(Boring())
    checkpoint = tmp_path / "six.ckpt"
    first.save_checkpoint(checkpoint)
    clock.now += 1000.0  # time between runs does not count
    budget, tick = TimeBudget(minutes=10 / 60, clock=clock), Tick(clock)
    second = _trainer(tmp_path / "b", budget, tick, enable_checkpointing=False)
    second.fit(Boring(), ckpt_path=checkpoint)
    assert second.global_step == 10
    expected = [0.5 * 0.5 * (1 + math.cos(math.pi * k / 10)) for k in range(6, 10)]
    assert tick.lrs == pytest.approx(expected), "the resumed run picks up at 6 of 10 seconds, from the original rate"


def test_refuses_a_module_scheduler_and_bad_options(tmp_path: Path) -> None:
    class WithScheduler(Boring):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters({"scheduler": "cosine"})

    clock = FakeClock()
    trainer = _trainer(tmp_path, TimeBudget(1, clock=clock), Tick(clock), enable_checkpointing=False)
    with pytest.raises(ConfigError, match="set model.scheduler none"):
        trainer.fit(WithScheduler())
    with pytest.raises(ConfigError, match="minutes must be > 0"):
        TimeBudget(0)
    with pytest.raises(ConfigError, match="anneal must be"):
        TimeBudget(1, anneal="step")  # type: ignore[arg-type]


def test_from_the_command_line(crack_roots: dict[str, Path], tmp_path: Path) -> None:
    """`--trainer.callbacks+=crackcascade.callbacks.TimeBudget` ends an epoch-unbounded run and is saved with it."""
    main(["fit", "--config", str(CONF / "unet.yaml"), "--data.root", str(crack_roots["masks"]),
          "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "-1", "--model.scheduler", "none",
          "--trainer.callbacks+=crackcascade.callbacks.TimeBudget", "--trainer.callbacks.minutes=0.02"])  # fmt: skip
    (run,) = (tmp_path / "lightning_logs").iterdir()
    assert "class_path: crackcascade.callbacks.TimeBudget" in (run / "config.yaml").read_text()
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("TimeBudget")]
    assert checkpoint["global_step"] >= 1 and state
