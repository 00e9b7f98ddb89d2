"""Every GPU claim in one process and one table, in under 8 minutes on one H100 (the rows within ``--budget``).

Rows (``ours`` is crackcascade, ``baseline`` what a plain PyTorch user runs, ``ratio`` ours/baseline):

* ``train ...``: ResNet-152 at 224, eight heads: :class:`~crackcascade.MultiTaskClassifier`'s
  training step under a Lightning Trainer against a bare timm loop with one head, same batch,
  SGD, precision and layout (``benchmarks/train_step.py``), images/s, for fp32 eager
  channels-first, bf16 autocast, + channels-last, + ``torch.compile``;
* ``train largest batch``: :class:`~crackcascade.LargestBatchFinder`'s size (bf16, channels-last)
  and images/s when training at it;
* ``infer ...``: the eight-head classifier against a bare timm network, and one eight-head pass
  against eight single-task models (``benchmarks/multitask_inference.py``), images/s;
* ``U-Net ...``: the ResNet-34 U-Net's training step and inference at 512x512 against a bare smp
  U-Net (same precision and layout), images/s; tiled inference of a 12 MP photo against one
  untiled pass, seconds, with peak GPU memory in the note;
* ``input ...``: Phi-Net-size JPEGs reaching the model (on the device, decoded, resized,
  augmented) per second through ``PhiNetDataModule`` with N DataLoader workers, GPU decoding
  (``data.decode_on gpu``, ours) against CPU decoding (baseline); and how far GPU-decoded pixels
  are from the CPU path's (grey levels).

Each row has a time budget; one that would overrun the suite's budget is skipped with a note, and
one that runs past its own is stopped and noted. ``torch.compile`` runs last (its compile time is
the least predictable). The table is printed, and written with the machine as JSON to ``--out``.

    python benchmarks/gpu_suite.py                        # on the GPU: the README's GPU table
    python benchmarks/gpu_suite.py --quick                # every row on CPU, tiny models (seconds)
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import timm
import torch
from _budget import Row, Suite
from _common import quiet_trainer
from multitask_inference import build_models, images_per_second
from pytorch_lightning.utilities import CombinedLoader, move_data_to_device
from tiled_inference import SIZES_MP
from torch.utils.data import DataLoader
from train_step import Repeat, Setting, StepClock, make_batches, run_bare, run_ours, synchronize, task_batches
from unet_step import step_seconds
from unet_throughput import infer_seconds, train_ours

from crackcascade import CrackSegmenter, LargestBatchFinder, MultiTaskClassifier, PhiNetDataModule
from crackcascade.data.gpu_decode import BatchDecoder, ImageBytesDataset, collate_encoded
from crackcascade.data.phinet import ImageFileDataset
from crackcascade.data.transforms import classification_transform
from crackcascade.hardware import bf16_supported
from crackcascade.labels import TASK_NAMES
from crackcascade.models.multitask import collate_tasks
from crackcascade.synthetic import write_phinet

TASK = "damage_state"
SETTINGS = {
    "train fp32 eager, channels-first": Setting("fp32", False, False, False, True),
    "train bf16 autocast": Setting("bf16", True, False, False, True),
    "train bf16 + channels-last": Setting("bf16 cl", True, True, False, True),
    "train bf16 + channels-last + compile": Setting("bf16 cl compile", True, True, True, True),
}
WORKER_COUNTS = (4, 8, 12, 16)

# (GPU, --quick) sizes, and per-row budgets in seconds. Rows use well under their budgets on an H100
# (about 200 s for all but compile), so compile, run last, still finds its 180 s in the suite's 440 s;
# with imports and start-up the process stays under 8 minutes.
FULL = dict(backbone="resnet152", size=224, batch_size=128, warmup=5, steps=20, infer_batch=256, infer_iters=10,
            encoder="resnet34", crop=512, unet_batch=16, photo_mp=12.0, tile=512, overlap=64, jpeg_size=224,
            jpegs=512, copies=16, feed_batch=128, feed_images=6144, max_trials=12, steps_per_trial=3,
            budget=440.0)  # fmt: skip
QUICK = dict(backbone="test_resnet", size=32, batch_size=8, warmup=1, steps=2, infer_batch=8, infer_iters=2,
             encoder="tu-test_resnet", crop=64, unet_batch=2, photo_mp=0.05, tile=64, overlap=16, jpeg_size=64,
             jpegs=16, copies=2, feed_batch=8, feed_images=16, max_trials=2, steps_per_trial=1,
             budget=240.0)  # fmt: skip
BUDGETS = {"train": 50.0, "compile": 180.0, "largest": 60.0, "infer": 25.0, "unet": 30.0, "tiled": 25.0,
           "write": 20.0, "check": 10.0, "feed": 20.0}  # fmt: skip


def machine() -> dict[str, Any]:
    """GPU name, driver, CUDA and torch versions; the CPU's name and cores."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "gpu": None, "gpu_memory_gib": None, "driver": None, "cuda": torch.version.cuda, "torch": torch.__version__,
        "cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }  # fmt: skip
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            info["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.split()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            info["driver"] = "unknown"
    return info


def describe(info: dict[str, Any]) -> str:
    """The table's heading line."""
    if info["gpu"]:
        where = f"{info['gpu']} ({info['gpu_memory_gib']} GiB), driver {info['driver']}, CUDA {info['cuda']}"
    else:
        where = f"no GPU: CPU {info['cpu']}, CUDA build {info['cuda']}"
    return f"machine: {where}; torch {info['torch']}; {info['cores']} CPU cores ({info['cpu']})"


class RandomPhiNet(pl.LightningDataModule):
    """Ready-made uint8 batches split over the eight task loaders; ``batch_size`` is what the finder changes."""

    def __init__(self, batch_size: int, size: int, pin: bool) -> None:
        super().__init__()
        self.batch_size, self.size, self.pin = batch_size, size, pin

    def train_dataloader(self) -> CombinedLoader:
        """Eight task loaders cycling over one batch of ``batch_size`` (rounded up to whole task parts)."""
        per_step = math.ceil(self.batch_size / len(TASK_NAMES)) * len(TASK_NAMES)
        parts = task_batches(make_batches(per_step, self.size, 1, self.pin), TASK_NAMES)
        loaders = {t: DataLoader(Repeat(parts[t], 1 << 20), batch_size=None) for t in TASK_NAMES}
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self) -> list[DataLoader]:
        """No validation: only training is measured (Lightning's batch-size search wants the method)."""
        return []


