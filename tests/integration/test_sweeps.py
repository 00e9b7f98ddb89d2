"""W&B sweeps: the command lines wandb's own agent builds from configs/sweeps/*.yaml, run for real offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from crackcascade.cli import main

from ..conftest import ROOT, wandb_inspect

wandb_agent = pytest.importorskip("wandb.wandb_agent")
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Valid config keys have changed in V2", UserWarning)  # its pydantic-1 models
    sweeps = pytest.importorskip("sweeps")  # wandb's sweep engine (wandb[sweeps], as `wandb controller --local`)

SWEEPS = ROOT / "configs" / "sweeps"
SWEPT = ("model.lr", "data.batch_size")


def _sample(sweep: dict[str, Any], seed: int) -> dict[str, Any]:
    """One trial's parameters, drawn by the sweep engine the W&B server runs (``sweeps.next_run``)."""
    np.random.seed(seed)  # the engine draws from numpy's global generator
    run = sweeps.next_run(sweep, [], validate=True)
    assert run is not None
    # Plain numbers, as the W&B server sends them to the agent (JSON), not numpy scalars.
    return {name: np.asarray(item["value"]).item() for name, item in run.config.items()}


def _agent_command(
    sweep: dict[str, Any], values: dict[str, Any], monkeypatch: pytest.MonkeyPatch, folder: Path
) -> tuple[list[str], dict[str, str]]:
    """The command and environment wandb's agent starts for a trial, from its own ``Agent._command_run``."""
    started: dict[str, Any] = {}

    class Recorder:
        def __init__(self, command: list[str] | None = None, env: dict[str, str] | None = None, **_: Any) -> None:
            started.update(command=command, env=env)

    monkeypatch.setattr(wandb_agent, "AgentProcess", Recorder)
    monkeypatch.setenv("WANDB_DIR", str(folder))  # the agent writes the trial's parameters under it
    monkeypatch.setenv("WANDB_SWEEP_ID", "offline")  # as `wandb agent` sets it before starting trials
    for name in ("WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):
        monkeypatch.delenv(name, raising=False)  # the agent sets them; restored afterwards
    agent = wandb_agent.Agent(api=None, queue=None, sweep_id="offline")
    agent._sweep_command = list(sweep["command"])  # what Agent.run reads from the sweep's config
    agent._command_run(
        {
            "type": "run",
            "run_id": "trial0",
            "program": sweep["program"],
            "args": {name: {"value": value} for name, value in values.items()},
        }
    )
    return started["command"], started["env"]


@pytest.mark.parametrize(
    ("sweep_file", "config", "objective"),
    [
        ("multitask_lr_batch.yaml", "configs/demo.yaml", "val_acc"),
        ("unet_lr_batch.yaml", "configs/demo_unet.yaml", "val_f1"),
    ],
)
def test_sweep_files_give_the_agent_crackcascade_fit(
    sweep_file: str,
    config: str,
    objective: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sweep = yaml.safe_load((SWEEPS / sweep_file).read_text())
    assert sweep["metric"]["name"] == objective
    assert sweep["parameters"]["model.lr"]["distribution"] == "log_uniform_values"
    assert "values" in sweep["parameters"]["data.batch_size"]
    if sweep_file.startswith("multitask"):
        # Bai et al. trained the classifier with batch 40 and lr 0.001: the sweep can reach both.
        assert 40 in sweep["parameters"]["data.batch_size"]["values"]
        assert sweep["parameters"]["model.lr"]["min"] <= 0.001 <= sweep["parameters"]["model.lr"]["max"]
    for seed in range(3):
        values = _sample(sweep, seed)
        lr = sweep["parameters"]["model.lr"]
        assert lr["min"] <= values["model.lr"] <= lr["max"]
        assert values["data.batch_size"] in sweep["parameters"]["data.batch_size"]["values"]
        command, _ = _agent_command(sweep, values, monkeypatch, tmp_path)
        swept = [f"--{name}={value}" for name, value in values.items()]
        assert command == [
            "/usr/bin/env",
            "crackcascade",
            "fit",
            "--config",
            config,
            "--trainer.logger+=WandbLogger",
            *swept,
        ]

    # The last trial's arguments as the CLI reads them (nothing is run): the swept values are the config's.
    monkeypatch.chdir(ROOT)  # the agent runs trials from the repository root
    with pytest.raises(SystemExit) as done:
        main([*command[2:], "--print_config"])
    assert done.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["lr"] == values["model.lr"]
    assert printed["data"]["init_args"]["batch_size"] == values["data.batch_size"]
    assert any(logger["class_path"].endswith("WandbLogger") for logger in printed["trainer"]["logger"])


def test_a_sweep_trial_runs_offline_and_its_values_reach_model_data_and_wandb(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sweep = yaml.safe_load((SWEEPS / "multitask_lr_batch.yaml").read_text())
    values = _sample(sweep, seed=7)
    command, env = _agent_command(sweep, values, monkeypatch, tmp_path)
    # The agent runs trials from the folder it was started in (the repository root): the same configs here.
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    env.pop("WANDB_SERVICE", None)  # a wandb service of this test process is not the trial's
    home = str(tmp_path / "wandb_home")  # wandb's caches and artifact staging, off the user's home
    env = {
        **env,
        **dict.fromkeys(("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"), home),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    }
    # Tiny data and one short epoch; `fast_dev_run` would swap the loggers for a dummy and log nothing.
    quick = ["--data.n_train", "4", "--data.n_test", "1", "--data.synthetic_size", "48", "--data.image_size", "32",
             "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
             "--trainer.enable_progress_bar", "false"]  # fmt: skip
    done = subprocess.run([*command, *quick], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    (run,) = (tmp_path / "logs" / "demo").glob("version_*")
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["lr"] == values["model.lr"]
    assert checkpoint["datamodule_hyper_parameters"]["batch_size"] == values["data.batch_size"]

    (offline,) = (tmp_path / "wandb").glob("offline-run-*-trial0")  # the run id the agent gave
    run = wandb_inspect(offline)
    logged = run["config"]
    for name in SWEPT:  # as the agent handed them to the run
        assert logged[name] == values[name]
    # The resolved CLI config beside them: the swept values are the ones the trial ran with.
    assert logged["model"]["init_args"]["lr"] == values["model.lr"]
    assert logged["data"]["init_args"]["batch_size"] == values["data.batch_size"]
    assert logged["lr"] == values["model.lr"] and logged["batch_size"] == values["data.batch_size"]  # hparams
    assert 0.0 <= run["summary"][sweep["metric"]["name"]] <= 1.0
