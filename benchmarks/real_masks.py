"""U-Net on real crack masks beside CrackForest: masonry walls and Phi-Net pixel-level photos.

Each run trains crackcascade's U-Net from scratch (no pretrained weights exist offline) on a
seeded split, picks each class's threshold on validation, and prints the test scores per class:

* ``masonry``: 240 brick/masonry wall photos with crack masks, no split given: 20% test and
  10% validation carved with seed 0;
* ``phinet-crack``: 1,753 Phi-Net pixel-level photos, palette masks 0/1/2, crack only
  (spalling pixels count as background);
* ``phinet-both``: the same photos, crack and spalling as two classes.

    python benchmarks/real_masks.py masonry phinet-crack phinet-both   # the README's figures
    python benchmarks/real_masks.py masonry --quick                     # a smoke run of seconds

Each trained U-Net is saved as ``--save-dir/<setting>.ckpt`` (``benchmarks/cascade_phinet.py``
uses ``phinet-crack.ckpt``).

Data folders default to ``../shared/data/<name>`` beside the repository (``--data``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from _common import quiet_trainer

from crackcascade import CrackMaskDataModule, CrackSegmenter
from crackcascade.hardware import default_precision

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class Setting:
    """One dataset run: folder, classes, training length (epochs of the cosine schedule, at most ``minutes``)."""

    folder: str
    classes: tuple[str, ...]
    epochs: int
    minutes: float


SETTINGS = {
    "masonry": Setting("masonry", ("crack",), epochs=40, minutes=15.0),
    "phinet-crack": Setting("phinet_pixel", ("crack",), epochs=6, minutes=15.0),
    "phinet-both": Setting("phinet_pixel", ("crack", "spalling"), epochs=6, minutes=15.0),
}


def _count(datasets: Sequence[Any]) -> int:
    return sum(len(d) for d in datasets)


def run(name: str, data_root: Path, precision: str, encoder: str, quick: bool, save_dir: Path) -> dict:
    """Train and test one setting, save its checkpoint; returns the test rows, split sizes and training minutes."""
    setting = SETTINGS[name]
    root = data_root / setting.folder
    if not (root / "images").is_dir():
        raise SystemExit(f"real_masks.py: no '{setting.folder}' data at '{root}' (images/ missing); pass --data")
    pl.seed_everything(0, verbose=False)
    data = CrackMaskDataModule(
        root=str(root),
        scales=["pixel"],
        classes=list(setting.classes),
        image_size=64 if quick else 224,  # the photos are 224x224
        batch_size=8,
        eval_batch_size=8,  # equal sizes: no padding
        val_fraction=0.1,
        test_fraction=0.2,
        seed=0,
    )
    model = CrackSegmenter(
        encoder_name="tu-test_resnet" if quick else encoder,
        classes=list(setting.classes),
        loss="bce+dice",
        pos_weight=5.0,
        optimizer="adamw",
        lr=1e-3,
        scheduler="cosine",
        tolerance=2,
    )
    trainer = quiet_trainer(
        max_epochs=1 if quick else setting.epochs,
        max_time={"seconds": 10 if quick else round(setting.minutes * 60)},
        limit_train_batches=2 if quick else None,
        limit_val_batches=2 if quick else None,
        limit_test_batches=2 if quick else None,
        precision=precision,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    minutes = (time.perf_counter() - start) / 60
    sizes = {split: _count(data.datasets[split]) for split in ("train", "val")}
    save_dir.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(save_dir / f"{name}.ckpt")  # the cascade benchmark reuses the crack U-Net
    trainer.test(model, datamodule=data, verbose=False)
    sizes["test"] = _count(data.datasets["test"])
    return {"rows": model.last_metrics["test"]["rows"], "sizes": sizes, "minutes": minutes}


def main() -> None:
    """Run the chosen settings and print one table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="+", choices=sorted(SETTINGS))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding masonry/ and phinet_pixel/")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--precision", choices=("auto", "32", "bf16-mixed"), default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="two tiny batches per stage (a smoke run)")
    parser.add_argument("--save-dir", type=Path, default=Path("logs/benchmarks/real_masks"), help="checkpoints")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precision = default_precision() if args.precision == "auto" else args.precision
    results = {name: run(name, args.data, precision, args.encoder, args.quick, args.save_dir) for name in args.settings}
    encoder = "tu-test_resnet" if args.quick else args.encoder
    print(f"U-Net {encoder} from scratch, {precision}, {args.threads} threads; test split, thresholds from val")
    header = (
        f"{'setting':<14}{'train/val/test':>16}{'min':>6}{'class':>10}{'thresh':>8}"
        f"{'F1':>8}{'F1@2px':>8}{'IoU':>8}{'prec':>8}{'recall':>8}{'F1/img':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, result in results.items():
        sizes = "/".join(str(result["sizes"][s]) for s in ("train", "val", "test"))
        for _, cls, row in result["rows"]:
            print(
                f"{name:<14}{sizes:>16}{result['minutes']:>6.1f}{cls:>10}{row['threshold']:>8.2f}{row['f1']:>8.3f}"
                f"{row['f1_tol']:>8.3f}{row['iou']:>8.3f}{row['precision']:>8.3f}{row['recall']:>8.3f}"
                f"{row['f1_per_image']:>8.3f}"
            )


if __name__ == "__main__":
    main()
