"""Training throughput of the multi-task ResNet-152: a bare PyTorch loop vs crackcascade under Lightning, per setting.

Each setting adds one thing to the one above it: fp32 eager in channels-first layout (the
baseline), cuDNN autotuning (CUDA only), bf16 mixed precision (fp16 where the GPU has no bf16),
channels-last layout, ``torch.compile``. In every setting both run the same batch size, precision,
layout and SGD (lr 0.001, momentum 0.9, the paper's):

* bare loop: timm ``resnet152`` with one linear head, plain cross-entropy, ``optimizer.step()``
  in a Python loop (``torch.compile`` on the whole network);
* crackcascade: :class:`~crackcascade.MultiTaskClassifier` with eight heads in a Lightning
  Trainer, fed by a CombinedLoader of eight task loaders (so each batch holds rows labelled for
  different tasks), the masked multi-task loss, per-step logging and confusion matrices as in a
  real run (``torch.compile`` on the backbone, ``model.compile``).

Both get uint8 batches made up front (pinned on CUDA) and normalize on the device, so input
decoding is not timed here (see ``benchmarks/input_pipeline.py``). Images per second are per
optimizer step over ``--steps`` steps after ``--warmup`` steps (which include compilation; their
time is shown). "vs base" is the speed-up over the baseline row of the same column; "ours/bare"
is crackcascade's throughput over the bare loop's (the target is >= 0.95).

    python benchmarks/train_step.py                      # the README's table (ResNet-152 at 224)
    python benchmarks/train_step.py --quick --no-compile # tiny model, seconds (a smoke run)
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import timm
import torch
import torch.nn.functional as F  # noqa: N812
from _common import quiet_trainer
from pytorch_lightning.utilities import CombinedLoader
from torch import nn
from torch.utils.data import DataLoader, Dataset

from crackcascade import MultiTaskClassifier
from crackcascade.errors import first_line
from crackcascade.hardware import bf16_supported
from crackcascade.labels import IGNORE_INDEX, TASK_NAMES, get_task, task_index


@dataclass(frozen=True)
class Setting:
    """One row: what is switched on."""

    name: str
    half: bool
    channels_last: bool
    compile: bool
    cudnn_benchmark: bool


SETTINGS: tuple[Setting, ...] = (
    Setting("fp32 eager (baseline)", False, False, False, False),
    Setting("+ cudnn.benchmark", False, False, False, True),
    Setting("+ mixed precision", True, False, False, True),
    Setting("+ channels_last", True, True, False, True),
    Setting("+ torch.compile", True, True, True, True),
)


class Repeat(Dataset):
    """``length`` items cycling over a few ready-made batches (one epoch covers the whole run)."""

    def __init__(self, batches: list[Any], length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.batches[index % len(self.batches)]


def make_batches(batch: int, size: int, count: int, pin: bool) -> list[torch.Tensor]:
    """``count`` uint8 image batches of random pixels."""
    generator = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator) for _ in range(count)
    ]
    return [x.pin_memory() for x in images] if pin else images


def task_batches(images: list[torch.Tensor], tasks: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """Split each image batch evenly over the tasks, each part labelled for its task only."""
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in tasks}
    generator = torch.Generator().manual_seed(1)
    for batch in images:
        for task, part in zip(tasks, batch.chunk(len(tasks)), strict=True):
            labels = torch.full((len(part), len(TASK_NAMES)), IGNORE_INDEX, dtype=torch.long)
            labels[:, task_index(task)] = torch.randint(
                0, get_task(task).num_classes, (len(part),), generator=generator
            )
            out[task].append({"image": part, "labels": labels, "path": [""] * len(part)})
    return out


def synchronize(device: torch.device) -> None:
    """Wait for the device, so that a clock reading covers the work queued before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock(pl.Callback):
    """Reads the clock after the warm-up steps and after the last timed step."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.begin = self.start = self.end = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start of the warm-up."""
        self.begin = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        """After an optimizer step: note the time at the end of warm-up and of the timed steps."""
        if trainer.global_step in (self.warmup, self.warmup + self.steps):
            synchronize(pl_module.device)
            now = time.perf_counter()
            if trainer.global_step == self.warmup:
                self.start = now
            else:
                self.end = now


