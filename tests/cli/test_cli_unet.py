"""The crack U-Net through the real command line."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crackcascade import CrackSegmenter
from crackcascade.cli import main

from ..conftest import CONF, ROOT


def _fit(root: Path, out: Path, *extra: str) -> Path:
    main(["fit", "--config", str(CONF / "unet.yaml"), "--data.root", str(root),
          "--trainer.default_root_dir", str(out), *extra])  # fmt: skip
    (version,) = (out / "lightning_logs").iterdir()
    return version


@pytest.mark.parametrize("fmt", ["masks", "coco"])
def test_fit_test_predict(fmt: str, crack_roots: dict[str, Path], tmp_path: Path) -> None:
    run = _fit(crack_roots[fmt], tmp_path / "fit", "--data.format", fmt)
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file() and (run / "config.yaml").is_file()
    common = ["--config", str(run / "config.yaml"), "--ckpt_path", str(last)]
    main(["test", *common, "--trainer.default_root_dir", str(tmp_path / "test"),
          "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path / "test")])  # fmt: skip
    (metrics_file,) = (tmp_path / "test").rglob("metrics.csv")
    header = metrics_file.read_text().splitlines()[0].split(",")
    for scale in ("pixel", "object"):
        assert f"test_{scale}_crack_f1" in header and f"test_{scale}_crack_f1_tol" in header

    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = [(97, 131), (150, 70)]  # odd sizes, larger than a 64 px tile: tiled at native resolution
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(photos / f"p{i}.jpg")
    out = tmp_path / "predictions"
    main(["predict", *common, "--data.predict_root", str(photos), "--prediction_writer.output_dir", str(out)])
    records = json.loads((out / "predictions.json").read_text())
    assert [Path(r["path"]).name for r in records] == ["p0.jpg", "p1.jpg"]
    for record, (h, w) in zip(records, sizes, strict=True):
        mask = np.asarray(Image.open(record["mask_path"]))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        assert record["fractions"]["crack"] == pytest.approx((mask == 255).mean())
        assert "probabilities" not in record, "arrays are dropped once written"
    header = "path,mask_path,crack_fraction,cracks,total_length_px,max_width_px,overlay_path,summary"
    assert (out / "predictions.csv").read_text().splitlines()[0] == header
    for record in records:
        overlay = np.asarray(Image.open(record["overlay_path"]))
        assert overlay.shape[:2] == np.asarray(Image.open(record["mask_path"])).shape
        assert record["measurements"]["count"] >= 0 and record["summary"].endswith(".")
        assert "image" not in record
    assert (out / "report.html").is_file()


def test_two_classes_from_palette_masks(tmp_path: Path, cli_runs: list) -> None:
    from crackcascade.synthetic import write_crack_masks

    root = tmp_path / "two"
    write_crack_masks(root, format="masks", scales=("pixel",), classes=("crack", "spalling"), n_train=6, n_test=2,
                      size=64, seed=4)  # fmt: skip
    run = _fit(root, tmp_path / "fit", "--data.scales", "[pixel]", "--data.classes", "[crack, spalling]",
               "--model.classes", "[crack, spalling]")  # fmt: skip
    (fit,) = cli_runs
    # One sigmoid channel per class, each scored and thresholded on its own.
    assert fit.model.classes == ["crack", "spalling"] and fit.model.threshold.shape == (2,)
    assert fit.model.model.segmentation_head[0].out_channels == 2
    logged = set(fit.trainer.callback_metrics)
    for name in ("crack", "spalling"):
        assert {f"val_pixel_{name}_f1", f"val_{name}_threshold"} <= logged, sorted(logged)

    # Predicted masks are class maps (1 crack, 2 spalling), not 0/255 as for one class: the mask
    # written is the model's own class map of the photo.
    photos = tmp_path / "photos"
    photos.mkdir()
    for image in sorted((root / "pixel").glob("*/images/*.png")):
        (photos / image.name).write_bytes(image.read_bytes())
    out = tmp_path / "predictions"
    main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
          "--data.predict_root", str(photos), "--prediction_writer.output_dir", str(out)])  # fmt: skip
    model = cli_runs[-1].model
    records = json.loads((out / "predictions.json").read_text())
    assert len(records) == 8
    seen: set[int] = set()
    for record in records:
        assert record["classes"] == ["crack", "spalling"] and set(record["fractions"]) == {"crack", "spalling"}
        written = np.asarray(Image.open(record["mask_path"]))
        image = torch.from_numpy(np.array(Image.open(record["path"]).convert("RGB"))).permute(2, 0, 1)
        expected = model.class_map(model.segment(image)).numpy()
        np.testing.assert_array_equal(written, expected)
        seen |= set(np.unique(written).tolist())
        for index, name in enumerate(["crack", "spalling"], start=1):
            assert record["fractions"][name] == pytest.approx((written == index).mean())
    assert seen == {0, 1, 2}, "background, crack and spalling all predicted somewhere"
    header = (out / "predictions.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["path", "mask_path", "crack_fraction", "spalling_fraction"]


def test_paper_and_demo_configs_run(crack_roots: dict[str, Path], tmp_path: Path, cli_runs: list) -> None:
    main(["fit", "--config", str(ROOT / "configs" / "unet_object_structural.yaml"), "--data.root",
          str(crack_roots["masks"]), "--data.scales", "[object]", "--data.num_workers", "0",
          "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
          "--trainer.default_root_dir", str(tmp_path / "paper")])  # fmt: skip
    (paper,) = cli_runs
    # The paper's object/structural U-Net: ResNet-34 encoder (3-4-6-3 blocks), BCE + Dice, Adam lr 1e-4.
    assert paper.model.hparams["encoder_name"] == "resnet34" and paper.model.classes == ["crack"]
    assert [len(getattr(paper.model.model.encoder, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert paper.model.hparams["loss"] == "bce+dice"
    (optimizer,) = paper.trainer.optimizers
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.0001
    assert (paper.datamodule.hparams["image_size"], paper.datamodule.hparams["batch_size"]) == (256, 8)
    assert paper.config["fit"]["trainer"]["max_epochs"] == 100 and paper.trainer.global_step == 1

    main(["fit", "--config", str(ROOT / "configs" / "demo_unet.yaml"), "--data.root", str(tmp_path / "synthetic"),
          "--data.n_train", "3", "--data.n_test", "1", "--data.synthetic_size", "64", "--data.image_size", "64",
          "--trainer.fast_dev_run", "true", "--trainer.logger", "false",
          "--trainer.default_root_dir", str(tmp_path / "demo")])  # fmt: skip
    demo = cli_runs[-1]
    hp = demo.model.hparams
    assert (hp["encoder_name"], hp["pos_weight"], hp["tile_size"]) == ("tu-test_resnet", 3.0, 256)
    (optimizer,) = demo.trainer.optimizers
    (schedule,) = demo.trainer.lr_scheduler_configs
    assert isinstance(optimizer, torch.optim.AdamW) and schedule.scheduler.base_lrs == [0.003]
    assert demo.config["fit"]["trainer"]["max_epochs"] == 15 and demo.trainer.global_step == 1
    # The set it wrote: per scale, 3 training and 1 test photo of 64 px, each with a 0/255 mask of its size.
    found_crack = False
    for scale in ("pixel", "object", "structural"):
        for split, count in (("train", 3), ("test", 1)):
            folder = tmp_path / "synthetic" / scale / split
            images = sorted(p.name for p in (folder / "images").glob("*.png"))
            assert len(images) == count and sorted(p.name for p in (folder / "masks").glob("*.png")) == images
            for name in images:
                mask = np.asarray(Image.open(folder / "masks" / name))
                assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
                assert np.asarray(Image.open(folder / "images" / name)).shape == (64, 64, 3)
                found_crack |= bool((mask == 255).any())
    assert found_crack, "some synthetic photos are cracked"


def test_pixel_config_prints_and_runs(
    crack_roots: dict[str, Path], tmp_path: Path, cli_runs: list, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    command = ["fit", "--config", str(ROOT / "configs" / "unet_pixel.yaml"), "--data.root", str(crack_roots["masks"])]
    with pytest.raises(SystemExit) as info:
        main([*command, "--print_config"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    model, data = printed["model"], printed["data"]
    # The paper's pixel-level U-Net: ResNet-34 encoder, BCE + Dice, Adam lr 1e-4, 256 px crops, batch 8.
    assert model["class_path"] == "crackcascade.CrackSegmenter"
    assert data["class_path"] == "crackcascade.CrackMaskDataModule"
    expected_model = {
        "encoder_name": "resnet34",
        "classes": ["crack"],
        "loss": "bce+dice",
        "optimizer": "adam",
        "lr": 0.0001,
        "threshold": None,
    }
    assert {k: model["init_args"][k] for k in expected_model} == expected_model
    expected_data = {"scales": ["pixel"], "classes": ["crack"], "image_size": 256, "batch_size": 8}
    assert {k: data["init_args"][k] for k in expected_data} == expected_data
    assert printed["trainer"]["max_epochs"] == 100
    monitors = [c["init_args"].get("monitor") for c in printed["trainer"]["callbacks"] if "init_args" in c]
    assert "val_f1" in monitors

    main([*command, "--data.num_workers", "0", "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu",
          "--trainer.devices", "1", "--trainer.default_root_dir", str(tmp_path / "out")])  # fmt: skip
    (cli,) = cli_runs
    assert [len(getattr(cli.model.model.encoder, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    (optimizer,) = cli.trainer.optimizers
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.0001
    assert list(cli.datamodule.hparams["scales"]) == ["pixel"] and cli.trainer.global_step == 1
    assert {"val_f1", "val_pixel_crack_f1"} <= set(cli.trainer.callback_metrics)


def _band(self: CrackSegmenter, image: torch.Tensor) -> torch.Tensor:
    """Stand-in for ``CrackSegmenter.segment``: a straight crack 6 px wide and 100 px long on every photo."""
    probabilities = torch.zeros((len(self.classes), *image.shape[-2:]))
    probabilities[0, 40:46, 10:110] = 0.9
    return probabilities


def test_px_per_mm_reaches_the_csv_and_the_report(
    crack_roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CrackSegmenter, "segment", _band)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(photos / "p.png")
    out = tmp_path / "out"
    main(["predict", "--model", "CrackSegmenter", "--model.encoder_name", "tu-test_resnet", "--model.tile_size", "64",
          "--model.tile_overlap", "16", "--model.threshold", "0.5", "--model.px_per_mm", "4.0",
          "--data", "CrackMaskDataModule", "--data.root", str(crack_roots["masks"]), "--data.predict_root", str(photos),
          "--prediction_writer.output_dir", str(out), "--trainer.accelerator", "cpu", "--trainer.logger", "false",
          "--trainer.default_root_dir", str(tmp_path / "root")])  # fmt: skip
    (record,) = json.loads((out / "predictions.json").read_text())
    found = record["measurements"]
    assert found["px_per_mm"] == 4.0 and found["count"] == 1
    assert found["max_width_px"] == pytest.approx(6, abs=1) and found["total_length_px"] == pytest.approx(100, rel=0.05)
    # A measured width in mm is the pixel width over px_per_mm (the same for the length).
    assert found["max_width_mm"] == pytest.approx(found["max_width_px"] / 4.0, abs=1e-4)
    assert found["total_length_mm"] == pytest.approx(found["total_length_px"] / 4.0, abs=1e-4)
    with open(out / "predictions.csv", newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert float(row["max_width_mm"]) == pytest.approx(float(row["max_width_px"]) / 4.0, abs=0.05)
    assert float(row["total_length_mm"]) == pytest.approx(float(row["total_length_px"]) / 4.0, abs=0.05)
    assert float(row["max_width_mm"]) == pytest.approx(found["max_width_mm"], abs=1e-4)
    # The sentence gives the sizes in mm, and the report shows it.
    width = f"{found['max_width_mm']:.2f}".rstrip("0").rstrip(".")
    assert f"max width {width} mm" in record["summary"] and " px" not in record["summary"], record["summary"]
    assert row["summary"] == record["summary"]
    assert html.escape(record["summary"]) in (out / "report.html").read_text()


def test_bad_crack_data_is_one_line(
    crack_roots: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(crack_roots["coco"] / "pixel", root / "pixel")
    annotations = root / "pixel" / "train" / "annotations.json"
    coco = json.loads(annotations.read_text())
    coco["images"][0]["file_name"] = "../../../etc/passwd"
    annotations.write_text(json.dumps(coco))
    with pytest.raises(SystemExit) as info:
        _fit(root, tmp_path / "out", "--data.scales", "[pixel]")
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("crackcascade: error: ") and "annotations.json" in last and "passwd" in last, last
