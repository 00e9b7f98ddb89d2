"""``data.decode_on gpu``: the bytes path, decoded on the CPU here, gives the CPU path's images."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torchvision.transforms import v2

from crackcascade import MultiTaskClassifier, PhiNetDataModule
from crackcascade.cli import main
from crackcascade.data.batch_augment import BatchAugment, apply_params
from crackcascade.data.gpu_decode import (
    BatchDecoder,
    EncodedImages,
    ImageBytesDataset,
    collate_encoded,
    resolve_decode_on,
    split_resize,
)
from crackcascade.data.io import read_image
from crackcascade.data.transforms import classification_transform
from crackcascade.errors import ConfigError, DataError
from crackcascade.models.multitask import collate_tasks
from crackcascade.synthetic import write_phinet

from ..conftest import CONF

TASK = "damage_state"


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jpegs")
    write_phinet(root, format="folders", n_train=12, n_test=0, size=64, tasks=[TASK], seed=2, workers=1)
    return root


def _module(root: Path, decode_on: str, monkeypatch: pytest.MonkeyPatch, **options: object) -> PhiNetDataModule:
    """A data module; ``gpu`` is kept on this CUDA-less machine by making CUDA look available while it is built."""
    with monkeypatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: decode_on == "gpu")
        dm = PhiNetDataModule(
            root=str(root), tasks=[TASK], format="folders", image_size=48, batch_size=12, val_fraction=0.25,
            pin_memory=False, jpeg_draft=False, decode_on=decode_on, **options,  # type: ignore[arg-type]
        )  # fmt: skip
    assert dm.decode_on == decode_on
    dm.setup("fit")
    return dm


def _train_images(dm: PhiNetDataModule) -> torch.Tensor:
    batch, _, _ = next(iter(dm.train_dataloader()))
    return collate_tasks(dm.on_after_batch_transfer(batch, 0))["image"]


def test_bytes_path_decoded_on_cpu_equals_the_cpu_path(jpeg_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, gpu = _module(jpeg_root, "cpu", monkeypatch), _module(jpeg_root, "gpu", monkeypatch)
    cpu_batch, raw = next(iter(cpu.val_dataloader())), next(iter(gpu.val_dataloader()))
    assert isinstance(raw["image"], EncodedImages) and len(raw["image"]) == len(cpu_batch["image"]) == 3
    decoded = gpu.on_after_batch_transfer(raw, 0)
    assert raw["path"] == cpu_batch["path"] and torch.equal(decoded["labels"], cpu_batch["labels"])
    assert decoded["image"].dtype == torch.uint8 and decoded["image"].shape == cpu_batch["image"].shape
    # PIL and torchvision both decode with libjpeg(-turbo)'s default IDCT; the resize is the same v2 call.
    difference = (decoded["image"].int() - cpu_batch["image"].int()).abs()
    assert int(difference.max()) <= 1, int(difference.max())


def test_training_batches_augment_as_the_cpu_path_and_replay(jpeg_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, gpu = _module(jpeg_root, "cpu", monkeypatch), _module(jpeg_root, "gpu", monkeypatch)
    unaugmented = _module(jpeg_root, "gpu", monkeypatch, augment=False)
    in_workers = _module(jpeg_root, "gpu", monkeypatch, num_workers=2)  # bytes and parameters cross processes
    batches = {}
    for name, dm in (("cpu", cpu), ("gpu", gpu), ("again", gpu), ("bare", unaugmented), ("workers", in_workers)):
        pl.seed_everything(3, verbose=False)
        batches[name] = _train_images(dm)
    assert batches["gpu"].shape == (9, 3, 48, 48) and torch.equal(batches["gpu"], batches["again"])
    assert torch.equal(batches["gpu"], batches["workers"]), "the same for any number of workers"
    # The worker draws each sample's flip and jitter as the CPU path's transform does, under the same seed.
    difference = (batches["gpu"].int() - batches["cpu"].int()).abs()
    assert int(difference.max()) <= 1, int(difference.max())
    changed = [not torch.equal(a, b) for a, b in zip(batches["gpu"], batches["bare"], strict=True)]
    assert all(changed), "colour jitter touches every training image"


def test_without_cuda_gpu_decoding_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match=r"^data\.decode_on gpu: CUDA is not available") as caught:
        assert resolve_decode_on("gpu") == "cpu"
    assert "\n" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_decode_on("cpu") == "cpu"
    with pytest.raises(ConfigError, match=r"^data\.decode_on must be 'cpu' or 'gpu', got 'tpu'$"):
        resolve_decode_on("tpu")


def test_png_and_jpeg_in_one_batch(jpeg_root: Path, tmp_path: Path) -> None:
    jpeg = sorted(jpeg_root.rglob("*.jpg"))[0]
    png = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(png)
    dataset = ImageBytesDataset([jpeg, png])
    samples = [dataset[0], dataset[1]]
    assert samples[0]["image"].data.ndim == 1 and samples[1]["image"].data.shape == (3, 40, 56)
    batch = collate_encoded(samples)
    images = BatchDecoder(32)(batch)["image"]
    resize = classification_transform(32, train=False)
    expected = torch.stack([resize(read_image(jpeg)), resize(read_image(png))])
    assert images.shape == (2, 3, 32, 32)
    assert int((images.int() - expected.int()).abs().max()) <= 1
    assert torch.equal(images[1], expected[1]), "a PNG is decoded by PIL, exactly as on the CPU path"


def test_an_undecodable_jpeg_is_named_in_one_line(jpeg_root: Path, tmp_path: Path) -> None:
    good = sorted(jpeg_root.rglob("*.jpg"))[0]
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    batch = collate_encoded([ImageBytesDataset([good, bad])[i] for i in range(2)])
    with pytest.raises(DataError) as caught:
        BatchDecoder(32)(batch)
    message = str(caught.value)
    assert message.startswith(f"{bad}: cannot decode JPEG (") and "data.decode_on cpu" in message
    assert "\n" not in message


def test_a_jpeg_with_an_exif_turn_is_decoded_upright_on_the_cpu(tmp_path: Path) -> None:
    # nvJPEG ignores EXIF orientation, so such a file must not reach it as bytes.
    path = tmp_path / "phone.jpg"
    pixels = np.zeros((24, 40, 3), dtype=np.uint8)
    pixels[:, :8] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to view
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    plain = tmp_path / "plain.jpg"
    Image.fromarray(pixels).save(plain, quality=95)
    turned, upright = ImageBytesDataset([path, plain])[0]["image"], ImageBytesDataset([plain])[0]["image"]
    assert turned.data.shape == (3, 40, 24) and torch.equal(turned.data, read_image(path))
    assert upright.data.ndim == 1, "a JPEG without a turn stays bytes for the device"


def test_lightning_fit_decodes_through_the_hook(
    jpeg_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The model cannot take an EncodedImages batch: training and validation pass only if the
    # Trainer calls the data module's on_after_batch_transfer on every batch.
    dm = _module(jpeg_root, "gpu", monkeypatch)
    model = MultiTaskClassifier(backbone="test_resnet", tasks=[TASK])
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False,
        default_root_dir=tmp_path,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2 and "val_loss" in trainer.callback_metrics


def test_batched_flip_and_jitter_match_the_v2_transform_per_image() -> None:
    transform = classification_transform(24, train=True)
    steps = v2.Compose(split_resize(transform)[1])
    augment = BatchAugment(split_resize(transform)[1])
    images = torch.randint(0, 256, (64, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected, params = [], []
    for seed, image in enumerate(images):
        torch.manual_seed(seed)
        expected.append(steps(image))
        torch.manual_seed(seed)
        params.append(augment.draw())
    drawn = torch.stack(params)
    assert 0 < int(drawn[:, 0].sum()) < 64 and len({tuple(row[1:5].tolist()) for row in drawn}) > 6
    difference = (apply_params(images, drawn).int() - torch.stack(expected).int()).abs()
    assert int(difference.max()) <= 1 and float(difference.float().mean()) < 0.01, difference.max()
    with pytest.raises(TypeError, match="cannot apply"):
        BatchAugment([v2.RandomVerticalFlip()])


def test_the_cli_option_reaches_the_data_module(jpeg_root: Path, tmp_path: Path) -> None:
    args = [
        "fit", "--config", str(CONF / "multitask.yaml"), "--data.root", str(jpeg_root), "--data.tasks", f"[{TASK}]",
        "--data.format", "folders", "--data.batch_size", "4", "--data.decode_on", "gpu",
        "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger", "false",
    ]  # fmt: skip
    if torch.cuda.is_available():
        pytest.skip("checks the fallback without CUDA")
    with pytest.warns(UserWarning, match=r"data\.decode_on gpu: CUDA is not available"):
        assert main(args) == 0
    checkpoint = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"]["decode_on"] == "gpu", "the run asked for it; a GPU resumes it"
