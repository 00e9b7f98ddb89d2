"""The cascade on real photos: Phi-Net pixel-level images, U-Net alone vs gated by a crack/no-crack classifier.

../shared/data/phinet_pixel holds 1,753 Phi-Net pixel-level photos with crack/spalling masks;
257 have spalling but no crack. The U-Net is the crack-only one ``benchmarks/real_masks.py
phinet-crack`` trained and saved; this script

1. derives image labels from the masks (crack present: ``damage_state`` damaged, else
   undamaged) on the very same seeded train/val/test split the U-Net used, writes them as a
   Phi-Net image-folder set (links, no copies), and trains a crack/no-crack classifier
   (timm resnet18 from scratch, no pretrained weights offline);
2. runs :class:`~crackcascade.models.cascade.CrackCascade` on the held-out test photos with
   that gate, and prints the ungated vs gated table.

    python benchmarks/real_masks.py phinet-crack        # trains and saves the U-Net first
    python benchmarks/cascade_phinet.py                 # the README's figures
    python benchmarks/cascade_phinet.py --quick --segmenter X.ckpt   # a smoke run of seconds
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from _common import quiet_trainer
from PIL import Image

from crackcascade import CrackMaskDataModule, MultiTaskClassifier, PhiNetDataModule
from crackcascade.data.io import FOLLOW_SYMLINKS_ENV
from crackcascade.hardware import default_precision
from crackcascade.models.cascade import CrackCascade

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "phinet_pixel"
VAL_FRACTION, TEST_FRACTION, SEED = 0.1, 0.2, 0  # the split of benchmarks/real_masks.py


def crack_data(root: Path, quick: bool) -> CrackMaskDataModule:
    """The photos with crack-only masks, split exactly as the U-Net's training split them."""
    return CrackMaskDataModule(
        root=str(root),
        scales=["pixel"],
        classes=["crack"],
        image_size=64 if quick else 224,
        val_fraction=VAL_FRACTION,
        test_fraction=TEST_FRACTION,
        seed=SEED,
    )


def write_gate_set(data: CrackMaskDataModule, folder: Path) -> dict[str, dict[str, int]]:
    """Link each split's photos into ``folder/damage_state/<split>/<damaged|undamaged>/``; return class counts."""
    if folder.exists():
        shutil.rmtree(folder)
    data.setup("fit")
    data.setup("test")
    counts: dict[str, dict[str, int]] = {}
    for split in ("train", "val", "test"):
        counts[split] = {"damaged": 0, "undamaged": 0}
        for dataset in data.datasets[split]:
            for record in dataset.records:  # type: ignore[attr-defined]
                with Image.open(record.mask) as mask:
                    cracked = bool((np.asarray(mask) == 1).any())  # palette index 1 is crack
                label = "damaged" if cracked else "undamaged"
                target = folder / "damage_state" / split / label / record.image.name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(record.image.resolve(), target)
                counts[split][label] += 1
    return counts


def train_gate(folder: Path, epochs: int, precision: str, backbone: str, quick: bool, out: Path) -> tuple[Path, dict]:
    """Train the crack/no-crack classifier; returns its checkpoint and test scores."""
    pl.seed_everything(0, verbose=False)
    # The gate set links to the shared photos rather than copying them: allow links out of its root.
    os.environ[FOLLOW_SYMLINKS_ENV] = "1"
    data = PhiNetDataModule(
        root=str(folder), tasks=["damage_state"], format="folders", image_size=64 if quick else 224, batch_size=32
    )
    model = MultiTaskClassifier(
        backbone=backbone, tasks=["damage_state"], optimizer="adamw", lr=1e-3, weight_decay=1e-4, scheduler="cosine"
    )
    trainer = quiet_trainer(
        max_epochs=epochs,
        limit_train_batches=2 if quick else None,
        limit_val_batches=2 if quick else None,
        limit_test_batches=2 if quick else None,
        precision=precision,
        default_root_dir=str(out),  # confusion matrices go there
    )
    trainer.fit(model, datamodule=data)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "gate.ckpt"
    trainer.save_checkpoint(checkpoint)
    trainer.test(model, datamodule=data, verbose=False)
    return checkpoint, dict(model.last_metrics.get("test", {}))


def main() -> None:
    """Train the gate, run the cascade on the test split, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--segmenter", type=Path, default=Path("logs/benchmarks/real_masks/phinet-crack.ckpt"))
    parser.add_argument("--backbone", default="resnet18", help="timm backbone of the gate classifier")
    parser.add_argument("--epochs", type=int, default=8, help="gate classifier epochs")
    parser.add_argument("--precision", choices=("auto", "32", "bf16-mixed"), default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("logs/benchmarks/cascade_phinet"))
    parser.add_argument("--quick", action="store_true", help="tiny backbone, two batches (a smoke run)")
    args = parser.parse_args()
    if not (args.root / "images").is_dir():
        raise SystemExit(f"cascade_phinet.py: no Phi-Net pixel data at '{args.root}' (images/ missing); pass --root")
    if not args.segmenter.is_file():
        raise SystemExit(
            f"cascade_phinet.py: U-Net checkpoint '{args.segmenter}' not found; run "
            "`python benchmarks/real_masks.py phinet-crack` first or pass --segmenter"
        )
    torch.set_num_threads(args.threads)
    precision = default_precision() if args.precision == "auto" else args.precision
    counts = write_gate_set(crack_data(args.root, args.quick), args.workdir / "gate_data")
    backbone = "test_resnet" if args.quick else args.backbone
    start = time.perf_counter()
    gate_checkpoint, gate_scores = train_gate(
        args.workdir / "gate_data", 1 if args.quick else args.epochs, precision, backbone, args.quick, args.workdir
    )
    minutes = (time.perf_counter() - start) / 60
    cascade = CrackCascade(
        classifier=str(gate_checkpoint),
        segmenter=str(args.segmenter),
        gate_task="damage_state",
        gate_classes=["damaged"],
        classifier_size=64 if args.quick else 224,
    )
    trainer = quiet_trainer(limit_test_batches=4 if args.quick else None, default_root_dir=str(args.workdir))
    print(f"Phi-Net pixel level, photos (cracked/crack-free) per split: {counts}")
    print(
        f"gate: {backbone} crack/no-crack classifier, {minutes:.1f} min; test accuracy "
        f"{gate_scores.get('damage_state_acc', float('nan')):.3f}, "
        f"macro-F1 {gate_scores.get('damage_state_f1', float('nan')):.3f}"
    )
    trainer.test(cascade, datamodule=crack_data(args.root, args.quick), verbose=False)


if __name__ == "__main__":
    main()
