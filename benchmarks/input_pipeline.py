"""Input pipeline: decoded, augmented training images per second per worker, torchvision baseline vs crackcascade.

Sources, written to ``--workdir`` by the synthetic Phi-Net writer (one task, ``damage_state``):

* JPEG folders at 224x224, Phi-Net's own size, and at ``--photo-size`` (larger photos);
* PHI Challenge arrays (``X_train.npy``, 224x224).

Baseline: what a plain PyTorch user writes, ``torchvision.datasets.ImageFolder`` with PIL
transforms ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``, ``ColorJitter(0.2, 0.2, 0.1)``,
``ToTensor``, ``Normalize`` (float32 batches); for the arrays, the whole array loaded with
``np.load`` and each image through the same PIL transforms. crackcascade: the training loader
``PhiNetDataModule`` builds (PIL decode with the JPEG draft mode, which decodes large photos at a
reduced scale in the DCT domain; resize, flip and colour jitter on uint8 tensors; uint8 batches,
normalized by the model on the device; arrays memory-mapped). The two pipelines augment
differently (random crop vs whole-image resize), as each library's recipe does.

"per worker" rows run the loader in this process with one thread (what each DataLoader worker
process is given); the ``--workers`` rows run real worker processes (persistent, with pinned memory
when CUDA is there). The last column is how many workers at the measured per-worker rate feed
``--target-images-per-s`` training images per second (the GPU training figure, passed in).

    python benchmarks/input_pipeline.py                 # the README's table
    python benchmarks/input_pipeline.py --quick         # small set (a smoke run)
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T  # noqa: N812
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from crackcascade import PhiNetDataModule
from crackcascade.data.io import read_image
from crackcascade.models.multitask import collate_tasks
from crackcascade.synthetic import write_phinet

TASK = "damage_state"
SIZE = 224
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def baseline_transform() -> T.Compose:
    """torchvision's ImageNet training recipe in PIL, with Phi-Net's mild colour jitter."""
    return T.Compose(
        [
            T.RandomResizedCrop(SIZE),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )


class InMemoryArrays(Dataset):
    """The baseline for PHI arrays: ``np.load`` the whole array, PIL transforms per image."""

    def __init__(self, root: Path) -> None:
        self.images = np.load(root / TASK / "X_train.npy")
        self.labels = np.load(root / TASK / "y_train.npy")
        self.transform = baseline_transform()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def write_sources(workdir: Path, n: int, photo_size: int) -> dict[str, tuple[Path, str]]:
    """Write (once) the three sources; label -> (root, format)."""
    sources = {
        f"JPEG {SIZE}x{SIZE}": (workdir / f"jpeg_{SIZE}", "folders", SIZE),
        f"JPEG {photo_size}x{photo_size}": (workdir / f"jpeg_{photo_size}", "folders", photo_size),
        f"PHI arrays {SIZE}x{SIZE}": (workdir / "arrays", "arrays", SIZE),
    }
    for root, fmt, size in sources.values():
        marker = root / f".written-{n}"
        if not marker.is_file():
            write_phinet(root, format=fmt, n_train=n, n_test=0, size=size, tasks=[TASK], workers=2)
            marker.touch()
    return {label: (root, fmt) for label, (root, fmt, _) in sources.items()}


def baseline_loader(root: Path, fmt: str, batch: int, workers: int) -> DataLoader:
    """The baseline DataLoader over one source."""
    dataset: Dataset = (
        ImageFolder(str(root / TASK / "train"), transform=baseline_transform())
        if fmt == "folders"
        else InMemoryArrays(root)
    )
    return DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )


def ours_loader(root: Path, fmt: str, batch: int, workers: int) -> Iterable:
    """crackcascade's training loader over one source, as ``fit`` builds it."""
    data = PhiNetDataModule(
        root=str(root), tasks=[TASK], format=fmt, image_size=SIZE, batch_size=batch, num_workers=workers, val_fraction=0
    )
    data.setup("fit")
    return data.train_dataloader()


