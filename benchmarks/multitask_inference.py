"""Inference cost: one eight-head pass of crackcascade vs eight single-task networks on the same backbone.

The Phi-Net baselines train one network per task; crackcascade's
:class:`~crackcascade.MultiTaskClassifier` shares one backbone between eight heads. Both sides
here are ``MultiTaskClassifier`` in evaluation mode without gradients, at the same precision and
layout, on the same uint8 batch: eight models with one head each (the baseline) and one model with
all eight. Each single-task model is given the shared model's backbone weights and its task's
head, so the outputs must agree too; the table reports each head's output shape on both sides and
the largest difference between them.

    python benchmarks/multitask_inference.py            # ResNet-152 at 224 (the README's table)
    python benchmarks/multitask_inference.py --quick    # test_resnet at 64 px (a smoke run)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from crackcascade import MultiTaskClassifier
from crackcascade.hardware import bf16_supported


def images_per_second(forward: Callable[[torch.Tensor], Any], images: torch.Tensor, iterations: int) -> float:
    """Images per second of ``forward`` over ``iterations`` batches after one warm-up batch."""
    forward(images)
    if images.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        forward(images)
    if images.is_cuda:
        torch.cuda.synchronize()
    return len(images) * iterations / (time.perf_counter() - start)


def build_models(backbone: str, device: torch.device) -> tuple[MultiTaskClassifier, list[MultiTaskClassifier]]:
    """The eight-head model and eight single-task models with its weights, channels-last, in evaluation mode."""
    torch.manual_seed(0)
    shared = MultiTaskClassifier(backbone=backbone, channels_last=True).to(device).eval()
    singles = []
    for task in shared.tasks:
        single = MultiTaskClassifier(backbone=backbone, tasks=[task], channels_last=True)
        single.backbone.load_state_dict(shared.backbone.state_dict())
        single.heads[task].load_state_dict(shared.heads[task].state_dict())
        singles.append(single.to(device).eval())
    return shared, singles


def main() -> None:
    """Build both sides, check their outputs, time them, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet152")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 on CUDA, 8 on CPU")
    parser.add_argument("--iterations", type=int, default=None, help="timed batches (default: 20 on CUDA, 2 on CPU)")
    parser.add_argument("--precision", choices=("auto", "32", "bf16"), default="auto", help="auto: bf16 where native")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds; each side's best counts")
    parser.add_argument("--quick", action="store_true", help="test_resnet at 64 px (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if args.quick:
        args.backbone, args.size, args.batch_size, args.iterations = "test_resnet", 64, 8, 3
    batch = args.batch_size or (128 if cuda else 8)
    iterations = args.iterations or (20 if cuda else 2)
    half = bf16_supported() if args.precision == "auto" else args.precision == "bf16"
    if cuda:
        torch.backends.cudnn.benchmark = True

    shared, singles = build_models(args.backbone, device)
    images = torch.randint(0, 256, (batch, 3, args.size, args.size), dtype=torch.uint8, device=device)

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=torch.bfloat16) if half else nullcontext()

    def eight_models(x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode(), autocast():
            return {task: out for single in singles for task, out in single(x).items()}

    def one_model(x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode(), autocast():
            return shared(x)

    baseline_out, ours_out = eight_models(images), one_model(images)
    shapes_equal = all(tuple(baseline_out[t].shape) == tuple(ours_out[t].shape) for t in shared.tasks)
    difference = max(float((baseline_out[t].float() - ours_out[t].float()).abs().max()) for t in shared.tasks)
    # Alternate the two sides and keep each one's best round: a busy moment of the machine then
    # slows one round, not the comparison.
    baseline, ours = 0.0, 0.0
    for _ in range(args.rounds):
        baseline = max(baseline, images_per_second(eight_models, images, iterations))
        ours = max(ours, images_per_second(one_model, images, iterations))

    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {args.threads} threads"
    precision = "bf16 autocast" if half else "fp32"
    print(
        f"{args.backbone} at {args.size}x{args.size}, batch {batch}, best of {args.rounds} rounds of {iterations} "
        f"batches; {where}; {precision}"
    )
    header = f"{'model':<34}{'backbone passes':>16}{'images/s':>10}{'ms/image':>10}{'cost':>8}"
    print(header)
    print("-" * len(header))
    for name, passes, rate in (
        ("8 single-task models (baseline)", 8, baseline),
        ("1 eight-head model (crackcascade)", 1, ours),
    ):
        print(f"{name:<34}{passes:>16}{rate:>10.1f}{1000 / rate:>10.2f}{baseline / rate:>7.2f}x")
    print(f"one eight-head pass is {ours / baseline:.2f}x cheaper than eight single-task passes (target >= 6x)")
    print(f"{'task':<14}{'single-task out':>16}{'eight-head out':>16}")
    for task in shared.tasks:
        print(f"{task:<14}{tuple(baseline_out[task].shape)!s:>16}{tuple(ours_out[task].shape)!s:>16}")
    print(f"output shapes equal: {'yes' if shapes_equal else 'NO'}; largest logit difference {difference:.2e}")


if __name__ == "__main__":
    main()
