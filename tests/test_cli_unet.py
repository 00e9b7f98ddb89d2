"""The crack U-Net through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crackcascade.cli import main

from .conftest import CONF, ROOT


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


def test_two_classes_from_palette_masks(crack_roots: dict[str, Path], tmp_path: Path) -> None:
    from crackcascade.synthetic import write_crack_masks

    root = tmp_path / "two"
    write_crack_masks(root, format="masks", scales=("pixel",), classes=("crack", "spalling"), n_train=6, n_test=2,
                      size=64, seed=4)  # fmt: skip
    run = _fit(root, tmp_path / "fit", "--data.scales", "[pixel]", "--data.classes", "[crack, spalling]",
               "--model.classes", "[crack, spalling]")  # fmt: skip
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_paper_and_demo_configs_run(crack_roots: dict[str, Path], tmp_path: Path) -> None:
    main(["fit", "--config", str(ROOT / "configs" / "unet_object_structural.yaml"), "--data.root",
          str(crack_roots["masks"]), "--data.scales", "[object]", "--data.num_workers", "0",
          "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
          "--trainer.default_root_dir", str(tmp_path / "paper")])  # fmt: skip
    main(["fit", "--config", str(ROOT / "configs" / "demo_unet.yaml"), "--data.root", str(tmp_path / "synthetic"),
          "--data.n_train", "3", "--data.n_test", "1", "--data.synthetic_size", "64", "--data.image_size", "64",
          "--trainer.fast_dev_run", "true", "--trainer.logger", "false",
          "--trainer.default_root_dir", str(tmp_path / "demo")])  # fmt: skip
    assert (tmp_path / "synthetic" / "structural" / "train" / "masks").is_dir()


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
