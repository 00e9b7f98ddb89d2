"""Offline pretraining vs training from scratch: CrackForest U-Net, the Phi-Net crack gate, the cascade.

No ImageNet weights offline, so every backbone here starts from random weights or from one of:

* **SSL**: :class:`~crackcascade.SSLPretrainer` (BYOL, lightly) on unlabeled photos, views as
  random crops at native resolution (``crop``) or from the whole photo shrunk (``resize``);
* **synthetic**: the U-Net trained on built-in synthetic crack scenes, its encoder kept;
* **both**: synthetic pretraining started from the SSL (crop) backbone.

The SSL photos are every image of ``../shared/data`` except the photos scored here: CrackForest's
46 test photos and the Phi-Net pixel test split (the script checks that no scored photo is among
them). No masks or labels are read for SSL. Each pretrained backbone is cached in
``<workdir>/backbones`` (keyed by its settings), with the minutes it cost, so reruns do not pay twice.

Then, each with the same budget and recipe, thresholds from validation, scored on the test split:

1. CrackForest U-Net (encoder as ``benchmarks/crackforest.py``, its split, AdamW 1e-3, BCE + Dice,
   256 px crops): strict F1 and F1 at 2 px per backbone;
2. the crack gate on Phi-Net pixel photos (crack present = the mask holds crack pixels; the split
   of ``benchmarks/cascade_phinet.py``): accuracy, balanced accuracy and macro-F1 at the threshold
   on P(crack) that maximizes validation balanced accuracy, against the "always crack" floor;
3. the cascade on the Phi-Net pixel test photos with each gate (threshold from validation):
   ungated vs gated, image F1, both localization scores (ours: located among all photos; the paper's:
   among the photos the U-Net ran on) and pixel IoU/F1; needs the crack U-Net
   of ``benchmarks/real_masks.py phinet-crack`` (``--segmenter``), skipped without it.

    python benchmarks/pretraining.py                 # the docs' table (about 3.5 hours on 2 cores)
    python benchmarks/pretraining.py --quick         # a smoke run of seconds
    python benchmarks/pretraining.py --seed 1 --parts gate   # the spread: fine-tuning again, backbones cached
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from _common import quiet_trainer, validated_test_row
from cascade_phinet import DEFAULT_ROOT as PHINET_ROOT
from cascade_phinet import crack_data, write_gate_set
from crackforest import DEFAULT_ROOT as CRACKFOREST_ROOT

from crackcascade import (
    CrackMaskDataModule,
    CrackSegmenter,
    MultiTaskClassifier,
    PhiNetDataModule,
    SSLPretrainer,
    SyntheticCrackMaskDataModule,
    UnlabeledPhotoDataModule,
)
from crackcascade.callbacks import TimeBudget
from crackcascade.checkpoints.backbone import backbone_state, describe, write_backbone
from crackcascade.data.io import FOLLOW_SYMLINKS_ENV, list_images
from crackcascade.hardware import default_precision
from crackcascade.labels import get_task, task_index
from crackcascade.models.cascade import CrackCascade
from crackcascade.models.multitask import collate_tasks

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VARIANTS = ("scratch", "SSL crop", "SSL resize", "synthetic", "SSL crop + synthetic")
PARTS = ("crackforest", "gate", "cascade")


def ssl_photos(crackforest: Path, phinet: Path, quick: bool, folder: Path) -> tuple[int, int]:
    """Link every shared photo except the scored test photos into ``folder``; return (photos, scored excluded)."""
    data = crack_data(phinet, quick)
    data.setup("test")
    scored = {r.image.resolve() for ds in data.datasets["test"] for r in ds.records}  # type: ignore[attr-defined]
    scored |= {(crackforest / "images" / f"{s}.jpg").resolve() for s in (crackforest / "test.txt").read_text().split()}
    if quick:  # CrackForest's photos only: scanning all of ../shared/data takes seconds
        pool = [p for p in list_images(crackforest / "images") if p.resolve() not in scored][:12]
    else:
        masks = {p.resolve() for p in SHARED.glob("**/masks/*")}
        pool = [p for p in list_images(SHARED) if p.resolve() not in scored and p.resolve() not in masks]
    assert not {p.resolve() for p in pool} & scored, "SSL must never see a scored test photo"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for i, path in enumerate(pool):
        (folder / f"{i:05d}{path.suffix.lower()}").symlink_to(path.resolve())
    return len(pool), len(scored)


def file_stem(name: str) -> str:
    """A variant's name as a file name: ``SSL crop + synthetic`` -> ``SSL_crop_and_synthetic``."""
    return name.replace(" ", "_").replace("+", "and")


