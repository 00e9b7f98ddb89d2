"""Drive the real command line: main([...]) as a user would type it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import crackcascade
from crackcascade.cli import main
from crackcascade.labels import TASK_NAMES
from crackcascade.synthetic import write_phinet

from ..conftest import CONF, ROOT


def _fit(root: Path, out: Path, *extra: str) -> Path:
    main(
        [
            "fit",
            "--config",
            str(CONF / "multitask.yaml"),
            "--data.root",
            str(root),
            "--trainer.default_root_dir",
            str(out),
            *extra,
        ]
    )
    (version,) = (out / "lightning_logs").iterdir()
    return version


def test_fit_validate_test_predict_every_format(phinet_format: tuple[str, Path], tmp_path: Path) -> None:
    fmt, root = phinet_format
    run = _fit(root, tmp_path / "fit", "--data.format", fmt)
    assert (run / "config.yaml").is_file(), "the resolved config is saved beside the checkpoints"
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    matrices = json.loads((run / "confusion_val.json").read_text())["tasks"]
    assert set(matrices) == set(TASK_NAMES)
    assert matrices["component"]["classes"] == ["beam", "column", "wall", "other"]

    common = ["--config", str(run / "config.yaml"), "--ckpt_path", str(last)]
    main(["validate", *common, "--trainer.default_root_dir", str(tmp_path / "val")])
    main(["test", *common, "--trainer.default_root_dir", str(tmp_path / "test")])
    (test_run,) = (tmp_path / "test" / "lightning_logs").iterdir()
    test_matrices = json.loads((test_run / "confusion_test.json").read_text())["tasks"]
    assert all(sum(map(sum, m["matrix"])) > 0 for m in test_matrices.values())

    photos = tmp_path / "photos"
    (photos / "sub dir").mkdir(parents=True)
    images = sorted((root / "images").glob("*.png")) if fmt == "csv" else sorted(root.glob("*/test/*/*.jpg"))
    if fmt == "arrays":
        import numpy as np
        from PIL import Image

        x = np.load(root / "scene" / "X_test.npy")
        for i in range(3):
            Image.fromarray(x[i]).save(photos / "sub dir" / f"photo {i}.png")
    else:
        for i, image in enumerate(images[:3]):
            (photos / "sub dir" / f"photo {i}{image.suffix}").write_bytes(image.read_bytes())
    (photos / "notes.txt").write_text("not a photo")
    out = tmp_path / "predictions"
    main(["predict", *common, "--data.predict_root", str(photos), "--prediction_writer.output_dir", str(out)])
    records = json.loads((out / "predictions.json").read_text())
    suffix = ".jpg" if fmt == "folders" else ".png"
    assert [Path(r["path"]).name for r in records] == [f"photo {i}{suffix}" for i in range(3)]
    for record in records:
        assert set(record["tasks"]) == set(TASK_NAMES)
        for task, pred in record["tasks"].items():
            assert pred["class"] in pred["probabilities"]
            assert sum(pred["probabilities"].values()) == pytest.approx(1.0, abs=1e-5), task
    header = (out / "predictions.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["path", "scene", "scene_probability"]


def test_predict_reports_only_trained_tasks(phinet_roots: dict[str, Path], tmp_path: Path) -> None:
    run = _fit(phinet_roots["arrays"], tmp_path / "fit", "--data.tasks", "[scene, damage_type]")
    photos = tmp_path / "photos"
    photos.mkdir()
    import numpy as np
    from PIL import Image

    Image.fromarray(np.load(phinet_roots["arrays"] / "scene" / "X_test.npy")[0]).save(photos / "a.jpg")
    out = tmp_path / "out"
    main(
        [
            "predict",
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(run / "checkpoints" / "last.ckpt"),
            "--data.predict_root",
            str(photos),
            "--prediction_writer.output_dir",
            str(out),
        ]
    )
    (record,) = json.loads((out / "predictions.json").read_text())
    assert list(record["tasks"]) == ["scene", "damage_type"]


def test_fit_options_reach_the_model_data_and_logs(phinet_roots: dict[str, Path], tmp_path: Path) -> None:
    run = _fit(
        phinet_roots["arrays"], tmp_path, "--model.lr", "0.0123", "--data.batch_size", "24",
        "--trainer.max_epochs", "2", "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
    )  # fmt: skip
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["lr"] == 0.0123
    assert checkpoint["datamodule_hyper_parameters"]["batch_size"] == 24
    assert checkpoint["epoch"] == 1
    with open(run / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val_acc")]
    assert len(rows) == 2
    for task in TASK_NAMES:
        assert 0.0 <= float(rows[-1][f"val_{task}_acc"]) <= 1.0
        assert 0.0 <= float(rows[-1][f"val_{task}_f1"]) <= 1.0


def test_paper_config_runs_resnet152_fast_dev_run(tmp_path: Path, cli_runs: list) -> None:
    root = tmp_path / "phi"
    write_phinet(root, format="arrays", n_train=3, n_test=1, size=224, seed=2)
    main([
        "fit", "--config", str(ROOT / "configs" / "resnet_multitask.yaml"), "--data.root", str(root),
        "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--data.num_workers", "0", "--trainer.default_root_dir", str(tmp_path / "out"),
    ])  # fmt: skip
    (cli,) = cli_runs
    model, trainer = cli.model, cli.trainer
    # The paper's set-up: a ResNet-152 (3-8-36-3 bottleneck blocks) with the eight Phi-Net heads,
    # SGD lr 0.001 momentum 0.9, batch 40, 224x224 inputs, full precision.
    assert model.hparams["backbone"] == "resnet152"
    assert [len(getattr(model.backbone, f"layer{i}")) for i in range(1, 5)] == [3, 8, 36, 3]
    assert list(model.tasks) == list(TASK_NAMES) and set(model.heads) == set(TASK_NAMES)
    (optimizer,) = trainer.optimizers
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.001, 0.9, 0.0)
    assert cli.datamodule.hparams["batch_size"] == 40 and cli.datamodule.hparams["image_size"] == 224
    assert str(trainer.precision) == "32-true"
    assert trainer.global_step == 1, "fast_dev_run trained one step"
    assert cli.config["fit"]["trainer"]["max_epochs"] == 100


def test_demo_config_parses_and_runs(tmp_path: Path, cli_runs: list) -> None:
    main([
        "fit", "--config", str(ROOT / "configs" / "demo.yaml"), "--data.root", str(tmp_path / "synthetic"),
        "--data.n_train", "4", "--data.n_test", "2", "--data.synthetic_size", "64", "--trainer.fast_dev_run", "true",
        "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "out"),
    ])  # fmt: skip
    (cli,) = cli_runs
    assert cli.config["fit"]["trainer"]["max_epochs"] == 20
    assert cli.model.hparams["backbone"] == "test_resnet" and list(cli.model.tasks) == list(TASK_NAMES)
    (optimizer,) = cli.trainer.optimizers
    (schedule,) = cli.trainer.lr_scheduler_configs
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["weight_decay"] == 0.0001
    assert isinstance(schedule.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert schedule.scheduler.base_lrs == [0.005]
    data = cli.datamodule.hparams
    assert (data["image_size"], data["batch_size"], data["val_fraction"]) == (160, 64, 0.2)
    assert cli.trainer.global_step == 1, "fast_dev_run trained one step"
    # The set it wrote follows the options given: 4 training scenes per task at 64 px, recorded in the marker.
    marker = json.loads((tmp_path / "synthetic" / ".crackcascade-synthetic.json").read_text())
    assert (marker["n_train"], marker["n_test"], marker["size"]) == (4, 2, 64)
    images = np.load(tmp_path / "synthetic" / "damage_type" / "X_train.npy")
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
    assert len(np.load(tmp_path / "synthetic" / "damage_type" / "y_train.npy")) == 4


def test_synthesize_subcommand(tmp_path: Path) -> None:
    assert (
        main(
            [
                "synthesize",
                str(tmp_path / "s"),
                "--format",
                "folders",
                "--n-train",
                "4",
                "--n-test",
                "2",
                "--size",
                "48",
                "--tasks",
                "scene",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "s" / "scene" / "train").iterdir()) == ["object", "pixel", "structural"]


def test_version_and_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "crackcascade", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"crackcascade {crackcascade.__version__}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data.root", "/no/such/dir"], "crackcascade: error: data.root '/no/such/dir' does not exist"),
        (["--data.tasks", "[roof]"], "crackcascade: error: data.tasks: unknown task 'roof'"),
        (
            ["--model.tasks", "[scene]"],
            "crackcascade: error: data has labels for task 'damage_state' but model.tasks has no head",
        ),
    ],
)
def test_errors_are_one_line(
    args: list[str], message: str, phinet_roots: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [
        "fit",
        "--config",
        str(CONF / "multitask.yaml"),
        "--data.root",
        str(phinet_roots["arrays"]),
        "--trainer.default_root_dir",
        str(tmp_path),
    ]
    with pytest.raises(SystemExit) as exit_info:
        main([*base, *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(message), err[-1]
    assert "Traceback" not in "\n".join(err)


def test_corrupt_image_in_worker_is_one_line(
    phinet_roots: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    root = tmp_path / "phi"
    shutil.copytree(phinet_roots["folders"] / "spalling", root / "spalling")
    victim, other = sorted((root / "spalling" / "train").glob("*/*.jpg"))[:2]
    whole = other.read_bytes()
    victim.write_bytes(whole[: len(whole) // 2])  # passes the header check at set-up, fails to decode in the worker
    with pytest.raises(SystemExit):
        _fit(root, tmp_path / "out", "--data.val_fraction", "0", "--data.num_workers", "1")
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"crackcascade: error: {victim}: cannot decode image"), last


def test_a_failing_run_keeps_its_progress(
    phinet_roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from crackcascade.data.phinet import ImageFileDataset
    from crackcascade.errors import DataError

    calls = {"n": 0}
    original = ImageFileDataset.__getitem__

    def flaky(self: ImageFileDataset, index: int) -> dict:
        calls["n"] += 1
        if calls["n"] == 60:  # some steps into the first epoch
            raise DataError(f"{self.paths[index]}: cannot decode image (simulated)")
        return original(self, index)

    monkeypatch.setattr(ImageFileDataset, "__getitem__", flaky)
    with pytest.raises(SystemExit):
        _fit(phinet_roots["folders"], tmp_path, "--data.batch_size", "8", "--data.val_fraction", "0")
    assert "cannot decode image (simulated)" in capsys.readouterr().err.strip().splitlines()[-1]
    (run,) = (tmp_path / "lightning_logs").iterdir()
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] > 0
