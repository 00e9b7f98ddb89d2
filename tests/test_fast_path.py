"""The fast path as configuration: layout, compile, sync-free metrics, gradient accumulation, loaders, batch finder."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import CSVLogger
from torchmetrics.classification import MulticlassConfusionMatrix

from crackcascade import CrackSegmenter, LargestBatchFinder, MultiTaskClassifier, PhiNetDataModule
from crackcascade.cli import main
from crackcascade.data.datamodules import make_loader
from crackcascade.data.io import read_image
from crackcascade.data.transforms import classification_transform
from crackcascade.errors import ConfigError
from crackcascade.metrics.classification import ConfusionCounts
from crackcascade.synthetic import write_phinet

from .conftest import CONF


def _trainer(tmp_path: Path, **options: object) -> pl.Trainer:
    defaults: dict[str, object] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": str(tmp_path),
    }
    return pl.Trainer(**{**defaults, **options})  # type: ignore[arg-type]


# ---- layout and compile ----------------------------------------------------------------------


def test_channels_last_is_the_same_network_in_another_layout() -> None:
    torch.manual_seed(0)
    fast = MultiTaskClassifier(backbone="test_resnet", channels_last=True).eval()
    plain = MultiTaskClassifier(backbone="test_resnet", channels_last=False).eval()
    plain.load_state_dict(fast.state_dict())
    conv = fast.backbone.conv1[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    with torch.no_grad():
        for task, logits in fast(images).items():
            torch.testing.assert_close(logits, plain(images)[task], rtol=1e-4, atol=1e-5)


def test_compiled_backbone_trains_and_saves_plain_keys(
    tmp_path: Path, phinet_roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Inductor's first C++ build of even test_resnet takes over a minute on 2 cores; the
    # aot_eager backend goes through the same Dynamo capture and AOTAutograd graphs without it.
    modes: list[str] = []
    compile_module = torch.nn.Module.compile

    def compile_without_codegen(module: torch.nn.Module, *args: object, mode: str, **kwargs: object) -> None:
        modes.append(mode)
        compile_module(module, backend="aot_eager")

    monkeypatch.setattr(torch.nn.Module, "compile", compile_without_codegen)
    data = PhiNetDataModule(root=str(phinet_roots["arrays"]), tasks=["scene"], image_size=32, batch_size=4)
    model = MultiTaskClassifier(backbone="test_resnet", tasks=["scene"], compile=True, compile_mode="max-autotune")
    assert modes == ["max-autotune"]
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 2
    trainer.save_checkpoint(tmp_path / "compiled.ckpt")
    state = torch.load(tmp_path / "compiled.ckpt", weights_only=True)["state_dict"]
    assert not [k for k in state if "_orig_mod" in k] and "backbone.conv1.0.weight" in state
    eager = MultiTaskClassifier.load_from_checkpoint(tmp_path / "compiled.ckpt", compile=False)  # strict keys
    trained = model.state_dict()
    assert all(torch.equal(value, trained[key]) for key, value in eager.state_dict().items())


def test_segmenter_compiles_its_unet_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[tuple[torch.nn.Module, str]] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda module, mode: compiled.append((module, mode)))
    plain = CrackSegmenter(encoder_name="tu-test_resnet")
    model = CrackSegmenter(encoder_name="tu-test_resnet", compile=True, compile_mode="reduce-overhead")
    assert compiled == [(model.model, "reduce-overhead")]
    assert list(model.state_dict()) == list(plain.state_dict())


# ---- sync-free confusion matrices --------------------------------------------------------------


def test_confusion_counts_equal_torchmetrics_and_skip_unknown_labels() -> None:
    generator = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 4, (500,), generator=generator)
    target = torch.randint(-1, 4, (500,), generator=generator)  # -1: not labelled for the task
    ours, reference = ConfusionCounts(4), MulticlassConfusionMatrix(4, ignore_index=-1)
    for part in range(5):
        rows = slice(100 * part, 100 * (part + 1))
        ours.update(preds[rows], target[rows])
        reference.update(preds[rows], target[rows])
    assert torch.equal(ours.compute(), reference.compute())
    ours.update(torch.tensor([0, 1]), torch.tensor([7, -5]))  # out of range: not counted either
    assert torch.equal(ours.compute(), reference.compute())


def test_confusion_counts_are_exact_under_bf16_autocast() -> None:
    counts = ConfusionCounts(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        counts.update(torch.zeros(1001, dtype=torch.long), torch.zeros(1001, dtype=torch.long))
    assert counts.compute().tolist() == [[1001, 0], [0, 0]]  # bf16 would round 1001 to 1000


def test_per_task_training_losses_are_logged_on_the_steps_that_are_written(
    tmp_path: Path, phinet_roots: dict[str, Path]
) -> None:
    tasks = ["scene", "spalling"]
    data = PhiNetDataModule(root=str(phinet_roots["arrays"]), tasks=tasks, image_size=32, batch_size=4, val_fraction=0)
    model = MultiTaskClassifier(backbone="test_resnet", tasks=tasks)
    logged: list[str] = []
    log = model.log

    def spy(name: str, *args: object, **kwargs: object) -> None:
        logged.append(name)
        log(name, *args, **kwargs)  # type: ignore[arg-type]

    model.log = spy  # type: ignore[method-assign]
    logger = CSVLogger(str(tmp_path), name="run")
    trainer = _trainer(tmp_path, max_steps=6, log_every_n_steps=2, logger=logger, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    assert logged.count("train_loss") == 6 and logged.count("train_scene_loss") == 3
    with open(Path(logger.log_dir) / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row["train_loss"]]
    assert [row["step"] for row in rows] == ["1", "3", "5"]
    for row in rows:  # the per-task losses written are that step's: they sum to its total loss
        total = float(row["train_scene_loss"]) + float(row["train_spalling_loss"])
        assert float(row["train_loss"]) == pytest.approx(total, rel=1e-5)


# ---- gradient accumulation -----------------------------------------------------------------------


def _one_optimizer_step(root: Path, tmp_path: Path, batch_size: int, accumulate: int) -> dict[str, torch.Tensor]:
    pl.seed_everything(0, verbose=False)
    data = PhiNetDataModule(
        root=str(root), tasks=["scene", "spalling"], image_size=32, batch_size=batch_size, val_fraction=0, augment=False
    )
    # ConvNeXt normalizes with LayerNorm: no statistic depends on the batch, so a step over 40
    # images and two accumulated half-steps of 20 must move the weights alike.
    model = MultiTaskClassifier(backbone="test_convnext", tasks=["scene", "spalling"], lr=0.1, momentum=0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _trainer(tmp_path, max_steps=1, accumulate_grad_batches=accumulate, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    return {k: v - before[k] for k, v in model.state_dict().items() if v.is_floating_point()}


def test_accumulated_half_batches_step_like_the_full_batch(tmp_path: Path) -> None:
    root = write_phinet(tmp_path / "data", tasks=["scene", "spalling"], n_train=20, n_test=0, size=32)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in MultiTaskClassifier("test_convnext").modules())
    full = _one_optimizer_step(root, tmp_path, batch_size=40, accumulate=1)
    halves = _one_optimizer_step(root, tmp_path, batch_size=20, accumulate=2)
    assert max(float(d.abs().max()) for d in full.values()) > 1e-3, "the step moved the weights"
    for name, delta in full.items():
        torch.testing.assert_close(halves[name], delta, rtol=1e-3, atol=1e-6, msg=name)


# ---- loaders and decoding ------------------------------------------------------------------------


def test_prefetch_factor_reaches_worker_loaders_only() -> None:
    dataset = list(range(8))
    assert make_loader(dataset, 2, False, 2, False, prefetch_factor=4).prefetch_factor == 4  # type: ignore[arg-type]
    assert make_loader(dataset, 2, False, 0, False, prefetch_factor=4).prefetch_factor is None  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="data.prefetch_factor"):
        PhiNetDataModule(prefetch_factor=0)


def test_large_jpegs_decode_at_a_reduced_scale_no_smaller_than_asked(tmp_path: Path) -> None:
    image = Image.new("RGB", (800, 600), (200, 30, 30))
    image.save(tmp_path / "photo.jpg", quality=95)
    image.save(tmp_path / "photo.png")
    assert tuple(read_image(tmp_path / "photo.jpg").shape) == (3, 600, 800)
    assert tuple(read_image(tmp_path / "photo.jpg", min_size=128).shape) == (3, 150, 200)  # 1/4: both sides >= 128
    assert tuple(read_image(tmp_path / "photo.jpg", min_size=400).shape) == (3, 600, 800)  # 1/2 would be 300 < 400
    assert tuple(read_image(tmp_path / "photo.png", min_size=128).shape) == (3, 600, 800)  # only JPEG has draft
    exif = image.getexif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise
    image.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    assert tuple(read_image(tmp_path / "turned.jpg", min_size=128).shape) == (3, 200, 150)


def test_jpeg_draft_option_decides_how_classification_photos_decode(tmp_path: Path) -> None:
    root = write_phinet(tmp_path / "data", format="folders", tasks=["scene"], n_train=3, n_test=0, size=256)
    transform = classification_transform(64, train=False)
    for draft in (True, False):
        data = PhiNetDataModule(
            root=str(root),
            tasks=["scene"],
            format="folders",
            image_size=64,
            val_fraction=0,
            augment=False,
            jpeg_draft=draft,
        )
        data.setup("fit")
        dataset = data.datasets["train"]["scene"]
        path = dataset.paths[0]  # type: ignore[attr-defined]
        expected = transform(read_image(path, min_size=64 if draft else None))
        assert torch.equal(dataset[0]["image"], expected), draft
    assert not torch.equal(transform(read_image(path, min_size=64)), transform(read_image(path)))


def test_fast_path_flags_reach_the_run_from_the_cli(phinet_roots: dict[str, Path], tmp_path: Path) -> None:
    args = [
        "fit", "--config", str(CONF / "multitask.yaml"), "--data.root", str(phinet_roots["arrays"]),
        "--data.tasks", "[scene,spalling]", "--data.batch_size", "4", "--data.num_workers", "1",
        "--data.prefetch_factor", "3",
        "--model.channels_last", "false", "--trainer.precision", "bf16-mixed", "--trainer.benchmark", "true",
        "--trainer.accumulate_grad_batches", "2", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
    ]  # fmt: skip
    assert main(args) == 0
    checkpoint = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)
    assert checkpoint["global_step"] == 2, "four batches of 4 (2 per task), two accumulated per step"
    assert checkpoint["hyper_parameters"]["channels_last"] is False
    assert checkpoint["datamodule_hyper_parameters"]["prefetch_factor"] == 3


# ---- largest batch -------------------------------------------------------------------------------


def test_batch_finder_from_the_cli_records_the_size_found(phinet_roots: dict[str, Path], tmp_path: Path) -> None:
    args = [
        "fit", "--config", str(CONF / "multitask.yaml"), "--data.root", str(phinet_roots["arrays"]),
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
        "--trainer.callbacks+=crackcascade.LargestBatchFinder", "--trainer.callbacks.steps_per_trial=1",
    ]  # fmt: skip
    assert main(args) == 0
    checkpoint = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)
    # Seven training images per task (one of eight carved for validation): 2 and 4 ran, then 8,
    # the first size not below the dataset's length, which ends Lightning's search.
    assert checkpoint["datamodule_hyper_parameters"]["batch_size"] == 8


CAPPED_SEARCH = """
import json, logging, resource, sys
import pytorch_lightning as pl
import crackcascade.hardware as hardware
from crackcascade import LargestBatchFinder, MultiTaskClassifier, PhiNetDataModule