def cached(cache: Path, name: str, settings: dict[str, Any], train: Any) -> tuple[Path, dict[str, Any], bool]:
    """The backbone file for ``settings``, trained by ``train(path)`` unless a cached one exists."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = cache / f"{file_stem(name)}-{key}.safetensors"
    hit = path.is_file()
    if not hit:
        train(path)
    return path, json.loads(path.with_suffix(".json").read_text()), hit


def fit_and_write(
    model: pl.LightningModule, data: Any, minutes: float, path: Path, precision: str, data_minutes: float = 0.0
) -> None:
    """Train ``model`` for a time budget and write its backbone file, recording the minutes spent.

    ``data_minutes`` (making the data, e.g. synthetic scenes written once and shared) is added to the cost.
    """
    pl.seed_everything(0, verbose=False)
    trainer = quiet_trainer(
        max_epochs=-1,
        precision=precision,
        callbacks=[TimeBudget(minutes=minutes)],
        check_val_every_n_epoch=1_000_000,
        default_root_dir=str(path.parent),
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    architecture, state = backbone_state(model)
    minutes_spent = (time.perf_counter() - start) / 60 + data_minutes
    info = {**describe(trainer, model, architecture), "minutes": minutes_spent, "data_minutes": data_minutes}
    write_backbone(path, state, info)


def pretrain(args: argparse.Namespace, arch: str, precision: str) -> dict[str, tuple[Path | None, dict, bool]]:
    """Every pretrained backbone of :data:`VARIANTS` (cached); ``scratch`` has none."""
    cache, pool = args.workdir / "backbones", args.workdir / "ssl_photos"
    count, scored = ssl_photos(args.crackforest_root, args.phinet_root, args.quick, pool)
    print(f"SSL photos: {count} from {SHARED} (the {scored} scored test photos left out)")
    size, quick = (32, True) if args.quick else (args.ssl_size, False)
    backbones: dict[str, tuple[Path | None, dict, bool]] = {"scratch": (None, {}, False)}
    for views in ("crop", "resize"):
        settings = {"arch": arch, "views": views, "minutes": args.ssl_minutes, "photos": count, "size": size}

        def ssl(path: Path, views: str = views) -> None:
            model = SSLPretrainer(
                backbone=arch,
                method="byol",
                scheduler="none",
                hidden_dim=64 if quick else 1024,
                projection_dim=32 if quick else 256,
            )
            data = UnlabeledPhotoDataModule(
                root=str(pool),
                image_size=size,
                views=views,  # type: ignore[arg-type]
                batch_size=4 if quick else 32,
                num_workers=0 if quick else 2,
            )
            fit_and_write(model, data, args.ssl_minutes, path, precision)

        backbones[f"SSL {views}"] = cached(cache, f"ssl_{views}", settings, ssl)

    n_scenes, scene_size = (4, 64) if quick else (400, 320)
    scene_root = args.workdir / f"synthetic_scenes_{n_scenes}x{scene_size}"

    def scenes() -> SyntheticCrackMaskDataModule:
        return SyntheticCrackMaskDataModule(
            root=str(scene_root), scales=["pixel"], n_train=n_scenes, n_test=1, synthetic_size=scene_size,
            image_size=size, batch_size=4 if quick else 8, val_fraction=0.0,
        )  # fmt: skip

    def scene_minutes() -> float:
        """Minutes it took to write the scenes, charged to every backbone trained on them (written once)."""
        timing = scene_root.with_suffix(".json")
        if not timing.is_file():
            start = time.perf_counter()
            scenes().prepare_data()
            timing.write_text(json.dumps({"minutes": (time.perf_counter() - start) / 60}))
        return float(json.loads(timing.read_text())["minutes"])

    def synthetic(path: Path, start: Path | None) -> None:
        model = CrackSegmenter(
            encoder_name=f"tu-{arch}",
            pretrained_weights=str(start) if start else None,
            pos_weight=3.0,
            optimizer="adamw",
            lr=1e-3,
        )
        fit_and_write(model, scenes(), args.synthetic_minutes, path, precision, scene_minutes())

    settings = {"arch": arch, "minutes": args.synthetic_minutes, "size": size, "quick": quick}
    backbones["synthetic"] = cached(cache, "synthetic", settings, lambda p: synthetic(p, None))
    parent = backbones["SSL crop"][0]
    settings = {**settings, "from": backbones["SSL crop"][1].get("date")}
    backbones["SSL crop + synthetic"] = cached(cache, "ssl_crop_synthetic", settings, lambda p: synthetic(p, parent))
    return backbones


def cost(entry: tuple[Path | None, dict, bool], backbones: dict) -> float:
    """Pretraining minutes of a backbone, including those of the backbone it started from."""
    _, info, _ = entry
    minutes = float(info.get("minutes", 0.0))
    start = info.get("initialized_from")
    parents = [e for e in backbones.values() if e[0] is not None and str(e[0]) == start]
    return minutes + (cost(parents[0], backbones) if parents else 0.0)


def crackforest(args: argparse.Namespace, weights: Path | None, encoder: str, precision: str) -> dict[str, float]:
    """Fine-tune the U-Net on CrackForest for the budget; test scores at the validation threshold."""
    pl.seed_everything(args.seed, verbose=False)
    crop = 64 if args.quick else 256
    data = CrackMaskDataModule(
        root=str(args.crackforest_root),
        scales=["pixel"],
        image_size=crop,
        scale_range=(1.0, 1.0),
        batch_size=8,
        val_fraction=0.2,
    )
    model = CrackSegmenter(
        encoder_name=encoder,
        pretrained_weights=str(weights) if weights else None,
        loss="bce+dice",
        pos_weight=5.0,
        optimizer="adamw",
        lr=1e-3,
        tolerance=2,
    )
    limit = {"limit_val_batches": 2, "limit_test_batches": 2} if args.quick else {}
    trainer = quiet_trainer(
        max_epochs=-1,
        check_val_every_n_epoch=1_000_000,
        precision=precision,
        callbacks=[TimeBudget(minutes=args.finetune_minutes)],
        default_root_dir=str(args.workdir / "crackforest"),
        **limit,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    minutes = (time.perf_counter() - start) / 60
    return {**validated_test_row(trainer, model, data), "minutes": minutes}


def crack_probabilities(model: MultiTaskClassifier, loader: Any) -> tuple[np.ndarray, np.ndarray]:
    """P(damaged) and the true crack flag of every image a loader yields."""
    damaged = get_task("damage_state").class_index("damaged")
    scores, truth = [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            batch = collate_tasks(batch)
            scores.append(model(batch["image"])["damage_state"].float().softmax(1)[:, damaged])
            truth.append(batch["labels"][:, task_index("damage_state")] == damaged)
    return torch.cat(scores).numpy(), torch.cat(truth).numpy()


def binary(scores: np.ndarray, truth: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 of ``scores >= threshold`` against ``truth``."""
    predicted = scores >= threshold
    tp, tn = float((predicted & truth).sum()), float((~predicted & ~truth).sum())
    fp, fn = float((predicted & ~truth).sum()), float((~predicted & truth).sum())
    recall, specificity = tp / max(tp + fn, 1), tn / max(tn + fp, 1)
    f1_crack, f1_free = 2 * tp / max(2 * tp + fp + fn, 1), 2 * tn / max(2 * tn + fn + fp, 1)
    return {
        "acc": (tp + tn) / max(len(truth), 1),
        "bal_acc": (recall + specificity) / 2,
        "macro_f1": (f1_crack + f1_free) / 2,
        "threshold": threshold,
    }


