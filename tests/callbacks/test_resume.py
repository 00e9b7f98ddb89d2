"""Mid-epoch resume: the training loader's position goes into the checkpoint and a restart continues from it.

The end-to-end proof (a run killed or stopped mid-epoch, resumed, equals an uninterrupted one)
is in ``tests/test_faults.py``; these tests pin down the parts: what :class:`ReplayLoader` saves,
that Lightning's fit loop carries it through a checkpoint, and what :class:`MidEpochResume` says.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader

from crackcascade.callbacks import RunGuard
from crackcascade.callbacks.resume import saved_loader_positions
from crackcascade.data.sampling import LoaderDataset, ReplayLoader, ReplaySampler

DATA = list(range(12))


def _loader(seed: int = 3, batch_size: int = 3) -> ReplayLoader:
    dataset = LoaderDataset(DATA)  # type: ignore[arg-type]
    return ReplayLoader(dataset, batch_size=batch_size, sampler=ReplaySampler(dataset, seed=seed))


def _order(seed: int, epoch: int) -> list[int]:
    sampler = ReplaySampler(DATA, seed=seed)
    sampler.set_epoch(epoch)
    return [index for index, _ in sampler]


def test_replay_loader_saves_the_batches_handed_out_and_resumes_after_them() -> None:
    first = _loader()
    first.sampler.set_epoch(2)  # type: ignore[attr-defined]
    batches = iter(first)
    taken = [next(batches).tolist() for _ in range(2)]
    state = first.state_dict()
    assert state == {"sampler": {"epoch": 2, "pass": 0, "samples": 6}}
    rest = [batch.tolist() for batch in batches]
    assert [i for batch in taken + rest for i in batch] == _order(3, 2)

    resumed = _loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)  # type: ignore[attr-defined]
    assert [batch.tolist() for batch in resumed] == rest, "the batches not yet trained, in the same order"
    assert resumed.state_dict() == {"sampler": {"epoch": 2, "pass": 1, "samples": 0}}, "a whole pass: the next"

    resumed.sampler.set_epoch(3)  # type: ignore[attr-defined]
    assert resumed.state_dict() == {"sampler": {"epoch": 3, "pass": 0, "samples": 0}}
    assert [i for batch in resumed for i in batch.tolist()] == _order(3, 3), "a new epoch starts from its first batch"


def test_replay_loader_without_a_replay_sampler_is_a_plain_loader_with_an_empty_state() -> None:
    plain = ReplayLoader(DATA, batch_size=5)  # type: ignore[arg-type]
    assert plain.replay_sampler is None and plain.state_dict() == {}
    plain.load_state_dict({"sampler": {"epoch": 0, "pass": 0, "samples": 5}})  # ignored: it cannot replay
    assert [batch.tolist() for batch in plain] == [DATA[:5], DATA[5:10], DATA[10:]]


class _StepError(Exception):
    """Raised by a training step, as Ctrl-C or a NaN loss would."""


class _Tiny(pl.LightningModule):
    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.fail_at = fail_at

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if batch_idx == self.fail_at:
            raise _StepError(f"step {batch_idx}")
        return self.layer(batch.float().unsqueeze(1)).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader:
        return _loader(seed=1)


class _Batches(Callback):
    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.seen.append(batch.tolist())


def _trainer(root: Path, *callbacks: Callback, **options: Any) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, callbacks=list(callbacks), **options,
    )  # fmt: skip


@pytest.fixture
def messages() -> Any:
    """Lightning's rank-zero info lines, caught at their logger (which need not propagate to the root)."""
    lines: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    handler, level = Catch(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.mark.parametrize("stop", ["after_a_step", "in_a_step"])
def test_the_checkpoint_holds_the_loader_position_and_a_restart_trains_the_rest(
    stop: str, tmp_path: Path, messages: list[str]
) -> None:
    """Stopped after two steps (a checkpoint at the step's end), or by the third step raising (saved on the error)."""
    if stop == "after_a_step":
        saver = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_top_k=0)
        _trainer(tmp_path, saver, max_steps=2).fit(_Tiny())
        last = tmp_path / "last.ckpt"
    else:
        saver = ModelCheckpoint(dirpath=tmp_path, filename="last", save_on_exception=True)
        with pytest.raises(_StepError):
            _trainer(tmp_path, RunGuard(check_output=False), saver, max_epochs=1).fit(_Tiny(fail_at=2))
        last = tmp_path / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 2 and saved_loader_positions(checkpoint)
    # Two batches of three trained; the third, whose step raised, is not counted.
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"sampler": {"epoch": 0, "pass": 0, "samples": 6}}
    ]

    batches = _Batches()
    _trainer(tmp_path / "resumed", RunGuard(check_output=False), batches, max_epochs=1).fit(_Tiny(), ckpt_path=last)
    order = _order(1, 0)
    assert batches.seen == [order[6:9], order[9:12]], "the two batches of epoch 0 not trained before the stop"
    assert "resuming epoch 0 after its first 2 batches, in the same order" in messages


def test_a_checkpoint_without_loader_positions_resumes_with_a_warning(tmp_path: Path) -> None:
    saver = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_top_k=0)
    _trainer(tmp_path, saver, max_steps=2).fit(_Tiny())
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    del checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]  # as crackcascade wrote them before
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    with pytest.warns(UserWarning, match="after its first 2 batches from a checkpoint without the loaders' positions"):
        _trainer(tmp_path / "old", RunGuard(check_output=False), max_epochs=1).fit(_Tiny(), ckpt_path=old)


class _Unreplayable(_Tiny):
    def train_dataloader(self) -> DataLoader:
        return ReplayLoader(LoaderDataset(DATA), batch_size=3)  # type: ignore[arg-type]  # in order, as under DDP


def test_a_loader_that_cannot_replay_resumes_with_a_warning(tmp_path: Path) -> None:
    saver = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_top_k=0)
    _trainer(tmp_path, saver, max_steps=2).fit(_Unreplayable())
    with pytest.warns(UserWarning, match="cannot replay the order with a SequentialSampler"):
        _trainer(tmp_path / "resumed", RunGuard(check_output=False), max_epochs=1).fit(
            _Unreplayable(), ckpt_path=tmp_path / "last.ckpt"
        )
