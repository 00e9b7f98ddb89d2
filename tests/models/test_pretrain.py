"""Offline pretraining: SSL on unlabeled photos, the backbone file out, and the same file into both models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import load_file

from crackcascade import (
    CrackSegmenter,
    MultiTaskClassifier,
    SaveBackbone,
    SSLPretrainer,
    UnlabeledPhotoDataModule,
)
from crackcascade.checkpoints.backbone import backbone_state, write_backbone
from crackcascade.cli import main
from crackcascade.data.unlabeled import native_crop
from crackcascade.errors import DataError, WeightsError

from ..conftest import CONF, ROOT


def _photos(root: Path, count: int = 8, seed: int = 0) -> Path:
    """Concrete-grey photos of 48-80 px with a dark polyline crack, in nested folders, plus a text file."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        height, width = int(rng.integers(48, 81)), int(rng.integers(48, 81))
        pixels = np.clip(rng.normal(150, 20, (height, width, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        points = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(4)]
        ImageDraw.Draw(image).line(points, fill=(40, 40, 40), width=int(rng.integers(1, 4)))
        folder = root / ("a" if i % 2 else "b/c")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"photo{i}.{'png' if i % 3 else 'jpg'}")
    (root / "notes.txt").write_text("not a photo")
    return root


class _Losses(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.values.append(float(outputs["loss"]))


def _pretrain(
    root: Path, out: Path, method: str = "byol", steps: int = 4, lr: float = 3e-3, batch_size: int = 4
) -> tuple[SSLPretrainer, Path]:
    pl.seed_everything(0, verbose=False)
    model = SSLPretrainer(backbone="test_resnet", method=method, hidden_dim=32, projection_dim=16, lr=lr,
                          scheduler="none")  # fmt: skip
    datamodule = UnlabeledPhotoDataModule(root=str(root), image_size=32, batch_size=batch_size, num_workers=0)
    path = out / "backbone.safetensors"
    losses = _Losses()
    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[SaveBackbone(str(path)), losses], default_root_dir=str(out),
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    model.losses = losses.values  # type: ignore[attr-defined]
    return model, path


@pytest.mark.parametrize(("method", "lr", "batch_size"), [("byol", 3e-3, 4), ("simclr", 1e-3, 8)])
def test_ssl_loss_falls_on_a_tiny_folder(tmp_path: Path, method: str, lr: float, batch_size: int) -> None:
    # SimCLR contrasts each photo with the batch's others: the whole tiny folder in one batch.
    model, _ = _pretrain(_photos(tmp_path / "photos"), tmp_path / "out", method, 20, lr, batch_size)
    losses = model.losses  # type: ignore[attr-defined]
    assert len(losses) == 20 and all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first - 0.05, f"{method} loss did not fall: {losses}"


def test_backbone_file_and_json_load_into_classifier_and_unet(tmp_path: Path) -> None:
    model, path = _pretrain(_photos(tmp_path / "photos"), tmp_path / "out", steps=2)
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["architecture"] == "test_resnet" and info["method"] == "self-supervised byol"
    assert info["images"] == 8 and info["steps"] == 2 and info["data_root"] == str((tmp_path / "photos").resolve())
    assert info["date"][:4].isdigit() and info["initialized_from"] is None
    with safe_open(str(path), "pt") as handle:
        assert json.loads(handle.metadata()["crackcascade"]) == info
    trained = model.backbone.conv1[0].weight.detach()
    assert not torch.equal(trained, SSLPretrainer(backbone="test_resnet").backbone.conv1[0].weight), "it trained"

    classifier = MultiTaskClassifier(backbone="test_resnet", tasks=["damage_state"], pretrained_weights=str(path))
    assert torch.equal(classifier.backbone.conv1[0].weight, trained)
    assert torch.equal(classifier.backbone.layer1[0].bn1.running_mean, model.backbone.layer1[0].bn1.running_mean)
    unet = CrackSegmenter(encoder_name="tu-test_resnet", pretrained_weights=str(path))
    assert torch.equal(unet.model.encoder.model.conv1[0].weight, trained)
    assert torch.equal(unet.model.encoder.model.layer1[0].conv1.weight, model.backbone.layer1[0].conv1.weight)


def test_unet_and_classifier_backbones_go_both_ways(tmp_path: Path) -> None:
    """A U-Net's encoder (the model. prefix of smp's tu- wrapper) written and read by the classifier, and back."""
    torch.manual_seed(0)
    unet = CrackSegmenter(encoder_name="tu-test_resnet")
    architecture, state = backbone_state(unet)
    assert architecture == "test_resnet" and not any(k.startswith("model.") for k in state)
    unet_file = write_backbone(tmp_path / "unet.safetensors", state, {"architecture": architecture})
    classifier = MultiTaskClassifier(backbone="test_resnet", tasks=["damage_state"], pretrained_weights=str(unet_file))
    assert torch.equal(classifier.backbone.conv1[0].weight, unet.model.encoder.model.conv1[0].weight)

    torch.manual_seed(1)
    source = MultiTaskClassifier(backbone="test_resnet", tasks=["damage_state"])
    classifier_file = write_backbone(tmp_path / "cls.safetensors", backbone_state(source)[1], {"architecture": "x"})
    unet2 = CrackSegmenter(encoder_name="tu-test_resnet", pretrained_weights=str(classifier_file))
    assert torch.equal(unet2.model.encoder.model.layer2[0].conv2.weight, source.backbone.layer2[0].conv2.weight)


def test_mismatched_architecture_is_one_line_naming_the_file(tmp_path: Path) -> None:
    _, path = _pretrain(_photos(tmp_path / "photos"), tmp_path / "out", steps=1)
    with pytest.raises(WeightsError) as caught:
        MultiTaskClassifier(backbone="resnet18", tasks=["damage_state"], pretrained_weights=str(path))
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "holds a test_resnet backbone" in message
    with pytest.raises(WeightsError) as caught:
        CrackSegmenter(encoder_name="tu-resnet18", pretrained_weights=str(path))
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_bad_photos_raise_or_are_skipped(tmp_path: Path) -> None:
    root = _photos(tmp_path / "photos", count=4)
    (root / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        UnlabeledPhotoDataModule(root=str(root), image_size=32, num_workers=0).setup("fit")
    datamodule = UnlabeledPhotoDataModule(root=str(root), image_size=32, num_workers=0, on_error="skip")
    with pytest.warns(UserWarning, match=r"skipped 1 bad images .*broken.jpg"):
        datamodule.setup("fit")
    assert datamodule.num_images == 4
    sample = datamodule.dataset[0]  # type: ignore[index]
    assert sample["image"].shape == (2, 3, 32, 32) and sample["image"].dtype == torch.float32
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no readable images"):
        UnlabeledPhotoDataModule(root=str(tmp_path / "empty"), num_workers=0).setup("fit")
    with pytest.raises(DataError, match="does not exist"):
        UnlabeledPhotoDataModule(root=str(tmp_path / "missing"), num_workers=0).setup("fit")


def test_native_crop_keeps_pixels_and_resize_sees_the_whole_photo(tmp_path: Path) -> None:
    image = torch.arange(3 * 50 * 70, dtype=torch.int32).view(3, 50, 70)
    window = native_crop(image, 32)
    top, left = divmod(int(window[0, 0, 0]), 70)
    assert window.shape == (3, 32, 32) and torch.equal(window, image[:, top : top + 32, left : left + 32])
    assert native_crop(image, 64).shape == (3, 50, 64), "a side shorter than the crop is kept whole"
    root = _photos(tmp_path / "photos", count=2)
    for views in ("crop", "resize"):
        datamodule = UnlabeledPhotoDataModule(root=str(root), image_size=32, views=views, num_workers=0)
        datamodule.setup("fit")
        assert datamodule.dataset[1]["image"].shape == (2, 3, 32, 32)  # type: ignore[index]


def test_config_resolves_and_runs_fast_dev_run_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(ROOT / "configs" / "pretrain_ssl.yaml"), "--print_config"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: crackcascade.SSLPretrainer" in printed and "class_path: crackcascade.SaveBackbone" in printed
    assert "class_path: crackcascade.UnlabeledPhotoDataModule" in printed
    root = _photos(tmp_path / "photos", count=4)
    out = tmp_path / "run"
    main(["fit", "--config", str(CONF / "pretrain_ssl.yaml"), "--data.root", str(root),
          "--trainer.default_root_dir", str(out), "--trainer.fast_dev_run", "true"])  # fmt: skip
    (written,) = out.rglob("backbone.safetensors")
    info = json.loads(written.with_suffix(".json").read_text())
    assert info["architecture"] == "test_resnet" and info["steps"] == 1 and info["images"] == 4
    classifier = MultiTaskClassifier(backbone="test_resnet", tasks=["damage_state"], pretrained_weights=str(written))
    assert classifier.backbone.conv1[0].weight.abs().sum() > 0


def test_synthetic_pretraining_config_writes_a_backbone_that_chains(tmp_path: Path) -> None:
    """SSL backbone -> supervised on synthetic scenes (configs/pretrain_synthetic.yaml) -> the classifier."""
    _, ssl_file = _pretrain(_photos(tmp_path / "photos", count=4), tmp_path / "ssl", steps=1)
    out = tmp_path / "synthetic"
    main(["fit", "--config", str(ROOT / "configs" / "pretrain_synthetic.yaml"),
          "--model.encoder_name", "tu-test_resnet", "--model.pretrained_weights", str(ssl_file),
          "--data.root", str(tmp_path / "scenes"), "--data.n_train", "4", "--data.n_test", "2",
          "--data.synthetic_size", "64", "--data.image_size", "32", "--data.batch_size", "2",
          "--data.scales", "[pixel]", "--data.num_workers", "0",
          "--trainer.default_root_dir", str(out), "--trainer.logger", "false", "--trainer.fast_dev_run", "true",
          "--trainer.accelerator", "cpu", "--trainer.precision", "32-true"])  # fmt: skip
    written = out / "backbone.safetensors"
    info = json.loads(written.with_suffix(".json").read_text())
    assert info["architecture"] == "test_resnet" and info["method"] == "supervised (CrackSegmenter)"
    assert info["initialized_from"] == str(ssl_file) and info["steps"] == 1
    assert info["data"] == "SyntheticCrackMaskDataModule" and info["images"] > 0
    unet = CrackSegmenter(encoder_name="tu-test_resnet", pretrained_weights=str(written))
    classifier = MultiTaskClassifier(backbone="test_resnet", tasks=["damage_state"], pretrained_weights=str(written))
    assert torch.equal(classifier.backbone.conv1[0].weight, unet.model.encoder.model.conv1[0].weight)


def test_any_run_writes_its_backbone_with_the_callback_appended(phinet_roots: dict[str, Path], tmp_path: Path) -> None:
    """The docs' recipe for the classifier on synthetic Phi-Net data: --trainer.callbacks+=crackcascade.SaveBackbone."""
    path = tmp_path / "classifier.safetensors"
    main(["fit", "--config", str(CONF / "multitask.yaml"), "--data.root", str(phinet_roots["folders"]),
          "--data.format", "folders", "--trainer.default_root_dir", str(tmp_path / "out"),
          "--trainer.fast_dev_run", "true", "--trainer.callbacks+=crackcascade.SaveBackbone",
          "--trainer.callbacks.path", str(path)])  # fmt: skip
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["method"] == "supervised (MultiTaskClassifier)" and info["data"] == "PhiNetDataModule"
    assert info["architecture"] == "test_resnet" and info["steps"] == 1 and info["images"] > 0
    unet = CrackSegmenter(encoder_name="tu-test_resnet", pretrained_weights=str(path))
    assert torch.equal(unet.model.encoder.model.conv1[0].weight, load_file(str(path))["conv1.0.weight"])


def test_views_replay_from_the_seed_alone(tmp_path: Path) -> None:
    """Blur, solarization and turns draw from numpy: seeded per sample, so a resumed run sees the same views."""
    root = _photos(tmp_path / "photos", count=4)
    batches = []
    for numpy_draws in (0, 7):
        pl.seed_everything(3, verbose=False)
        np.random.random(numpy_draws)  # whatever else used numpy's global RNG must not matter
        datamodule = UnlabeledPhotoDataModule(root=str(root), image_size=32, batch_size=4, num_workers=0)
        datamodule.setup("fit")
        batches.append(next(iter(datamodule.train_dataloader()))["image"])
    assert batches[0].shape == (4, 2, 3, 32, 32) and torch.equal(batches[0], batches[1])
    assert not torch.equal(batches[0][:, 0], batches[0][:, 1]), "the two views of a photo differ"