def gate(args: argparse.Namespace, weights: Path | None, arch: str, precision: str, name: str) -> tuple[dict, Path]:
    """Fine-tune the crack gate for the budget; threshold from validation balanced accuracy; test scores."""
    pl.seed_everything(args.seed, verbose=False)
    size = 32 if args.quick else 224
    data = PhiNetDataModule(
        root=str(args.workdir / "gate_data"),
        tasks=["damage_state"],
        format="folders",
        image_size=size,
        batch_size=8 if args.quick else 32,
    )
    model = MultiTaskClassifier(
        backbone=arch,
        tasks=["damage_state"],
        pretrained_weights=str(weights) if weights else None,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=1e-4,
    )
    trainer = quiet_trainer(
        max_epochs=-1,
        check_val_every_n_epoch=1_000_000,
        precision=precision,
        callbacks=[TimeBudget(minutes=args.gate_minutes)],
        default_root_dir=str(args.workdir),
    )
    trainer.fit(model, datamodule=data)
    checkpoint = args.workdir / "gates" / f"{file_stem(name)}-seed{args.seed}.ckpt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(checkpoint)
    data.setup("test")
    val_scores, val_truth = crack_probabilities(model, data.val_dataloader())
    grid = [round(0.05 * i, 2) for i in range(1, 20)]
    best = max(grid, key=lambda t: (binary(val_scores, val_truth, t)["bal_acc"], -abs(t - 0.5)))
    test_scores, test_truth = crack_probabilities(model, data.test_dataloader())
    return binary(test_scores, test_truth, best), checkpoint