def run_ours(args: argparse.Namespace, setting: Setting, device: torch.device, precision: str) -> tuple[float, float]:
    """crackcascade's images/s and warm-up seconds."""
    pl.seed_everything(0, verbose=False)
    model = MultiTaskClassifier(
        backbone=args.backbone, optimizer="sgd", lr=1e-3, momentum=0.9,
        channels_last=setting.channels_last, compile=setting.compile,
    )  # fmt: skip
    tasks = model.tasks
    total = args.warmup + args.steps
    parts = task_batches(make_batches(args.batch_size, args.size, 2, device.type == "cuda"), tasks)
    loaders = {t: DataLoader(Repeat(parts[t], total), batch_size=None) for t in tasks}
    clock = StepClock(args.warmup, args.steps)
    trainer = quiet_trainer(
        accelerator=device.type,
        devices=1,
        precision=precision if setting.half else "32-true",
        benchmark=setting.cudnn_benchmark,
        max_steps=total,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(model, train_dataloaders=CombinedLoader(loaders, mode="max_size_cycle"))
    return args.batch_size * args.steps / (clock.end - clock.start), clock.start - clock.begin


def run_bare(args: argparse.Namespace, setting: Setting, device: torch.device, precision: str) -> tuple[float, float]:
    """The bare loop's images/s and warm-up seconds."""
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = setting.cudnn_benchmark
    backbone: Any = timm.create_model(args.backbone, num_classes=0)
    config = timm.data.resolve_model_data_config(backbone)
    mean = torch.tensor(config["mean"], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(config["std"], device=device).view(1, 3, 1, 1) * 255
    model = nn.Sequential(backbone, nn.Linear(backbone.num_features, get_task("damage_type").num_classes)).to(device)
    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if setting.compile:
        model.compile()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = make_batches(args.batch_size, args.size, 2, device.type == "cuda")
    labels = torch.randint(0, get_task("damage_type").num_classes, (args.batch_size,))
    dtype = torch.float16 if precision == "16-mixed" else torch.bfloat16
    memory_format = torch.channels_last if setting.channels_last else torch.contiguous_format
    begin = time.perf_counter()
    start = begin
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            synchronize(device)
            start = time.perf_counter()
        x = images[step % len(images)].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        y = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=setting.half):
            logits = model((x.float() - mean) / std)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return args.batch_size * args.steps / (time.perf_counter() - start), start - begin


def measure(run: Callable[..., tuple[float, float]], *run_args: Any) -> tuple[float, float] | str:
    """Images/s and warm-up seconds of one run, or why it failed (a compile error, out of memory)."""
    try:
        return run(*run_args)
    except Exception as err:
        return f"failed: {type(err).__name__}: {first_line(err)}"[:60]
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main() -> None:
    """Time every setting both ways and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet152")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 on CUDA, 8 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 on CUDA, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 on CUDA, 2 on CPU)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument("--quick", action="store_true", help="test_resnet at 64 px, batch 16 (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if args.quick:
        args.backbone, args.size = "test_resnet", 64
        args.batch_size, args.steps, args.warmup = args.batch_size or 16, args.steps or 3, args.warmup or 2
    args.batch_size = args.batch_size or (128 if cuda else 8)
    args.steps = args.steps or (30 if cuda else 3)
    args.warmup = args.warmup or (5 if cuda else 2)
    if args.batch_size % len(TASK_NAMES):
        raise SystemExit(f"train_step.py: --batch-size must be a multiple of {len(TASK_NAMES)} (one part per task)")
    precision = "bf16-mixed" if bf16_supported() or not cuda else "16-mixed"
    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {args.threads} threads"
    print(
        f"{args.backbone} at {args.size}x{args.size}, batch {args.batch_size}, {args.steps} steps after {args.warmup} "
        f"warm-up; {where}; torch {torch.__version__}; mixed precision = {precision} (native bf16: {bf16_supported()})"
    )
    if cuda:
        matmul, tf32 = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
        print(f"fp32 matmul precision {matmul}, cudnn.allow_tf32 {tf32} (torch's defaults unless changed)")
    header = (
        f"{'setting':<24}{'bare img/s':>11}{'ours img/s':>11}{'ours/bare':>10}"
        f"{'bare vs base':>13}{'ours vs base':>13}{'warm-up s':>10}"
    )
    print(header)
    print("-" * len(header))
    base: dict[str, float] = {}
    for setting in SETTINGS:
        if setting.cudnn_benchmark and not setting.half and not cuda:
            continue  # cuDNN autotuning does nothing on the CPU
        if setting.compile and args.no_compile:
            print(f"{setting.name:<24}  skipped (--no-compile)")
            continue
        results = {
            "bare": measure(run_bare, args, setting, device, precision),
            "ours": measure(run_ours, args, setting, device, precision),
        }
        failed = [f"{name}: {result}" for name, result in results.items() if isinstance(result, str)]
        if failed:
            print(f"{setting.name:<24}  {'; '.join(failed)}", flush=True)
            continue
        (bare, _), (ours, warmup) = results["bare"], results["ours"]
        base = base or {"bare": bare, "ours": ours}
        print(
            f"{setting.name:<24}{bare:>11.1f}{ours:>11.1f}{ours / bare:>10.3f}"
            f"{bare / base['bare']:>12.2f}x{ours / base['ours']:>12.2f}x{warmup:>10.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