def largest_batch(cfg: argparse.Namespace, device: torch.device, precision: str, row: Row) -> None:
    """LargestBatchFinder's size, then images/s training at it (bf16, channels-last)."""
    pl.seed_everything(0, verbose=False)
    model = MultiTaskClassifier(backbone=cfg.backbone, optimizer="sgd", lr=1e-3, momentum=0.9, channels_last=True)
    data = RandomPhiNet(len(TASK_NAMES), cfg.size, device.type == "cuda")
    finder = LargestBatchFinder(
        init_val=len(TASK_NAMES), max_trials=cfg.max_trials, steps_per_trial=cfg.steps_per_trial
    )
    clock = StepClock(cfg.warmup, cfg.steps)
    with tempfile.TemporaryDirectory() as folder:
        trainer = quiet_trainer(
            accelerator=device.type, devices=1, precision=precision, benchmark=device.type == "cuda",
            max_steps=cfg.warmup + cfg.steps, limit_val_batches=0, callbacks=[finder, clock], default_root_dir=folder,
        )  # fmt: skip
        trainer.fit(model, datamodule=data)
    found = int(finder.optimal_batch_size or data.batch_size)
    per_step = math.ceil(found / len(TASK_NAMES)) * len(TASK_NAMES)
    row.ours = per_step * cfg.steps / (clock.end - clock.start)
    row.note = f"batch {found} ({per_step} images/step); doubling from 8, at most {cfg.max_trials} sizes"
    row.extra.update(batch_size=found, images_per_step=per_step)