def cascade(args: argparse.Namespace, checkpoint: Path, threshold: float) -> list[dict[str, Any]]:
    """The cascade's ungated and gated rows on the Phi-Net pixel test photos (its own table printed aside)."""
    model = CrackCascade(
        classifier=str(checkpoint),
        segmenter=str(args.segmenter),
        gate_task="damage_state",
        gate_classes=["damaged"],
        gate_threshold=threshold,
        classifier_size=32 if args.quick else 224,
    )
    trainer = quiet_trainer(limit_test_batches=2 if args.quick else None, default_root_dir=str(args.workdir))
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.test(model, datamodule=crack_data(args.phinet_root, args.quick), verbose=False)
    return list(model.last_table)


def quick_segmenter(args: argparse.Namespace) -> Path:
    """A tiny U-Net trained a few steps on the Phi-Net crack masks, for ``--quick`` without ``--segmenter``."""
    pl.seed_everything(0, verbose=False)
    model = CrackSegmenter(encoder_name="tu-test_resnet", tile_size=64, tile_overlap=16)
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(model, datamodule=crack_data(args.phinet_root, True))
    path = args.workdir / "quick_unet.ckpt"
    trainer.save_checkpoint(path)
    return path


def mini_phinet(root: Path, folder: Path) -> Path:
    """For ``--quick``: every 27th Phi-Net pixel photo and mask (65 pairs, both classes), linked into ``folder``."""
    stems = sorted(p.stem for p in (root / "images").glob("*.jpg"))[::27]
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        for sub, suffix in (("images", ".jpg"), ("masks", ".png")):
            link = folder / sub / f"{stem}{suffix}"
            if not link.is_symlink():
                link.symlink_to((root / sub / f"{stem}{suffix}").resolve())
    (folder / "train.txt").write_text("\n".join(stems) + "\n")
    return folder


