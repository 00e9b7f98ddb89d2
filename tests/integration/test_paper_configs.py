"""configs/paper/: each resolves to the paper's settings and runs on tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import timm
import yaml
from safetensors.torch import load_file, save_file

from crackcascade import CrackSegmenter, MultiTaskClassifier, PhiNetDataModule
from crackcascade.cli import build_cli, main
from crackcascade.synthetic import write_concrete_cracks

from ..conftest import ROOT

PAPER = ROOT / "configs" / "paper"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _printed(config: str, capsys: pytest.CaptureFixture[str], subcommand: str = "fit") -> dict[str, Any]:
    with pytest.raises(SystemExit) as done:
        main([subcommand, "--config", str(PAPER / config), "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("config", "subcommand", "expected"),
    [
        ("classifier.yaml", "fit", {
            "model.backbone": "resnet152", "model.optimizer": "sgd", "model.lr": 0.001, "model.momentum": 0.9,
            "model.pretrained_weights": "weights/resnet152.safetensors", "data.batch_size": 40,
            "data.image_size": 224, "data.val_fraction": 0.2, "data.augment": False,
            "data.combined_mode": "proportional", "trainer.max_epochs": 100,
        }),
        ("unet_pixel.yaml", "fit", {
            "model.encoder_name": "vgg16_bn", "model.loss": "bce", "model.lr": 0.0001, "data.resize": 256,
            "data.test_resize": 224, "data.scales": ["pixel"],
        }),
        ("unet_object_structural.yaml", "fit", {
            "model.encoder_name": "vgg16_bn", "model.loss": "bce", "model.lr": 0.0001, "data.resize": 256,
            "data.scales": ["object", "structural"],
        }),
        ("cascade.yaml", "test", {
            "model.gate_task": "damage_type", "model.gate_classes": ["flexural", "shear", "combined"],
            "data.test_resize": 224,
        }),
        ("concrete_crack.yaml", "test", {"data.test_on": "all", "data.image_size": 224, "model.backbone": "resnet152"}),
    ],
)  # fmt: skip
def test_paper_configs_resolve_to_the_papers_settings(
    config: str, subcommand: str, expected: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    resolved = _printed(config, capsys, subcommand)
    for key, value in expected.items():
        section, name = key.split(".", 1)
        where = resolved[section] if section == "trainer" else resolved[section]["init_args"]
        assert where[name] == value, key
    header = (PAPER / config).read_text().splitlines()[0]
    assert "Bai" in header  # every file says whose settings it holds
    assert "Where the paper is silent" in (PAPER / config).read_text()


def test_paper_cascade_routes_scales_to_two_unets(capsys: pytest.CaptureFixture[str]) -> None:
    segmenter = _printed("cascade.yaml", capsys, "test")["model"]["init_args"]["segmenter"]
    assert segmenter["object"] == segmenter["structural"] != segmenter["pixel"]
    assert "unet_pixel" in segmenter["pixel"] and "unet_object_structural" in segmenter["object"]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local backbone file, as a user would save timm's ImageNet weights (here test_resnet, random)."""
    path = tmp_path_factory.mktemp("weights") / "test_resnet.safetensors"
    save_file(timm.create_model("test_resnet", num_classes=0).state_dict(), str(path))
    return path


