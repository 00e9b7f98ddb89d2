"""The cascade's time saving: end-to-end prediction on photos that are half crack-free, gated vs ungated.

Synthetic scenes at ``--photo-size`` px (``crackcascade.synthetic``, pixel scale, with
joints, wires, stains and shadows as distractors) are written to ``--workdir``; the timed set is
``--photos`` test scenes, half of them crack-free (their masks are empty). Unless checkpoints
are given, the script first trains, on separate training scenes of the same kind:

* the U-Net (``CrackSegmenter``, ``--encoder``, a few epochs of random crops, its threshold
  picked on validation), and
* the gate: a crack / no-crack classifier (``MultiTaskClassifier`` with a ``damage_state`` head,
  ``--backbone`` at ``--gate-size`` px), labelled from the masks (crack pixels = damaged).

Each row runs ``predict`` over the whole set, one photo at a time at native resolution, and is
timed end to end (reading the photo, the models, the crack measurements): the U-Net alone on every
photo (the baseline), the cascade ungated (classifier and U-Net on every photo), and the cascade
gated by the classifier (the U-Net only where it says damaged). The gate's accuracy against the
masks is printed with it: the time saved is what this gate earns, errors included. Each total
is given over the U-Net alone and over the ungated cascade (the target: gated at most 0.6x ungated).

    python benchmarks/cascade_gating.py                 # the README's table
    python benchmarks/cascade_gating.py --quick         # tiny models and photos (a smoke run)
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from _common import quiet_trainer
from PIL import Image

from crackcascade import CrackMaskDataModule, CrackSegmenter, MultiTaskClassifier, PhiNetDataModule
from crackcascade.checkpoints.restore import load_segmenter
from crackcascade.hardware import default_precision
from crackcascade.models.cascade import CrackCascade
from crackcascade.synthetic import write_crack_masks


def cracked(mask_path: Path) -> bool:
    """Whether a synthetic mask (0 background, 255 crack) has any crack pixel."""
    with Image.open(mask_path) as mask:
        return bool(np.asarray(mask).any())


def write_scenes(workdir: Path, photos: int, train: int, size: int) -> tuple[Path, Path, list[bool]]:
    """Write the scenes once; return the mask set's root, the timed photo folder and which photos have cracks."""
    root = workdir / "scenes"
    marker = root / f".written-{photos}-{train}-{size}"
    if not marker.is_file():
        if root.exists():
            shutil.rmtree(root)
        # A third of the written scenes are crack-free: write 1.5x the photos to draw half and half.
        write_crack_masks(root, scales=["pixel"], n_train=train, n_test=-(-3 * photos // 2), size=size, workers=2)
        marker.touch()
    test = root / "pixel" / "test"
    names = sorted(p.name for p in (test / "images").iterdir())
    free = [n for n in names if not cracked(test / "masks" / n)]
    with_cracks = [n for n in names if n not in free]
    if len(free) < photos // 2 or len(with_cracks) < photos - photos // 2:
        raise SystemExit(f"cascade_gating.py: too few crack-free or cracked scenes in {test}")
    chosen = sorted(free[: photos // 2] + with_cracks[: photos - photos // 2])
    folder = workdir / "photos"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name in chosen:
        # Hard links: nothing is copied, and the data modules refuse symbolic links out of their root.
        os.link(test / "images" / name, folder / name)
    return root, folder, [name in with_cracks for name in chosen]


def fit_and_save(
    model: pl.LightningModule,
    data: pl.LightningDataModule,
    name: str,
    args: argparse.Namespace,
    precision: str,
    epochs: int,
    **options: Any,
) -> Path:
    """Train ``model`` for ``epochs``; its checkpoint ``<workdir>/<name>.ckpt``."""
    trainer = quiet_trainer(
        accelerator=args.accelerator,
        max_epochs=epochs,
        precision=precision,
        default_root_dir=str(args.workdir),
        **options,
    )
    trainer.fit(model, datamodule=data)
    checkpoint = args.workdir / f"{name}.ckpt"
    trainer.save_checkpoint(checkpoint)
    return checkpoint


def train_unet(root: Path, args: argparse.Namespace, precision: str) -> Path:
    """Train the U-Net on the training scenes (random crops), threshold from validation; its checkpoint."""
    pl.seed_everything(0, verbose=False)
    data = CrackMaskDataModule(root=str(root), scales=["pixel"], image_size=args.crop, batch_size=8, val_fraction=0.2)
    model = CrackSegmenter(encoder_name=args.encoder, lr=1e-3, scheduler="cosine")
    # Validating 1024 px photos is slower than the training epoch: once, at the end, for the threshold.
    epochs = args.unet_epochs
    return fit_and_save(model, data, "unet", args, precision, epochs, check_val_every_n_epoch=epochs)


def train_gate(root: Path, args: argparse.Namespace, precision: str) -> Path:
    """Train the crack / no-crack classifier on the training scenes; its checkpoint."""
    train = root / "pixel" / "train"
    folder = args.workdir / "gate_data"
    if folder.exists():
        shutil.rmtree(folder)
    for image in sorted((train / "images").iterdir()):
        label = "damaged" if cracked(train / "masks" / image.name) else "undamaged"
        target = folder / "damage_state" / "train" / label / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(image, target)
    pl.seed_everything(0, verbose=False)
    data = PhiNetDataModule(
        root=str(folder), tasks=["damage_state"], format="folders", image_size=args.gate_size, batch_size=16
    )
    model = MultiTaskClassifier(
        backbone=args.backbone,
        tasks=["damage_state"],
        optimizer="adamw",
        lr=1e-3,
        weight_decay=1e-4,
        scheduler="cosine",
    )
    return fit_and_save(model, data, "gate", args, precision, args.gate_epochs)


def timed_predict(
    model: pl.LightningModule, photos: Path, args: argparse.Namespace, precision: str
) -> tuple[float, list]:
    """Seconds of ``predict`` over every photo (after a one-photo warm-up run) and its records."""
    warmup = args.workdir / "warmup"
    if not warmup.exists():
        warmup.mkdir()
        first = sorted(photos.iterdir())[0]
        os.link(first, warmup / first.name)

    def run(folder: Path) -> list:
        data = CrackMaskDataModule(root=str(folder), predict_root=str(folder))
        trainer = quiet_trainer(accelerator=args.accelerator, precision=precision)
        return trainer.predict(model, datamodule=data) or []

    run(warmup)
    start = time.perf_counter()
    records = run(photos)
    return time.perf_counter() - start, [r for batch in records for r in batch]


def main() -> None:
    """Write the scenes, train (or load) both models, time the three ways, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=40, help="timed photos, half of them crack-free")
    parser.add_argument("--train-images", type=int, default=360, help="training scenes for the two models")
    parser.add_argument("--photo-size", type=int, default=1024)
    parser.add_argument("--encoder", default="resnet18", help="U-Net encoder")
    parser.add_argument("--crop", type=int, default=256, help="U-Net training crop")
    parser.add_argument("--unet-epochs", type=int, default=3)
    parser.add_argument("--backbone", default="resnet18", help="timm backbone of the gate")
    parser.add_argument("--gate-size", type=int, default=224, help="side the gate classifier sees")
    parser.add_argument("--gate-epochs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds of the three pipelines; the best counts")
    parser.add_argument("--classifier", type=Path, help="use this gate checkpoint instead of training one")
    parser.add_argument("--segmenter", type=Path, help="use this U-Net checkpoint instead of training one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("logs/benchmarks/cascade_gating"))
    parser.add_argument("--quick", action="store_true", help="tiny models, 12 photos of 128 px (seconds)")
    args = parser.parse_args()
    if args.quick:
        args.photos, args.train_images, args.photo_size, args.crop = 12, 90, 128, 64
        args.encoder, args.backbone, args.gate_size, args.unet_epochs, args.gate_epochs = (
            "tu-test_resnet", "test_resnet", 64, 2, 10,
        )  # fmt: skip
        args.rounds = max(args.rounds, 3)
    torch.set_num_threads(args.threads)
    args.accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    args.workdir.mkdir(parents=True, exist_ok=True)
    precision = default_precision()
    root, photos, truth = write_scenes(args.workdir, args.photos, args.train_images, args.photo_size)
    start = time.perf_counter()
    segmenter = args.segmenter or train_unet(root, args, precision)
    classifier = args.classifier or train_gate(root, args, precision)
    trained = time.perf_counter() - start

    unet = load_segmenter(segmenter, "--segmenter")
    gated = CrackCascade(str(classifier), str(segmenter), gate_task="damage_state", gate_classes=["damaged"])
    ungated = CrackCascade(str(classifier), str(segmenter), gate_task=None)
    # Best of alternating rounds: a pause of the machine in one run then moves no ratio.
    best = {"unet": math.inf, "ungated": math.inf, "gated": math.inf}
    records: list = []
    for _ in range(args.rounds):
        for name, model in (("unet", unet), ("ungated", ungated), ("gated", gated)):
            seconds, found = timed_predict(model, photos, args, precision)
            best[name] = min(best[name], seconds)
            records = found if name == "gated" else records
    passed = [bool(r["segmented"]) for r in records]
    rows: list[tuple[str, float, float]] = [
        ("U-Net alone, every photo (baseline)", best["unet"], 1.0),
        ("cascade, ungated", best["ungated"], 1.0),
        ("cascade, gated (damage_state)", best["gated"], sum(passed) / len(passed)),
    ]

    correct = sum(p == t for p, t in zip(passed, truth, strict=True))
    missed = sum(t and not p for p, t in zip(passed, truth, strict=True))
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {args.threads} threads"
    print(
        f"{len(truth)} synthetic photos of {args.photo_size}x{args.photo_size}, {len(truth) - sum(truth)} crack-free; "
        f"U-Net {args.encoder}, gate {args.backbone} at {args.gate_size} px; {precision}; {where}"
    )
    source = "given checkpoints" if args.classifier and args.segmenter else f"trained here in {trained:.0f} s"
    print(
        f"gate ({source}): {correct}/{len(truth)} photos right ({correct / len(truth):.3f}), "
        f"{missed} cracked photo{'' if missed == 1 else 's'} not segmented"
    )
    header = f"{'pipeline':<38}{'segmented':>10}{'s total':>9}{'ms/photo':>10}{'vs U-Net alone':>16}{'vs ungated':>12}"
    print(header)
    print("-" * len(header))
    alone, ungated_total = rows[0][1], rows[1][1]
    for name, total, fraction in rows:
        print(
            f"{name:<38}{fraction:>10.2f}{total:>9.3f}{1000 * total / len(truth):>10.1f}"
            f"{total / alone:>15.3f}x{total / ungated_total:>11.3f}x"
        )
    print("target: gated at most 0.60x the ungated cascade")


if __name__ == "__main__":
    main()