def autocast(device: torch.device, half: bool) -> Any:
    """bf16 autocast on ``device``, or nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if half else nullcontext()


def bare_forward(network: torch.nn.Module, device: torch.device, half: bool) -> Any:
    """A plain inference function: normalize uint8 on the device, channels-last, autocast."""
    mean = torch.tensor((0.485, 0.456, 0.406), device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor((0.229, 0.224, 0.225), device=device).view(1, 3, 1, 1) * 255
    network = network.to(device).eval().to(memory_format=torch.channels_last)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(device, half):
            return network(((x.float() - mean) / std).contiguous(memory_format=torch.channels_last))

    return forward


def infer_classifier(cfg: argparse.Namespace, device: torch.device, half: bool, eight: bool, row: Row) -> None:
    """The eight-head classifier's inference images/s against a bare timm net or eight single-task models."""
    shared, singles = build_models(cfg.backbone, device) if eight else (None, [])
    if shared is None:
        torch.manual_seed(0)
        shared = MultiTaskClassifier(backbone=cfg.backbone, channels_last=True).to(device).eval()
    images = torch.randint(0, 256, (cfg.infer_batch, 3, cfg.size, cfg.size), dtype=torch.uint8, device=device)

    def ours(x: torch.Tensor) -> Any:
        with torch.inference_mode(), autocast(device, half):
            return shared(x)

    def eight_models(x: torch.Tensor) -> Any:
        with torch.inference_mode(), autocast(device, half):
            return [single(x) for single in singles]

    baseline = eight_models if eight else bare_forward(timm.create_model(cfg.backbone, num_classes=5), device, half)
    row.baseline = images_per_second(baseline, images, cfg.infer_iters)
    row.ours = images_per_second(ours, images, cfg.infer_iters)
    row.note = f"batch {cfg.infer_batch}, {'bf16' if half else 'fp32'}, channels-last" + (
        "; baseline: 8 single-task models" if eight else "; baseline: bare timm, one head"
    )


def unet_train(cfg: argparse.Namespace, device: torch.device, precision: str, half: bool, row: Row) -> None:
    """CrackSegmenter's training step under Lightning against the bare smp loop, same precision and layout."""
    args = argparse.Namespace(encoder=cfg.encoder, compile=False, batch_size=cfg.unet_batch, crop=cfg.crop,
                              warmup=cfg.warmup, steps=cfg.steps)  # fmt: skip
    base = step_seconds(cfg.encoder, cfg.crop, cfg.unet_batch, True, half, cfg.steps, device.type)
    row.baseline = cfg.unet_batch / base
    row.ours = cfg.unet_batch / train_ours(args, device, precision)
    row.note = f"batch {cfg.unet_batch} of {cfg.crop}x{cfg.crop}, {precision}, channels-last"


def unet_infer(cfg: argparse.Namespace, device: torch.device, half: bool, row: Row) -> None:
    """CrackSegmenter's forward pass against a bare smp U-Net, batches of crops."""
    torch.manual_seed(0)
    model = CrackSegmenter(encoder_name=cfg.encoder, channels_last=True).to(device).eval()
    images = torch.randint(0, 256, (cfg.unet_batch, 3, cfg.crop, cfg.crop), dtype=torch.uint8, device=device)

    def ours(x: torch.Tensor) -> Any:
        with torch.inference_mode(), autocast(device, half):
            return model(x)

    bare = bare_forward(smp.Unet(cfg.encoder, encoder_weights=None, classes=1), device, half)
    row.baseline = images_per_second(bare, images, cfg.infer_iters)
    row.ours = images_per_second(ours, images, cfg.infer_iters)
    row.note = f"batch {cfg.unet_batch} of {cfg.crop}x{cfg.crop}, {'bf16' if half else 'fp32'}, channels-last"


def tiled(cfg: argparse.Namespace, device: torch.device, half: bool, row: Row) -> None:
    """Seconds to segment one photo tiled (ours) and in one pass (baseline), and peak GPU memory of each."""
    torch.manual_seed(0)
    model = CrackSegmenter(encoder_name=cfg.encoder, tile_size=cfg.tile, tile_overlap=cfg.overlap, channels_last=True)
    model = model.to(device).eval()
    height, width = SIZES_MP[cfg.photo_mp]
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    peaks: dict[str, float | None] = {}
    for name, tiles in (("untiled", False), ("tiled", True)):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            seconds: float | None = infer_seconds(model, image, tiles, half, device)
        except torch.OutOfMemoryError:
            seconds = None
            torch.cuda.empty_cache()
        peaks[name] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        if tiles:
            row.ours = seconds
        else:
            row.baseline = seconds
    memory = (
        f"peak GPU memory {peaks['tiled']:.2f} GiB (untiled {peaks['untiled']:.2f})"
        if peaks["tiled"] is not None and peaks["untiled"] is not None
        else "peak GPU memory: no GPU"
    )
    row.note = f"{height}x{width}, tiles {cfg.tile}/{cfg.overlap}; {memory}" + (
        "" if row.baseline is not None else "; untiled: out of memory"
    )
    row.extra.update(peak_gpu_gib_tiled=peaks["tiled"], peak_gpu_gib_untiled=peaks["untiled"])


