"""The crack-mask data module: masks for the U-Net, one dataset folder per scene scale."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from crackcascade.data.cracks import (
    DEFAULT_CLASSES,
    CrackMaskDataset,
    MaskFormat,
    MaskRecord,
    PhotoDataset,
    class_lookup,
    pad_collate,
    read_mask_splits,
)
from crackcascade.data.datamodules.base import (
    LoaderDataModule,
    carve_splits,
    check_batch_options,
    check_fractions,
    eval_sampler,
    predict_photos,
)
from crackcascade.data.transforms import segmentation_transform
from crackcascade.data.types import Sample
from crackcascade.errors import ConfigError, DataError
from crackcascade.labels import SCALES, normalize_name


class CrackMaskDataModule(LoaderDataModule):
    """Crack (and other damage) masks for the U-Net, one dataset folder per scene scale.

    ``root/<scale>/`` holds, for each chosen scale, a COCO export or image/mask pairs in one of
    three layouts (one dataset; ``train/ val/ test/`` folders; or ``train.txt`` / ``test.txt``
    id lists), see :mod:`crackcascade.data.cracks`. With a single scale, ``root`` may also be the
    dataset folder itself (``--data.root crackforest --data.scales [pixel]``).

    Training draws shuffled batches from all chosen scales together; validation and test give one
    loader per scale, in the order of :attr:`eval_scales`, so the model can log each scale by
    ``dataloader_idx``. Validation is carved from train where a scale has none, and test too when
    ``test_fraction`` > 0 and the scale has none; both are seeded per scale, test first, so a
    change of ``val_fraction`` leaves the test images unchanged.

    Samples are ``{"image": uint8 (3, H, W), "mask": int64 (H, W), "path", "scale"}`` with mask
    values 0 (background) and ``1..K`` (``classes``). Training crops ``image_size`` squares;
    evaluation keeps native resolution, and batches are padded to a multiple of 32 with image 0
    and mask -1 (:data:`~crackcascade.data.cracks.MASK_IGNORE`), which losses and metrics must
    ignore. Predict yields ``{"image", "path"}`` one photo at a time at native size.

    Args:
        root: Folder holding one sub-folder per scale (or, for one scale, the dataset itself).
        scales: Scene scales to load (:data:`~crackcascade.labels.SCALES`).
        classes: Mask classes; value ``i`` is ``classes[i - 1]``. COCO categories match by name.
        format: ``coco``, ``masks`` (image/mask pairs) or ``auto`` (COCO where both exist).
        image_size: Side of the square training crops.
        scale_range: Training zoom: crop-window area over ``image_size**2`` (see
            :class:`~crackcascade.data.transforms.RandomScaledCrop`).
        batch_size: Training crops per step.
        eval_batch_size: Images per validation/test batch (1 avoids padding images of unequal size).
        val_fraction: Fraction of train carved out for validation where a scale has no val split.
        test_fraction: Fraction carved out for test where a scale has no test split (0: none).
        seed: Seed of the carved splits.
        augment: Apply training augmentation (zoom, flips, 90-degree turns, colour jitter).
        predict_root: Folder of photos for ``predict`` (searched recursively).
        resize: Resize training and validation images and masks to ``resize`` x ``resize``
            instead of cropping (training) and keeping native size (validation), as the paper did
            (256); None keeps crops and native resolution.
        test_resize: Resize test images and masks to this side (the paper tested Phi-Net photos
            at 224 x 224); None tests at native resolution.
        **loader_options: ``num_workers`` (per loader), ``pin_memory``, ``prefetch_factor`` and
            ``on_error`` of :class:`LoaderDataModule`.
    """

    def __init__(
        self,
        root: str = "data/cracks",
        scales: Sequence[str] = (SCALES[0],),
        classes: Sequence[str] = DEFAULT_CLASSES,
        format: MaskFormat = "auto",
        image_size: int = 256,
        scale_range: tuple[float, float] = (0.5, 1.0),
        batch_size: int = 8,
        eval_batch_size: int = 1,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        seed: int = 0,
        augment: bool = True,
        predict_root: str | None = None,
        resize: int | None = None,
        test_resize: int | None = None,
        **loader_options: Any,
    ) -> None:
        super().__init__(**loader_options)
        check_batch_options(image_size, batch_size=batch_size, eval_batch_size=eval_batch_size)
        for name, side in (("resize", resize), ("test_resize", test_resize)):
            if side is not None and side < 32:
                raise ConfigError(f"data.{name} must be at least 32 (pixels) or null, got {side}")
        check_fractions(val_fraction=val_fraction, test_fraction=test_fraction)
        low, high = scale_range
        if not 0.0 < low <= high:
            raise ConfigError(f"data.scale_range must be (low, high) with 0 < low <= high, got {list(scale_range)}")
        if format not in ("auto", "coco", "masks"):
            raise ConfigError(f"data.format must be auto, coco or masks, got {format!r}")
        class_lookup(classes)  # validates: not empty, no duplicates
        # Plain lists, however they were given: Lightning refuses to log a run whose model and data
        # hparams share a key with values of different types, and the segmenter saves a list.
        classes = [classes] if isinstance(classes, str) else [str(c) for c in classes]
        scales = list(_resolve_scales(scales))
        self.save_hyperparameters()
        self.root = Path(root)
        self.scales: tuple[str, ...] = tuple(scales)
        self.classes: tuple[str, ...] = tuple(classes)
        self.format = format
        self.image_size = image_size
        self.scale_range = (float(low), float(high))
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.augment = augment
        self.predict_root = predict_root
        self.resize, self.test_resize = resize, test_resize
        self.eval_scales: list[str] = list(self.scales)
        self._index: dict[str, dict[str, list[MaskRecord]]] | None = None
        self.datasets: dict[str, list[Dataset[Sample]]] = {}

    @property
    def num_classes(self) -> int:
        """Number of mask values: background plus ``classes``."""
        return len(self.classes) + 1

    def scale_folder(self, scale: str) -> Path:
        """Folder of one scale: ``root/<scale>``, or ``root`` itself for a single scale without one."""
        if not self.root.is_dir():
            raise DataError(f"data.root '{self.root}' does not exist or is not a folder; set --data.root")
        children = {normalize_name(c.name): c for c in sorted(self.root.iterdir()) if c.is_dir()}
        if normalize_name(scale) in children:
            return children[normalize_name(scale)]
        # A lone dataset folder stands for the one scale asked for, unless the root is laid out by scale.
        if len(self.scales) == 1 and not any(normalize_name(s) in children for s in SCALES):
            return self.root
        raise DataError(
            f"data.root '{self.root}': no '{scale}' folder; add it or choose data.scales among the folders there"
        )

    def index(self) -> dict[str, dict[str, list[MaskRecord]]]:
        """Read (once) every scale's splits, with validation and test carved; scale -> split -> records."""
        if self._index is None:
            index: dict[str, dict[str, list[MaskRecord]]] = {}
            skipped: Counter[str] = Counter()
            examples: dict[str, str] = {}
            for scale in self.scales:
                splits = read_mask_splits(self.scale_folder(scale), self.classes, self.format, self.on_error)
                for records in splits.values():
                    skipped.update(records.skipped)
                    examples = {**records.examples, **examples}
                index[scale] = self._carve(scale, {split: list(records) for split, records in splits.items()})
            if skipped:
                kinds = "; ".join(f"{count} {kind}" for kind, count in sorted(skipped.items()))
                top = skipped.most_common(1)[0][0]
                example = f"; e.g. {examples[top]}" if top in examples else ""
                rank_zero_warn(
                    f"data.root '{self.root}': skipped {sum(skipped.values())} bad entries ({kinds}){example}"
                )
            self._index = index
        return self._index

    def _carve(self, scale: str, splits: dict[str, list[MaskRecord]]) -> dict[str, list[MaskRecord]]:
        wanted = {"test": self.test_fraction, "val": self.val_fraction}
        fractions = {split: fraction for split, fraction in wanted.items() if split not in splits}
        carved = carve_splits(splits.get("train", []), fractions, self.seed, SCALES.index(scale))
        if "train" not in splits:
            del carved["train"]
        return {**splits, **carved}

    def setup(self, stage: str) -> None:
        """Build the datasets a stage needs (``fit``, ``validate``, ``test`` or ``predict``)."""
        if stage == "predict":
            self.datasets["predict"] = [self._predict_dataset()]
            return
        index = self.index()
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}[stage]
        for split in needed:
            missing = [scale for scale in self.scales if not index[scale].get(split)]
            if split == "val" and stage == "fit" and len(missing) == len(self.scales) and self.val_fraction == 0:
                self.datasets.pop("val", None)  # no validation asked for: train only
                continue
            if missing:
                folder = self.scale_folder(missing[0])
                hint = {
                    "train": "add train/ or images to it",
                    "val": "add val/ or val.txt, or set data.val_fraction > 0",
                    "test": "add test/ or test.txt, or set data.test_fraction > 0",
                }[split]
                raise DataError(f"{folder}: no {split} images for scale '{missing[0]}'; {hint}")
            transform = segmentation_transform(
                self.image_size,
                train=split == "train",
                augment=self.augment,
                scale_range=self.scale_range,
                resize=self.test_resize if split == "test" else self.resize,
            )
            self.datasets[split] = [
                CrackMaskDataset(index[scale][split], len(self.classes), scale, transform) for scale in self.scales
            ]

    def _predict_dataset(self) -> Dataset[Sample]:
        return PhotoDataset(predict_photos(self.predict_root))

    def _loader(
        self, dataset: Dataset[Sample], batch_size: int, shuffle: bool, collate: Any, split: str | None = None
    ) -> DataLoader:
        what = f"{split} split of scale '{getattr(dataset, 'scale', '')}'"
        sampler = eval_sampler(self, dataset, what) if split is not None else None
        return self.loader(dataset, batch_size, shuffle, collate, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        """One shuffled loader over the training images of every chosen scale."""
        dataset: Dataset[Sample] = ConcatDataset(self.datasets["train"])
        return self._loader(dataset, self.batch_size, True, pad_collate)

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per scale (see :attr:`eval_scales`); empty when there is no validation."""
        datasets = self.datasets.get("val", [])
        return [self._loader(ds, self.eval_batch_size, False, pad_collate, "val") for ds in datasets]

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per scale (see :attr:`eval_scales`)."""
        return [self._loader(ds, self.eval_batch_size, False, pad_collate, "test") for ds in self.datasets["test"]]

    def predict_dataloader(self) -> DataLoader:
        """Photos under ``predict_root``, one at a time at native size."""
        return self._loader(self.datasets["predict"][0], 1, False, None)


def _resolve_scales(scales: Sequence[str]) -> tuple[str, ...]:
    """Canonical scale names in :data:`SCALES` order, without duplicates."""
    if isinstance(scales, str):
        scales = [scales]
    if not scales:
        raise ConfigError(f"data.scales is empty; choose from: {', '.join(SCALES)}")
    by_key = {normalize_name(s): s for s in SCALES}
    unknown = [s for s in scales if normalize_name(str(s)) not in by_key]
    if unknown:
        raise ConfigError(f"data.scales: unknown scale {unknown[0]!r}; choose from: {', '.join(SCALES)}")
    chosen = {by_key[normalize_name(str(s))] for s in scales}
    return tuple(s for s in SCALES if s in chosen)
