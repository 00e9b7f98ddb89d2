"""``crackcascade synthesize``: write a synthetic set from the command line."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from crackcascade.labels import (
    CRACK,
    SCALES,
    TASK_NAMES,
    resolve_tasks,
)
from crackcascade.synthetic.masks import MASK_FORMATS, mask_scales, write_crack_masks
from crackcascade.synthetic.scene import FORMATS
from crackcascade.synthetic.writers import csv_count, write_phinet


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``crackcascade synthesize``: write a synthetic set and say how long it took.

    Without ``--masks`` it writes Phi-Net classification data (:func:`write_phinet`); with
    ``--masks coco`` or ``--masks masks`` it writes crack-mask sets for ``--scales`` and
    ``--classes`` instead (:func:`write_crack_masks`).

    Args:
        argv: Arguments after ``synthesize`` (default: ``sys.argv[1:]``).

    Returns:
        0 on success (bad arguments exit with status 2 and a message, as argparse does).
    """
    parser = argparse.ArgumentParser(
        prog="crackcascade synthesize",
        description="Write procedural Phi-Net-like images (all eight tasks) in a real Phi-Net format.",
    )
    add = parser.add_argument
    add("root", type=Path, help="output folder")
    add("--format", choices=FORMATS, default="arrays", help="on-disk format (default: arrays)")
    add("--n-train", type=int, default=100, metavar="N", help="images per task (default: 100)")
    add("--n-test", type=int, default=20, metavar="N", help="test images per task (default: 20)")
    add("--size", type=int, default=224, metavar="PX", help="image side (default: 224)")
    add("--seed", type=int, default=0, help="base seed (default: 0)")
    every = " ".join(TASK_NAMES)
    add("--tasks", nargs="+", metavar="TASK", help=f"tasks to write (default: {every})")
    add("--workers", type=int, default=1, metavar="N", help="processes (default: 1)")
    add("--masks", choices=MASK_FORMATS, help="write crack-mask sets per scale in this format instead")
    add("--scales", nargs="+", metavar="SCALE", help=f"with --masks: scales (default: {' '.join(SCALES)})")
    add("--classes", nargs="+", metavar="CLASS", help=f"with --masks: mask classes (default: {CRACK})")
    args = parser.parse_args(argv)
    if args.masks is not None:
        return _main_masks(parser, args)
    if args.scales is not None or args.classes is not None:
        parser.error("--scales and --classes apply only with --masks")
    start = time.perf_counter()
    try:
        root = write_phinet(
            args.root,
            format=args.format,
            n_train=args.n_train,
            n_test=args.n_test,
            size=args.size,
            seed=args.seed,
            tasks=args.tasks,
            workers=args.workers,
        )
    except ValueError as err:
        parser.error(str(err))
    elapsed = time.perf_counter() - start
    chosen = resolve_tasks(args.tasks)
    if args.format == "csv":
        n_images = csv_count(args.n_train, len(chosen)) + csv_count(args.n_test, len(chosen))
    else:
        n_images = (args.n_train + args.n_test) * len(chosen)
    print(
        f"wrote {n_images} synthetic {args.size}x{args.size} images ({args.format}; tasks: "
        f"{' '.join(chosen)}) to {root} in {elapsed:.1f} s ({n_images / max(elapsed, 1e-9):.0f} images/s)"
    )
    return 0


def _main_masks(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``synthesize --masks``: write crack-mask sets and report them."""
    if args.tasks is not None:
        parser.error("--tasks applies to Phi-Net data; with --masks choose --scales and --classes")
    start = time.perf_counter()
    try:
        root = write_crack_masks(
            args.root,
            format=args.masks,
            scales=args.scales or SCALES,
            n_train=args.n_train,
            n_test=args.n_test,
            size=args.size,
            seed=args.seed,
            classes=args.classes or (CRACK,),
            workers=args.workers,
        )
    except ValueError as err:
        parser.error(str(err))
    elapsed = time.perf_counter() - start
    scales = [SCALES[i] for i in mask_scales(args.scales or SCALES)]
    n_images = (args.n_train + args.n_test) * len(scales)
    print(
        f"wrote {n_images} synthetic {args.size}x{args.size} crack-mask images ({args.masks}; scales: "
        f"{' '.join(scales)}; classes: {' '.join(args.classes or (CRACK,))}) to {root} in {elapsed:.1f} s"
    )
    return 0