def test_paper_classifier_needs_its_weight_file(phinet_roots: dict[str, Path], tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(PAPER / "classifier.yaml"), "--data.root", str(phinet_roots["arrays"]),
              "--model.backbone", "test_resnet", "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert done.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "model.pretrained_weights" in line and "weights/resnet152.safetensors" in line and "safetensors" in line


def test_paper_classifier_runs_with_local_weights(
    phinet_roots: dict[str, Path], tiny_weights: Path, tmp_path: Path, cli_runs: list
) -> None:
    main(["fit", "--config", str(PAPER / "classifier.yaml"), "--data.root", str(phinet_roots["arrays"]),
          "--model.backbone", "test_resnet", "--model.pretrained_weights", str(tiny_weights),
          "--data.image_size", "32", "--data.batch_size", "8", "--data.num_workers", "0",
          "--trainer.fast_dev_run", "true", "--trainer.logger", "false",
          "--trainer.default_root_dir", str(tmp_path), *QUIET])  # fmt: skip
    run = cli_runs[-1]
    assert run.trainer.global_step == 1
    from_file = load_file(str(tiny_weights))
    key = next(k for k in from_file if k.endswith("conv1.weight"))
    trained = run.model.backbone.state_dict()[key].float()
    fresh = MultiTaskClassifier(backbone="test_resnet").backbone.state_dict()[key]
    # The backbone started from the file: one SGD step at lr 0.001 later it is still next to it, not to a fresh one.
    assert (trained - from_file[key]).abs().max() < 1e-2 < (fresh - from_file[key]).abs().max()
    assert isinstance(run.datamodule, PhiNetDataModule) and run.datamodule.combined_mode == "proportional"
    (only,) = run.datamodule.train_dataloader().flattened  # one loader over every task's images
    assert len(only.dataset) == sum(len(ds) for ds in run.datamodule.datasets["train"].values())


def test_build_cli_without_running_makes_the_configs_objects_one_task(
    phinet_roots: dict[str, Path], tiny_weights: Path, tmp_path: Path
) -> None:
    """What benchmarks/paper_table1.py builds each run from: the config's recipe, one task, nothing run yet."""
    cli = build_cli(["--config", str(PAPER / "classifier.yaml"), "--data.root", str(phinet_roots["arrays"]),
                     "--model.backbone", "test_resnet", "--model.pretrained_weights", str(tiny_weights),
                     "--data.tasks", "[damage_type]", "--model.tasks", "[damage_type]",
                     "--trainer.default_root_dir", str(tmp_path), *QUIET], run=False)  # fmt: skip
    model, data, trainer = cli.model, cli.datamodule, cli.trainer
    assert isinstance(model, MultiTaskClassifier) and isinstance(data, PhiNetDataModule)
    assert model.tasks == ("damage_type",) and list(model.heads) == ["damage_type"]
    assert (model.hparams.optimizer, model.hparams.lr, model.hparams.momentum) == ("sgd", 0.001, 0.9)
    assert (data.val_fraction, data.batch_size, data.combined_mode) == (0.2, 40, "proportional")
    assert trainer.max_epochs == 100 and trainer.global_step == 0 and not data.datasets  # built, not run
    assert "subcommand" not in cli.config


@pytest.mark.parametrize(
    ("config", "scales"), [("unet_pixel.yaml", "[pixel]"), ("unet_object_structural.yaml", "[object]")]
)
def test_paper_unets_run_with_their_vgg_encoder(
    config: str, scales: str, crack_roots: dict[str, Path], tmp_path: Path, cli_runs: list
) -> None:
    main(["fit", "--config", str(PAPER / config), "--data.root", str(crack_roots["masks"]), "--data.scales", scales,
          "--data.resize", "64", "--data.test_resize", "64", "--data.batch_size", "2", "--data.num_workers", "0",
          "--trainer.fast_dev_run", "true", "--trainer.logger", "false",
          "--trainer.default_root_dir", str(tmp_path), *QUIET])  # fmt: skip
    run = cli_runs[-1]
    assert isinstance(run.model, CrackSegmenter) and run.trainer.global_step == 1
    assert type(run.model.model.encoder).__name__ == "VGGEncoder"
    (batch,) = [next(iter(run.datamodule.train_dataloader()))]
    assert batch["image"].shape[-2:] == (64, 64)


def test_paper_table2_config_scores_a_classifier_on_every_image(tmp_path: Path, phinet_roots: dict[str, Path]) -> None:
    concrete = write_concrete_cracks(tmp_path / "concrete", n=5, size=48, seed=4)
    model = MultiTaskClassifier(backbone="test_resnet", channels_last=False)
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=PhiNetDataModule(str(phinet_roots["arrays"]), image_size=32, batch_size=8))
    ckpt = tmp_path / "phinet.ckpt"
    trainer.save_checkpoint(ckpt)
    main(["test", "--config", str(PAPER / "concrete_crack.yaml"), "--data.root", str(concrete),
          "--model.backbone", "test_resnet", "--data.image_size", "32", "--data.num_workers", "0",
          "--ckpt_path", str(ckpt), "--trainer.logger.save_dir", str(tmp_path / "logs"), *QUIET])  # fmt: skip
    (table_file,) = (tmp_path / "logs").rglob("table2.json")
    table2 = json.loads(table_file.read_text())
    assert [sum(column) for column in zip(*table2["counts"], strict=True)] == [5, 5]  # all 10 images, by label
    assert table2["pixel_share"] is not None  # the scene head looked at every image
