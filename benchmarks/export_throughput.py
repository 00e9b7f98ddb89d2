"""ONNX Runtime (CPU) against PyTorch eager: images per second of the exported classifier and U-Net.

Both engines run in this one process on the same inputs with the same number of threads, in
alternating rounds (so a neighbour's load on the machine hits both alike); the median round is
reported, with the largest output difference between them.

    python benchmarks/export_throughput.py             # the paper's ResNet-152 at 224, smp's ResNet-34 U-Net at 512
    python benchmarks/export_throughput.py --quick     # tiny models, a few seconds (the test suite runs this)

The weights are random (throughput does not depend on them); inputs are uint8, as a camera gives them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from crackcascade.export import (
    ClassifierGraph,
    export_classifier,
    export_segmenter,
    onnx_session,
    torch_outputs,
)
from crackcascade.models.multitask import MultiTaskClassifier
from crackcascade.models.segmenter import CrackSegmenter


def images_per_second(run: Callable[[], object], batch: int, seconds: float) -> float:
    """Run ``run`` for at least ``seconds`` (and 2 calls) after one warm-up call; return images per second."""
    run()
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < seconds:
        run()
        calls += 1
    return calls * batch / (time.perf_counter() - start)


def compare(
    name: str, network: str, module: torch.nn.Module, path: Path, images: torch.Tensor, args: argparse.Namespace
) -> str:
    session = onnx_session(path, args.threads)
    names = [o.name for o in session.get_outputs()]
    feed = {"image": images.numpy()}

    def eager() -> object:
        with torch.inference_mode():
            return module(images)

    def ort() -> object:
        return session.run(names, feed)

    difference = max(
        float(np.abs(a - b).max()) for a, b in zip(session.run(names, feed), torch_outputs(module, images), strict=True)
    )
    rates: dict[str, list[float]] = {"torch": [], "ort": []}
    for _ in range(args.rounds):
        rates["torch"].append(images_per_second(eager, len(images), args.seconds))
        rates["ort"].append(images_per_second(ort, len(images), args.seconds))
    torch_rate, ort_rate = statistics.median(rates["torch"]), statistics.median(rates["ort"])
    size = "x".join(str(s) for s in images.shape[-2:])
    return (
        f"{name:<12}{network:<16}{size:>9}{len(images):>7}{torch_rate:>13.2f}{ort_rate:>14.2f}"
        f"{ort_rate / torch_rate:>9.2f}x{difference:>12.1e}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and inputs, short rounds")
    parser.add_argument("--threads", type=int, default=2, help="threads of both engines (default: 2)")
    parser.add_argument("--backbone", default="resnet152", help="classifier backbone (default: resnet152)")
    parser.add_argument("--size", type=int, default=224, help="classifier input side (default: 224)")
    parser.add_argument("--batch", type=int, default=8, help="classifier batch (default: 8)")
    parser.add_argument("--encoder", default="resnet34", help="U-Net encoder (default: resnet34)")
    parser.add_argument("--unet-size", type=int, default=512, help="U-Net input side (default: 512)")
    parser.add_argument("--unet-batch", type=int, default=1, help="U-Net batch (default: 1)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one round per engine (default: 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per engine (default: 3)")
    args = parser.parse_args(argv)
    if args.quick:
        args.backbone, args.size, args.batch = "test_resnet", 64, 2
        args.encoder, args.unet_size, args.unet_batch = "tu-test_resnet", 0, 2
        args.seconds, args.rounds = 0.2, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    # A U-Net input that is not a multiple of 32 in --quick, so the padding inside the graph is timed too.
    unet_shape = (args.unet_size, args.unet_size) if args.unet_size else (80, 100)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        classifier = MultiTaskClassifier(backbone=args.backbone).eval()
        path = Path(folder) / "classifier.onnx"
        export_classifier(classifier, path, image_size=args.size)
        images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), generator=generator, dtype=torch.uint8)
        graph = ClassifierGraph(classifier, classifier.tasks).eval()
        rows.append(compare("classifier", args.backbone, graph, path, images, args))
        del classifier, graph

        segmenter = CrackSegmenter(encoder_name=args.encoder).eval()
        path = Path(folder) / "unet.onnx"
        export_segmenter(segmenter, path)
        images = torch.randint(0, 256, (args.unet_batch, 3, *unet_shape), generator=generator, dtype=torch.uint8)
        rows.append(compare("U-Net", args.encoder, segmenter, path, images, args))

    print(
        f"onnxruntime {onnxruntime.__version__} (CPU) vs PyTorch {torch.__version__.split('+')[0]} eager, "
        f"{args.threads} threads, uint8 input, {args.rounds} rounds of {args.seconds:g} s, median"
    )
    header = (
        f"{'model':<12}{'network':<16}{'input':>9}{'batch':>7}{'torch img/s':>13}{'onnxrt img/s':>14}"
        f"{'speed-up':>10}{'max |diff|':>12}"
    )
    print(header)
    print("-" * len(header))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
