"""CrackForest: a plain 60-line PyTorch U-Net loop vs crackcascade, same time budget, one run.

Both train from scratch (no pretrained weights) on the 72 training photos of CrackForest and are
scored on its 46 test photos with the same counter (crack-class F1 strict and with a 2 px
tolerance, IoU, precision, recall):

* baseline: what a user writes by hand: smp Unet(resnet18), AdamW 1e-3, BCE (pos_weight 5) +
  Dice, random 256x256 crops with flips, batch 8, float32, for ``--baseline-minutes``; its
  threshold is picked on the *test* set (optimistic, as the figure it is compared with);
* ours: ``CrackMaskDataModule`` + ``CrackSegmenter`` with the same encoder, loss, learning rate
  and batch, plus what the framework brings: 90-degree turn and colour augmentation (no zoom:
  resampling 1-5 px crack masks nearest-neighbour makes their drawn width jagged and wrong at
  native scale), channels-last bf16 mixed precision (``--precision``; ``auto`` takes bf16 where
  the CPU or GPU supports it), and a cosine learning rate annealed over the time budget
  (:class:`crackcascade.callbacks.TimeBudget`, ``--minutes``), so the schedule ends at zero on
  any machine; validation carved from train (``--val-fraction``) picks the threshold. The trained
  network is scored twice: as is, and with flip test-time augmentation (``tta``, its threshold
  picked on validation again).

    python benchmarks/crackforest.py                    # the README's figures (15 vs 28 min)
    python benchmarks/crackforest.py --quick            # a smoke run of seconds

The data folder defaults to ``../shared/data/crackforest`` beside the repository.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F  # noqa: N812
from _common import quiet_trainer, validated_test_row
from PIL import Image

from crackcascade import CrackMaskDataModule, CrackSegmenter
from crackcascade.callbacks import TimeBudget
from crackcascade.hardware import default_precision
from crackcascade.metrics.segmentation import (
    SegmentationMetrics,
    best_threshold_index,
    f1_curve,
    segmentation_scores,
)

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "crackforest"


def load_split(root: Path, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 image (3, H, W), int64 mask (H, W)) pairs of one CrackForest split."""
    ids = (root / f"{split}.txt").read_text().split()
    pairs = []
    for stem in ids:
        image = np.asarray(Image.open(root / "images" / f"{stem}.jpg").convert("RGB"))
        mask = np.asarray(Image.open(root / "masks" / f"{stem}.png")) > 0
        pairs.append((torch.from_numpy(image.copy()).permute(2, 0, 1), torch.from_numpy(mask.astype(np.int64))))
    return pairs