failed = []
class Failures(logging.Handler):
    def emit(self, record):
        if "failed, trying batch size" in record.getMessage():
            failed.append(record.getMessage())
logging.getLogger("pytorch_lightning").addHandler(Failures())
limits = resource.getrlimit(resource.RLIMIT_DATA)
hardware.available_memory = lambda: 600 * 2**20  # as if 600 MiB were free
data = PhiNetDataModule(root=sys.argv[1], tasks=["scene"], image_size=160, batch_size=2, val_fraction=0.05)
model = MultiTaskClassifier(backbone="test_resnet", tasks=["scene"])
finder = LargestBatchFinder(memory_fraction=0.5, steps_per_trial=1)
trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     max_steps=1, limit_val_batches=0, callbacks=[finder], default_root_dir=sys.argv[2])
trainer.fit(model, datamodule=data)
print(json.dumps({"found": finder.optimal_batch_size, "data": data.batch_size, "steps": trainer.global_step,
                  "failed": failed, "restored": resource.getrlimit(resource.RLIMIT_DATA) == limits}))
"""


def test_batch_finder_stops_at_the_memory_cap(tmp_path: Path) -> None:
    root = write_phinet(tmp_path / "data", tasks=["scene"], n_train=140, n_test=0, size=160)
    # A fresh process, as a real run is: the cap bounds how far the data segment grows, and a
    # long-lived test process reuses memory it freed earlier without growing it.
    done = subprocess.run(
        [sys.executable, "-c", CAPPED_SEARCH, str(root), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    found = result["found"]
    # Without a cap the search runs up to 256, the first size beyond the 133 training images; in
    # 300 MiB a larger size fails in PyTorch's allocator first and the last one that ran is kept.
    assert math.log2(found).is_integer() and 2 <= found < 128, result
    assert result["failed"] == [f"Batch size {2 * found} failed, trying batch size {found}"], result
    assert result["data"] == found and result["steps"] == 1, "training went on at the size found"
    assert result["restored"], "the cap is lifted after the search"


def test_batch_finder_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="memory_fraction"):
        LargestBatchFinder(memory_fraction=0)
    with pytest.raises(ConfigError, match="mode"):
        LargestBatchFinder(mode="linear")


def test_batch_finder_takes_onednn_allocation_failures_for_out_of_memory() -> None:
    from pytorch_lightning.tuner import batch_size_scaling

    from crackcascade.callbacks.batch_finder import _count_onednn_failures_as_oom, is_out_of_memory

    onednn = RuntimeError("could not create a primitive")
    assert is_out_of_memory(onednn) and is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("shapes cannot be multiplied")) and not is_out_of_memory(ValueError())
    original = batch_size_scaling.is_oom_error
    assert not original(onednn)  # what Lightning alone would re-raise mid-search
    with _count_onednn_failures_as_oom():
        assert batch_size_scaling.is_oom_error(onednn)
    assert batch_size_scaling.is_oom_error is original


@pytest.mark.parametrize("native", [True, False])
def test_precision_defaults_to_bf16_only_where_the_hardware_runs_it(
    native: bool, phinet_roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    import crackcascade.hardware

    monkeypatch.setattr(crackcascade.hardware, "bf16_supported", lambda: native)
    command = ["fit", "--model", "MultiTaskClassifier", "--data", "PhiNetDataModule",
               "--data.root", str(phinet_roots["arrays"])]  # fmt: skip

    def printed(*extra: str) -> dict:
        with pytest.raises(SystemExit) as info:
            main([*command, *extra, "--print_config"])
        assert info.value.code == 0
        return yaml.safe_load(capsys.readouterr().out)

    assert str(printed()["trainer"]["precision"]) == ("bf16-mixed" if native else "32")
    assert printed("--trainer.precision", "32-true")["trainer"]["precision"] == "32-true", "an explicit value wins"
