"""U-Net training step time: float32 (a plain loop's default) vs channels-last and bf16 mixed precision.

Times full training steps (forward, loss, backward, AdamW) of smp Unet(resnet18) on a batch of
8 random 256x256 crops, as in ``benchmarks/crackforest.py``, in the four combinations of memory
layout (contiguous, channels-last) and precision (float32, bf16 autocast). crackcascade trains
with channels-last (``CrackSegmenter(channels_last=True)``, the default) and bf16 where the
hardware has it (``--trainer.precision bf16-mixed``; see :func:`crackcascade.hardware.bf16_supported`).

    python benchmarks/unet_step.py              # the README's figures
    python benchmarks/unet_step.py --quick      # tiny encoder, 64 px (a smoke run)
"""

from __future__ import annotations

import argparse
import time

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F  # noqa: N812

from crackcascade.hardware import bf16_supported


def step_seconds(
    encoder: str, size: int, batch: int, channels_last: bool, bf16: bool, steps: int, device: str = "cpu"
) -> float:
    """Mean seconds per training step after two warm-up steps, on ``device`` (``cpu`` or ``cuda``)."""
    torch.manual_seed(0)
    model = smp.Unet(encoder, encoder_weights=None, classes=1).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(batch, 3, size, size, device=device)
    target = (torch.rand(batch, 1, size, size, device=device) < 0.02).float()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    start = 0.0
    for step in range(steps + 2):
        if step == 2:
            if device != "cpu":
                torch.cuda.synchronize()  # the warm-up's queued kernels are not timed
            start = time.perf_counter()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device != "cpu":
        # Once at the end, as a training loop runs: waiting after every step would idle the GPU between steps.
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    """Time the four variants and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder, size, steps = ("tu-test_resnet", 64, 1) if args.quick else (args.encoder, 256, args.steps)
    native = bf16_supported()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    where = f"{torch.cuda.get_device_name()}, " if device == "cuda" else ""
    print(f"U-Net {encoder}, batch 8 x {size}x{size}, {where}{args.threads} threads, native bf16: {native}")
    print(f"{'layout':<16}{'precision':<12}{'s/step':>8}{'speed-up':>10}")
    print("-" * 46)
    base = None
    for channels_last in (False, True):
        for bf16 in (False, True):
            seconds = step_seconds(encoder, size, 8, channels_last, bf16, steps, device)
            base = base or seconds
            layout = "channels-last" if channels_last else "contiguous"
            print(f"{layout:<16}{'bf16-mixed' if bf16 else 'float32':<12}{seconds:>8.3f}{base / seconds:>9.2f}x")


if __name__ == "__main__":
    main()