def main() -> None:
    """Pretrain (or reuse) the backbones, fine-tune each, print the three tables and write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crackforest-root", type=Path, default=CRACKFOREST_ROOT)
    parser.add_argument("--phinet-root", type=Path, default=PHINET_ROOT)
    parser.add_argument("--segmenter", type=Path, default=Path("logs/benchmarks/real_masks/phinet-crack.ckpt"))
    parser.add_argument("--arch", default="resnet18", help="timm backbone of every model")
    parser.add_argument("--encoder", default="resnet18", help="CrackForest U-Net encoder (crackforest.py's)")
    parser.add_argument("--ssl-minutes", type=float, default=20.0, help="each SSL run (crop, resize)")
    parser.add_argument("--ssl-size", type=int, default=160, help="SSL and synthetic view side (px)")
    parser.add_argument("--synthetic-minutes", type=float, default=15.0, help="each synthetic pretraining")
    parser.add_argument("--finetune-minutes", type=float, default=12.0, help="each CrackForest fine-tuning")
    parser.add_argument("--gate-minutes", type=float, default=6.0, help="each gate fine-tuning")
    parser.add_argument("--precision", choices=("auto", "32", "bf16-mixed"), default="auto")
    parser.add_argument("--seed", type=int, default=0, help="fine-tuning seed (pretraining keeps 0): run-to-run spread")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS), help="tables to make (cascade needs gate)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("logs/benchmarks/pretraining"))
    parser.add_argument("--quick", action="store_true", help="tiny backbone, seconds each (a smoke run)")
    args = parser.parse_args()
    if "cascade" in args.parts and "gate" not in args.parts:
        parser.error("--parts cascade needs gate too (the cascade rows use the gates trained there)")
    for root, marker in ((args.crackforest_root, "train.txt"), (args.phinet_root, "images")):
        if not (root / marker).exists():
            raise SystemExit(f"pretraining.py: no data at '{root}' ({marker} missing); pass its --*-root")
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    precision = default_precision() if args.precision == "auto" else args.precision
    os.environ[FOLLOW_SYMLINKS_ENV] = "1"  # the SSL, gate and quick folders link to the shared photos
    if args.quick:
        args.ssl_minutes = args.synthetic_minutes = args.finetune_minutes = args.gate_minutes = 0.01
        args.phinet_root = mini_phinet(args.phinet_root, args.workdir / "phinet_quick")
        arch, encoder = "test_resnet", "tu-test_resnet"
    else:
        arch, encoder = args.arch, args.encoder
    backbones = pretrain(args, arch, precision)
    costs = {name: cost(entry, backbones) for name, entry in backbones.items()}
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPUs, {args.threads} threads, {precision}",
        "date": time.strftime("%Y-%m-%d"),
        "seed": args.seed,
        "crackforest": {},
        "gate": {},
        "cascade": {},
    }

    if "crackforest" in args.parts:
        crackforest_table(args, backbones, costs, encoder, precision, results)
    if "gate" in args.parts:
        gates = gate_table(args, backbones, costs, arch, precision, results)
        if "cascade" in args.parts:  # the cascade rows use the gates just trained (checked above)
            cascade_table(args, gates, results)
    output = args.workdir / ("pretraining.json" if args.seed == 0 else f"pretraining-seed{args.seed}.json")
    output.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwritten {output}")


def crackforest_table(args: argparse.Namespace, backbones: dict, costs: dict, encoder: str, precision: str,
                      results: dict[str, Any]) -> None:  # fmt: skip
    """Fine-tune the CrackForest U-Net from every backbone; print its table, fill ``results``."""
    print(
        f"\nCrackForest U-Net {encoder}, 72 train (20% val) / 46 test, {args.finetune_minutes:g} min fine-tuning each"
    )
    header = (
        f"{'backbone':<22}{'pretrain min':>13}{'cached':>7}{'images':>8}{'F1':>8}{'F1@2px':>8}{'IoU':>8}{'thresh':>8}"
    )
    print(header + "\n" + "-" * len(header))
    for name, (weights, info, hit) in backbones.items():
        row = crackforest(args, weights, encoder, precision)
        results["crackforest"][name] = {**row, "pretrain_minutes": costs[name], "cached": hit}
        marks, images = ("yes" if hit else "no") if weights else "-", info.get("images") or 0
        print(
            f"{name:<22}{costs[name]:>13.1f}{marks:>7}{images:>8}{row['f1']:>8.3f}{row['f1_tol']:>8.3f}"
            f"{row['iou']:>8.3f}{row['threshold']:>8.2f}"
        )


def gate_table(args: argparse.Namespace, backbones: dict, costs: dict, arch: str, precision: str,
               results: dict[str, Any]) -> dict[str, tuple[Path, float]]:  # fmt: skip
    """Fine-tune the crack gate from every backbone; print its table, fill ``results``; the gates and thresholds."""
    counts = write_gate_set(crack_data(args.phinet_root, args.quick), args.workdir / "gate_data")
    test = counts["test"]
    print(f"\nPhi-Net pixel crack gate ({arch}), {args.gate_minutes:g} min fine-tuning each, test photos {test}")
    header = f"{'backbone':<22}{'pretrain min':>13}{'acc':>8}{'bal acc':>8}{'macro-F1':>9}{'thresh':>8}"
    print(header + "\n" + "-" * len(header))
    cracked = test["damaged"] / max(test["damaged"] + test["undamaged"], 1)
    floor = {"acc": cracked, "bal_acc": 0.5, "macro_f1": (2 * cracked / (1 + cracked)) / 2, "threshold": 0.0}
    results["gate"]["always crack"] = floor
    print(f"{'always crack (floor)':<22}{'':>13}{floor['acc']:>8.3f}{0.5:>8.3f}{floor['macro_f1']:>9.3f}{'':>8}")
    gates: dict[str, tuple[Path, float]] = {}
    for name, (weights, _, _) in backbones.items():
        row, checkpoint = gate(args, weights, arch, precision, name)
        gates[name] = (checkpoint, row["threshold"])
        results["gate"][name] = {**row, "pretrain_minutes": costs[name]}
        print(
            f"{name:<22}{costs[name]:>13.1f}{row['acc']:>8.3f}{row['bal_acc']:>8.3f}{row['macro_f1']:>9.3f}"
            f"{row['threshold']:>8.2f}"
        )
    return gates


def cascade_table(args: argparse.Namespace, gates: dict[str, tuple[Path, float]], results: dict[str, Any]) -> None:
    """The cascade with every gate (and the U-Net alone); print its table, fill ``results``."""
    segmenter = quick_segmenter(args) if args.quick and not args.segmenter.is_file() else args.segmenter
    args.segmenter = segmenter
    print(f"\nCascade on Phi-Net pixel test photos, U-Net {segmenter}")
    if not segmenter.is_file():
        print(f"skipped: no U-Net checkpoint '{segmenter}'; run `python benchmarks/real_masks.py phinet-crack` first")
    else:
        header = (
            f"{'gate':<22}{'mode':<9}{'ran':>6}{'img F1':>8}{'loc.acc':>9}{'paper loc':>10}{'pix IoU':>9}{'pix F1':>8}"
        )
        print(header + "\n" + "-" * len(header))
        for name, (checkpoint, threshold) in gates.items():
            for row in cascade(args, checkpoint, threshold):
                if row["mode"] == "ungated" and name != "scratch":
                    continue  # the U-Net alone does not depend on the gate
                label = "none (U-Net alone)" if row["mode"] == "ungated" else name
                results["cascade"][f"{label} {row['mode']}"] = row
                print(
                    f"{label:<22}{row['mode']:<9}{row['ran']:>6.2f}{row['f1']:>8.3f}{row['localization']:>9.3f}"
                    f"{row['paper_localization']:>10.3f}{row['pixel_iou']:>9.3f}{row['pixel_f1']:>8.3f}"
                )


if __name__ == "__main__":
    main()