def decode_check(root: Path, cfg: argparse.Namespace, device: torch.device, row: Row) -> None:
    """Largest difference between training images from the bytes path on ``device`` and from the CPU path (PIL).

    Both decode, resize, flip and jitter; each sample is seeded alike, as the training loader does.
    """
    paths = sorted((root / TASK).rglob("*.jpg"))[: cfg.feed_batch]
    transform = classification_transform(cfg.jpeg_size, train=True)

    def samples(dataset: Any) -> list[Any]:
        out = []
        for i in range(len(paths)):
            torch.manual_seed(i)
            out.append(dataset[i])
        return out

    reference = torch.stack([s["image"] for s in samples(ImageFileDataset(paths, transform=transform))])
    encoded = collate_encoded(samples(ImageBytesDataset(paths, transform=transform)))
    decoded = BatchDecoder(cfg.jpeg_size)(encoded, device)["image"].cpu()
    difference = (decoded.int() - reference.int()).abs()
    row.ours = float(difference.max())
    mean, share = float(difference.float().mean()), float((difference > 0).float().mean())
    row.note = (
        f"{len(paths)} JPEGs decoded on {device.type}, resized, flipped, jittered; mean |difference| {mean:.3f}, "
        f"{100 * share:.2f}% of values differ"
    )


def feed_rate(root: Path, cfg: argparse.Namespace, decode_on: str, workers: int, device: torch.device) -> float:
    """Training images per second reaching the model on ``device`` through PhiNetDataModule."""
    data = PhiNetDataModule(
        root=str(root), tasks=[TASK], format="folders", image_size=cfg.jpeg_size, batch_size=cfg.feed_batch,
        num_workers=workers, val_fraction=0, decode_on=decode_on,  # type: ignore[arg-type]
    )  # fmt: skip
    data.setup("fit")
    loader = data.train_dataloader()

    def fetch(iterator: Any) -> int:
        batch, _, _ = next(iterator)
        images = collate_tasks(data.on_after_batch_transfer(move_data_to_device(batch, device), 0))["image"]
        return len(images)

    iterator = iter(loader)
    fetch(iterator)  # worker start-up is not timed
    synchronize(device)
    done, start = 0, time.perf_counter()
    while done < cfg.feed_images:
        try:
            done += fetch(iterator)
        except StopIteration:
            iterator = iter(loader)
    synchronize(device)
    rate = done / (time.perf_counter() - start)
    # Shut the persistent workers down now: collected later, while other workers start, they
    # take the DataLoader's 5 s join timeout each to go.
    del iterator, loader
    gc.collect()
    return rate