def random_crops(pairs: list, size: int, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random crops with random flips, the plain loop's augmentation."""
    images, masks = [], []
    for i in rng.integers(0, len(pairs), batch):
        image, mask = pairs[i]
        top = rng.integers(0, image.shape[1] - size + 1)
        left = rng.integers(0, image.shape[2] - size + 1)
        image, mask = image[:, top : top + size, left : left + size], mask[top : top + size, left : left + size]
        if rng.random() < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        if rng.random() < 0.5:
            image, mask = image.flip(-2), mask.flip(-2)
        images.append(image)
        masks.append(mask)
    return torch.stack(images).float() / 255, torch.stack(masks)


def baseline(train: list, test: list, seconds: float, crop: int, encoder: str) -> dict[str, float]:
    """The plain PyTorch loop; returns scores on test at the test-best threshold."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = smp.Unet(encoder, encoder_weights=None, classes=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dice = smp.losses.DiceLoss("binary")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    start, steps = time.perf_counter(), 0
    model.train()
    while (elapsed := time.perf_counter() - start) < seconds:
        images, masks = random_crops(train, crop, 8, rng)
        logits = model((images - mean) / std)
        target = masks[:, None].float()
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(5.0)) + dice(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    metric = SegmentationMetrics(num_classes=1, tolerance=2)
    model.eval()
    with torch.no_grad():
        for image, mask in test:
            height, width = image.shape[-2:]
            padded = F.pad(image[None].float() / 255, (0, -width % 32, 0, -height % 32), mode="reflect")
            probabilities = torch.sigmoid(model((padded - mean) / std))[..., :height, :width]
            metric.update(probabilities, mask[None])
    counts = metric.counts()
    index = best_threshold_index(f1_curve(counts)[None], metric.thresholds)
    scores = {k: float(v[0]) for k, v in segmentation_scores(counts, index).items()}
    return {**scores, "threshold": float(metric.thresholds[index[0]]), "steps": steps, "minutes": elapsed / 60}


def ours(
    root: Path, seconds: float, val_fraction: float, precision: str, crop: int, encoder: str, workdir: Path
) -> dict[str, dict[str, float]]:
    """crackcascade's data module and U-Net under Lightning, threshold picked on validation.

    Returns:
        Scores without and with flip test-time augmentation (keys ``""`` and ``" + flip TTA"``).
    """
    pl.seed_everything(0, verbose=False)
    data = CrackMaskDataModule(
        root=str(root),
        scales=["pixel"],
        image_size=crop,
        scale_range=(1.0, 1.0),
        batch_size=8,
        val_fraction=val_fraction,
    )
    model = CrackSegmenter(
        encoder_name=encoder,
        loss="bce+dice",
        pos_weight=5.0,
        optimizer="adamw",
        lr=1e-3,
        scheduler="none",
        tolerance=2,
        channels_last=True,
    )
    trainer = quiet_trainer(
        max_epochs=-1,
        # Validation between epochs would only spend the budget: the threshold is picked once, after training.
        check_val_every_n_epoch=1_000_000,
        precision=precision,
        default_root_dir=str(workdir),
        callbacks=[TimeBudget(minutes=seconds / 60)],
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    minutes = (time.perf_counter() - start) / 60
    row = validated_test_row(trainer, model, data)
    results = {"": {**row, "steps": trainer.global_step, "minutes": minutes}}
    # The same network with flip test-time augmentation; its threshold is picked on val again.
    model.hparams["tta"] = True
    row = validated_test_row(trainer, model, data)
    results[" + flip TTA"] = {**row, "steps": trainer.global_step, "minutes": minutes}
    return results


def main() -> None:
    """Run both methods with the same budget and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--baseline-minutes", type=float, default=15.0, help="training time of the plain loop")
    parser.add_argument("--minutes", type=float, default=28.0, help="ours: training time (the cosine's length)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="ours: share of train that picks the threshold")
    parser.add_argument("--precision", choices=("auto", "32", "bf16-mixed"), default="auto", help="ours")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--quick", action="store_true", help="seconds each, tiny encoder, 64 px crops (a smoke run)")
    parser.add_argument("--workdir", type=Path, default=Path("logs/benchmarks/crackforest"))
    args = parser.parse_args()
    if not (args.root / "train.txt").is_file():
        raise SystemExit(f"crackforest.py: no CrackForest data at '{args.root}' (train.txt missing); pass --root")
    torch.set_num_threads(args.threads)
    precision = args.precision
    if precision == "auto":
        precision = default_precision()
    if args.quick:
        base_seconds, seconds, crop, encoder = 6.0, 6.0, 64, "tu-test_resnet"
    else:
        base_seconds, seconds, crop, encoder = args.baseline_minutes * 60, args.minutes * 60, 256, args.encoder
    train, test = load_split(args.root, "train"), load_split(args.root, "test")
    results = {"plain loop, fp32": baseline(train, test, base_seconds, crop, encoder)}
    for suffix, row in ours(args.root, seconds, args.val_fraction, precision, crop, encoder, args.workdir).items():
        results[f"crackcascade, {precision}{suffix}"] = row
    print(f"CrackForest, {len(train)} train / {len(test)} test photos, U-Net {encoder} from scratch, "
          f"{args.threads} threads; threshold picked on test for the plain loop, on val for crackcascade")  # fmt: skip
    header = (
        f"{'method':<38}{'min':>6}{'steps':>7}{'thresh':>8}{'F1':>8}{'F1@2px':>8}{'IoU':>8}{'prec':>8}{'recall':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<38}{r['minutes']:>6.1f}{int(r['steps']):>7}{r['threshold']:>8.2f}{r['f1']:>8.3f}"
            f"{r['f1_tol']:>8.3f}{r['iou']:>8.3f}{r['precision']:>8.3f}{r['recall']:>8.3f}"
        )


if __name__ == "__main__":
    main()
