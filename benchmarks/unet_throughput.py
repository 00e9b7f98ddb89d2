"""U-Net throughput, baseline vs crackcascade: training crops and tiled inference on photos, images/s and MP/s.

Training (``--crop``-pixel square crops, batch ``--batch-size``, BCE, AdamW lr 1e-3): the bare smp
loop of ``benchmarks/unet_step.py`` in float32 and contiguous layout (what a plain loop runs)
against :class:`~crackcascade.CrackSegmenter` trained by a Lightning Trainer (its
``training_step``, logging included) in channels-last layout and mixed precision where the
hardware has it (bf16; fp16 on a GPU without bf16), optionally compiled (``--compile``). Both
get ready-made batches, so decoding is not timed.

Inference on one ``--photo-mp`` megapixel photo: the untiled forward pass over the whole photo
(baseline) against ``CrackSegmenter.segment``, crackcascade's tiled inference (``--tile`` px tiles
with ``--overlap`` px overlap, probabilities blended), at the same precision. A photo per second is
the images/s column.

    python benchmarks/unet_throughput.py            # ResNet-34 U-Net (the README's table)
    python benchmarks/unet_throughput.py --quick    # tu-test_resnet, small sizes (a smoke run)
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from typing import Any

import pytorch_lightning as pl
import torch
from _common import quiet_trainer
from tiled_inference import SIZES_MP
from torch.utils.data import DataLoader
from train_step import Repeat, StepClock, synchronize
from unet_step import step_seconds

from crackcascade import CrackSegmenter
from crackcascade.errors import first_line
from crackcascade.hardware import bf16_supported


def train_ours(args: argparse.Namespace, device: torch.device, precision: str) -> float:
    """Seconds per training step of CrackSegmenter under Lightning."""
    pl.seed_everything(0, verbose=False)
    model = CrackSegmenter(
        encoder_name=args.encoder, loss="bce", optimizer="adamw", lr=1e-3, channels_last=True, compile=args.compile
    )
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch_size, 3, args.crop, args.crop)
    batches = [
        {
            "image": torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator),
            "mask": (torch.rand(args.batch_size, args.crop, args.crop, generator=generator) < 0.02).long(),
        }
        for _ in range(2)
    ]
    clock = StepClock(args.warmup, args.steps)
    trainer = quiet_trainer(
        accelerator=device.type,
        devices=1,
        precision=precision,
        benchmark=device.type == "cuda",
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(model, train_dataloaders=DataLoader(Repeat(batches, args.warmup + args.steps), batch_size=None))
    return (clock.end - clock.start) / args.steps


def infer_seconds(model: CrackSegmenter, image: torch.Tensor, tiled: bool, half: bool, device: torch.device) -> float:
    """Seconds to segment one photo, untiled (one forward pass) or tiled, after one warm-up run."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if half else nullcontext()

    def run() -> Any:
        with torch.inference_mode(), autocast:
            return model.segment(image) if tiled else torch.sigmoid(model(image[None].to(device)))

    run()
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def row(mode: str, method: str, seconds: float | str, images: int, megapixels: float, base: float | None) -> None:
    """Print one line of the table (``seconds`` is a failure message when a run failed)."""
    if isinstance(seconds, str):
        print(f"{mode:<10}{method:<44}  {seconds}")
        return
    rate = images / seconds
    speed_up = f"{base / seconds:>8.2f}x" if base else f"{'':>9}"
    print(f"{mode:<10}{method:<44}{rate:>10.2f}{rate * megapixels:>10.2f}{speed_up}", flush=True)


def main() -> None:
    """Measure training and inference both ways, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 on CUDA, 8 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 on CUDA, 4 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 on CUDA, 2 on CPU)")
    parser.add_argument("--photo-mp", type=float, default=4.0, choices=sorted(SIZES_MP))
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--compile", action="store_true", help="also compile crackcascade's U-Net")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tu-test_resnet, 64 px crops, a 0.2 MP photo")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if args.quick:
        args.encoder, args.crop, args.photo_mp, args.tile, args.overlap = "tu-test_resnet", 64, 0.2, 128, 32
        args.batch_size, args.steps, args.warmup = args.batch_size or 4, args.steps or 2, args.warmup or 1
    args.batch_size = args.batch_size or (32 if cuda else 8)
    args.steps = args.steps or (30 if cuda else 4)
    args.warmup = args.warmup or (5 if cuda else 2)
    half = bf16_supported()
    precision = "bf16-mixed" if half else ("16-mixed" if cuda else "32-true")
    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {args.threads} threads"
    print(
        f"U-Net {args.encoder}; training {args.batch_size} crops of {args.crop}x{args.crop}, {args.steps} steps after "
        f"{args.warmup}; inference on a {args.photo_mp} MP photo, tiles {args.tile}/{args.overlap}; {where}; "
        f"crackcascade precision {precision}"
    )
    header = f"{'mode':<10}{'method':<44}{'images/s':>10}{'MP/s':>10}{'vs base':>9}"
    print(header)
    print("-" * len(header))

    crop_mp = args.crop * args.crop / 1e6
    # A plain loop's defaults: no cuDNN autotuning for the baseline; crackcascade's Trainer turns it on.
    base = step_seconds(args.encoder, args.crop, args.batch_size, False, False, args.steps, device.type)
    row("training", "bare smp loop, fp32, contiguous (baseline)", base, args.batch_size, crop_mp, None)
    try:
        ours = train_ours(args, device, precision)
        name = f"crackcascade, {precision}, channels-last" + (", compiled" if args.compile else "")
        row("training", name, ours, args.batch_size, crop_mp, base)
    except Exception as err:
        row("training", "crackcascade", f"failed: {type(err).__name__}: {first_line(err)}"[:70], 0, 0, None)

    if cuda:
        torch.backends.cudnn.benchmark = True
    height, width = SIZES_MP[args.photo_mp]
    photo_mp = height * width / 1e6
    torch.manual_seed(0)
    model = CrackSegmenter(
        encoder_name=args.encoder, tile_size=args.tile, tile_overlap=args.overlap, channels_last=True
    ).to(device)
    model.eval()
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    label = "bf16" if half else "fp32"
    try:
        untiled = infer_seconds(model, image, False, half, device)
        row("inference", f"untiled forward, {label} (baseline)", untiled, 1, photo_mp, None)
    except Exception as err:  # the whole photo's activations may not fit
        untiled = None
        row("inference", "untiled forward", f"failed: {type(err).__name__}: {first_line(err)}"[:70], 0, 0, None)
    tiled = infer_seconds(model, image, True, half, device)
    row("inference", f"crackcascade tiled, {label}", tiled, 1, photo_mp, untiled)


if __name__ == "__main__":
    main()
