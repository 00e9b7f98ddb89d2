"""Tiled U-Net inference on large photos: time and peak memory vs image size.

Each size runs in a fresh process so that the peak resident memory (``ru_maxrss``) belongs to
that size alone. The baseline is the untiled forward pass over the whole photo, which is what a
plain smp/PyTorch user runs; it is measured only up to ``--max-untiled-mp`` megapixels because
its activations grow with the photo and stop fitting in memory.

    python benchmarks/tiled_inference.py                  # 1, 4 and 12 MP, ResNet-34 U-Net
    python benchmarks/tiled_inference.py --quick          # small sizes and encoder, seconds

Prints one row per size: seconds and peak memory for the untiled baseline and for crackcascade's
tiled inference, and the tiled seconds per megapixel (flat when cost is linear in pixels). "added" is
the peak memory over what the process held just before inference: what inference itself needed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

# Photo sizes (height, width): 4:3 like drone and phone cameras.
SIZES_MP: dict[float, tuple[int, int]] = {
    0.05: (192, 256),
    0.2: (384, 512),
    1.0: (864, 1152),
    4.0: (1728, 2304),
    12.0: (3000, 4000),
}


def run_one(megapixels: float, mode: str, encoder: str, tile: int, overlap: int, threads: int) -> dict[str, float]:
    """Measure one size in this process (called in a child process)."""
    import torch

    from crackcascade.models.segmenter import CrackSegmenter

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    height, width = SIZES_MP[megapixels]
    model = CrackSegmenter(encoder_name=encoder, tile_size=tile, tile_overlap=overlap).eval()
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    resident = resident_gib()
    start = time.perf_counter()
    with torch.no_grad():
        out = torch.sigmoid(model(image[None]))[0] if mode == "untiled" else model.segment(image)
    seconds = time.perf_counter() - start
    assert out.shape[-2:] == (height, width)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux
    # What inference itself added: the peak over what the process held before it (Python, torch, model, photo).
    return {"seconds": seconds, "peak_gib": peak_gib, "added_gib": max(0.0, peak_gib - resident)}


def resident_gib() -> float:
    """Resident memory of this process now (Linux ``/proc/self/statm``), 0 where it cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * resource.getpagesize() / 2**30


def measure(megapixels: float, mode: str, args: argparse.Namespace) -> dict[str, float] | None:
    """Run one size and mode in a child process; None if it failed (e.g. out of memory)."""
    cmd = [
        sys.executable, __file__, "--one", str(megapixels), mode, "--encoder", args.encoder,
        "--tile", str(args.tile), "--overlap", str(args.overlap), "--threads", str(args.threads),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"  {mode} at {megapixels} MP failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    """Parse options, measure every size, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1.0, 4.0, 12.0], choices=sorted(SIZES_MP))
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-untiled-mp", type=float, default=4.0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and encoder (a smoke run)")
    parser.add_argument("--one", nargs=2, metavar=("MP", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(float(args.one[0]), args.one[1], args.encoder, args.tile, args.overlap, args.threads)))
        return
    if args.quick:
        args.sizes, args.encoder, args.tile, args.overlap = [0.2, 1.0], "tu-test_resnet", 128, 32
        args.max_untiled_mp = 1.0
    print(f"U-Net {args.encoder}, tiles {args.tile} px with {args.overlap} px overlap, {args.threads} threads")
    header = (
        f"{'MP':>6} {'H x W':>12} | {'untiled s':>10} {'peak GiB':>9} {'added':>6} | "
        f"{'tiled s':>8} {'peak GiB':>9} {'added':>6} {'s/MP':>6}"
    )
    print(header)
    print("-" * len(header))
    for megapixels in args.sizes:
        height, width = SIZES_MP[megapixels]
        base = measure(megapixels, "untiled", args) if megapixels <= args.max_untiled_mp else None
        ours = measure(megapixels, "tiled", args)
        base_cells = (
            f"{base['seconds']:>10.2f} {base['peak_gib']:>9.2f} {base['added_gib']:>6.2f}"
            if base
            else f"{'-':>10} {'-':>9} {'-':>6}"
        )
        ours_cells = (
            f"{ours['seconds']:>8.2f} {ours['peak_gib']:>9.2f} {ours['added_gib']:>6.2f}"
            f" {ours['seconds'] / (height * width / 1e6):>6.2f}"
            if ours
            else f"{'failed':>8} {'-':>9} {'-':>6} {'-':>6}"
        )
        print(f"{height * width / 1e6:>6.2f} {f'{height}x{width}':>12} | {base_cells} | {ours_cells}", flush=True)


if __name__ == "__main__":
    main()