def feed(root: Path, cfg: argparse.Namespace, workers: int, device: torch.device, row: Row) -> None:
    """GPU decoding (ours) against CPU decoding (baseline) with ``workers`` workers."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        row.ours = feed_rate(root, cfg, "gpu", workers, device)
    fallback = any("data.decode_on gpu" in str(w.message) for w in caught)
    row.baseline = feed_rate(root, cfg, "cpu", workers, device)
    row.note = f"{cfg.jpeg_size}px JPEGs, batch {cfg.feed_batch}" + (
        "; GPU decode fell back to CPU: no CUDA" if fallback else ""
    )


def main() -> None:
    """Measure every row within the budget, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every row on CPU with tiny models and sizes")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the rows (440; --quick 240)")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="DataLoader worker counts (4 8 12 16)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the JPEGs are written (default: a temp dir)")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON file (default: logs/benchmarks/gpu_suite-<time>.json)"
    )
    args = parser.parse_args()
    suite = Suite(args.budget or (QUICK if args.quick else FULL)["budget"])
    cfg = argparse.Namespace(**(QUICK if args.quick else FULL))
    info = machine()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    half = bf16_supported() or device.type == "cpu"
    precision = "bf16-mixed" if half else "16-mixed"
    counts = args.workers or sorted({min(n, info["cores"]) for n in WORKER_COUNTS})
    print(describe(info), flush=True)
    train = argparse.Namespace(backbone=cfg.backbone, batch_size=cfg.batch_size, size=cfg.size, warmup=cfg.warmup,
                               steps=cfg.steps)  # fmt: skip

    def training(setting: Setting) -> Any:
        def measure(row: Row) -> None:
            row.baseline, _ = run_bare(train, setting, device, precision)
            row.ours, warmup = run_ours(train, setting, device, precision)
            row.note = f"batch {cfg.batch_size} at {cfg.size}px; ours' warm-up {warmup:.1f} s; baseline: bare timm"

        return measure

    for name, setting in SETTINGS.items():
        if not setting.compile:
            suite.run(name, "img/s", BUDGETS["train"], training(setting))
    suite.run("train largest batch, bf16 + channels-last", "img/s", BUDGETS["largest"],
              lambda row: largest_batch(cfg, device, precision, row))  # fmt: skip
    suite.run("infer classifier vs bare timm", "img/s", BUDGETS["infer"],
              lambda row: infer_classifier(cfg, device, half, False, row))  # fmt: skip
    suite.run("infer 8 heads vs 8 single-task models", "img/s", BUDGETS["infer"],
              lambda row: infer_classifier(cfg, device, half, True, row))  # fmt: skip
    suite.run(f"U-Net {cfg.encoder} train step {cfg.crop}px", "img/s", BUDGETS["unet"],
              lambda row: unet_train(cfg, device, precision, half, row))  # fmt: skip
    suite.run(f"U-Net {cfg.encoder} inference {cfg.crop}px", "img/s", BUDGETS["unet"],
              lambda row: unet_infer(cfg, device, half, row))  # fmt: skip
    suite.run(
        f"U-Net tiled {cfg.photo_mp:g} MP photo", "s", BUDGETS["tiled"], lambda row: tiled(cfg, device, half, row)
    )
    with tempfile.TemporaryDirectory() as scratch:
        root = args.workdir or Path(scratch) / "jpegs"
        written = suite.run(
            f"input: write {cfg.jpegs} JPEGs x {cfg.copies}",
            "s",
            BUDGETS["write"],
            lambda row: write_jpegs(root, cfg, info, row),
        )
        check = "input: GPU vs CPU decode, max |difference|"
        feeds = [f"input {n} workers, GPU vs CPU decode" for n in counts]
        if written.ours is None:
            for name in [check, *feeds]:
                suite.skip(name, "img/s", "skipped: no JPEGs written")
        else:
            suite.run(check, "grey lvl", BUDGETS["check"], lambda row: decode_check(root, cfg, device, row))
            for workers, name in zip(counts, feeds, strict=True):
                suite.run(name, "img/s", BUDGETS["feed"], lambda row, n=workers: feed(root, cfg, n, device, row))
    compile_row = "train bf16 + channels-last + compile"
    if args.no_compile:
        suite.skip(compile_row, "img/s", "skipped (--no-compile)")
    else:
        suite.run(compile_row, "img/s", BUDGETS["compile"], training(SETTINGS[compile_row]))

    order = [*SETTINGS, *(n for n in suite.rows if n not in SETTINGS)]
    print(describe(info))
    print(suite.table(order))
    out = args.out or Path("logs/benchmarks") / f"gpu_suite-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    settings = {**vars(cfg), "quick": args.quick, "device": device.type, "precision": precision, "workers": counts}
    suite.save(out, info, settings, order)
    elapsed = time.perf_counter() - suite.start
    print(f"{len(suite.rows)} rows in {elapsed:.0f} s of a {suite.total_s:.0f} s budget; JSON: {out}", flush=True)
    # Everything is printed and saved: leave without waiting on what a stopped row may have left
    # running (torch.compile's worker pool, DataLoader workers), so the suite never hangs at exit.
    sys.stderr.flush()
    os._exit(0)


def write_jpegs(root: Path, cfg: argparse.Namespace, info: dict[str, Any], row: Row) -> None:
    """Write Phi-Net-size synthetic JPEGs (one task, image folders) for the input rows; seconds taken."""
    start = time.perf_counter()
    write_phinet(root, format="folders", n_train=cfg.jpegs, n_test=0, size=cfg.jpeg_size, tasks=[TASK],
                 workers=max(1, min(8, info["cores"])))  # fmt: skip
    # Hard links make the epoch long enough that 16 workers never drain it within a row (an epoch
    # boundary idles the workers), without rendering more images.
    for path in sorted((root / TASK).rglob("*.jpg")):
        for copy in range(1, cfg.copies):
            os.link(path, path.with_name(f"{path.stem}_{copy}.jpg"))
    row.ours = time.perf_counter() - start
    row.note = f"{cfg.jpeg_size}x{cfg.jpeg_size}, {cfg.copies} names each (hard links), to {root}"


if __name__ == "__main__":
    main()