def images_of(batch: object) -> torch.Tensor:
    """The image tensor of a baseline ``(images, labels)`` batch or a crackcascade CombinedLoader item."""
    if isinstance(batch, list):  # torchvision: [images, labels]
        return batch[0]
    merged, _, _ = batch  # CombinedLoader: (batch, batch_idx, dataloader_idx)
    return collate_tasks(merged)["image"]


def images_per_second(loader: Iterable, images: int) -> float:
    """Images per second over ``images`` images after one warm-up batch (worker start-up not counted)."""
    iterator = iter(loader)
    next(iterator)
    done, start = 0, time.perf_counter()
    while done < images:
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            continue
        done += len(images_of(batch))
    return done / (time.perf_counter() - start)


def draft_difference(folder: Path, count: int) -> tuple[float, float]:
    """Mean and largest absolute difference (grey levels) between draft and full decodes, resized to 224."""
    resize = v2.Resize((SIZE, SIZE), antialias=True)
    means, largest = [], 0.0
    for path in sorted(folder.rglob("*.jpg"))[:count]:
        full = resize(read_image(path)).float()
        drafted = resize(read_image(path, min_size=SIZE)).float()
        difference = (full - drafted).abs()
        means.append(float(difference.mean()))
        largest = max(largest, float(difference.max()))
    return float(np.mean(means)), largest


def main() -> None:
    """Write the sources, measure every pipeline, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="images timed per row")
    parser.add_argument("--set-size", type=int, default=256, help="images written per source")
    parser.add_argument("--photo-size", type=int, default=1024, help="side of the large JPEG photos")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the multi-worker rows (0: none)")
    parser.add_argument("--target-images-per-s", type=float, default=1500.0, help="training throughput to feed")
    parser.add_argument("--workdir", type=Path, default=Path("logs/benchmarks/input_pipeline"))
    parser.add_argument("--quick", action="store_true", help="small set and photos (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.set_size, args.photo_size, args.batch_size = 32, 32, 448, 16
    torch.set_num_threads(1)  # one worker's share; DataLoader workers run with one thread too
    sources = write_sources(args.workdir, args.set_size, args.photo_size)
    print(
        f"{args.images} images per row, batch {args.batch_size}, output {SIZE}x{SIZE}; workers 0 = one worker's "
        f"share (this process, 1 thread); target {args.target_images_per_s:.0f} images/s"
    )
    header = f"{'source':<20}{'pipeline':<34}{'workers':>8}{'images/s':>10}{'vs base':>9}{'workers for target':>20}"
    print(header)
    print("-" * len(header))
    worker_counts = [0] + ([args.workers] if args.workers > 0 else [])
    for label, (root, fmt) in sources.items():
        base_name = "ImageFolder + PIL" if fmt == "folders" else "np.load + PIL"
        rates: dict[tuple[str, int], float] = {}
        for workers in worker_counts:
            for name, build in ((f"torchvision {base_name}", baseline_loader), ("crackcascade", ours_loader)):
                rate = images_per_second(build(root, fmt, args.batch_size, workers), args.images)
                rates[name, workers] = rate
                base = rates[f"torchvision {base_name}", workers]
                needed = f"{math.ceil(args.target_images_per_s / rate):>20d}" if workers == 0 else ""
                print(f"{label:<20}{name:<34}{workers:>8}{rate:>10.0f}{rate / base:>8.2f}x{needed}", flush=True)
    mean, largest = draft_difference(sources[f"JPEG {args.photo_size}x{args.photo_size}"][0], 8)
    print(
        f"JPEG draft decode of the {args.photo_size}px photos vs a full decode, both resized to {SIZE}: "
        f"mean |difference| {mean:.2f} grey levels, largest {largest:.0f}"
    )


if __name__ == "__main__":
    main()
