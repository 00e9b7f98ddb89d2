"""Crack-mask samples: masks rasterised on access, photos for predict, and padded batches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

from crackcascade.data.cracks.records import MASK_IGNORE, MaskRecord
from crackcascade.data.io import read_image
from crackcascade.data.maskcheck import check_segmentation, decode_mask
from crackcascade.data.transforms import JointTransform
from crackcascade.data.types import Sample
from crackcascade.errors import DataError
from crackcascade.tiling import PAD_MULTIPLE


def load_mask(record: MaskRecord, num_classes: int) -> np.ndarray:
    """Build the ``int64 (H, W)`` class mask of a record (0 background, 1..K classes).

    COCO instances are rasterised with ``pycocotools.mask`` and unioned per class; where classes
    overlap, the one listed first in ``classes`` wins (crack is drawn over spalling). For a mask
    file see :func:`~crackcascade.data.maskcheck.decode_mask`; with one class a palette mask keeps
    only index 1, as palette masks (Phi-Net's 0/1/2) hold class indices and the other indices are
    other classes.

    Raises:
        DataError: If a mask file cannot be decoded, is lossy or holds values it would have to
            guess at (see :mod:`crackcascade.data.maskcheck`), or a segmentation is one
            pycocotools cannot rasterise.
    """
    if record.mask is not None:
        return decode_mask(record.mask, num_classes)
    if record.height is None or record.width is None:
        raise DataError(f"{record.source}: image {record.image} has no height/width; cannot rasterise")
    height, width = record.height, record.width
    out = np.zeros((height, width), dtype=np.int64)
    by_class: dict[int, list[Any]] = {}
    for instance in record.instances:
        # read_coco checked these already; a record built by hand must not reach pycocotools unchecked either.
        problem = check_segmentation(instance.segmentation, height, width)
        if problem is not None:
            raise DataError(f"{record.source}: annotation id {instance.annotation_id} of {record.image}: {problem[1]}")
        by_class.setdefault(instance.class_index, []).extend(_rles(instance.segmentation, height, width))
    for value in sorted(by_class, reverse=True):
        union = mask_utils.decode(mask_utils.merge(by_class[value])).astype(bool)
        out[union] = value
    return out


def _rles(segmentation: Any, height: int, width: int) -> list[Any]:
    if isinstance(segmentation, list):  # polygons
        return list(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):  # uncompressed RLE
        return [mask_utils.frPyObjects(segmentation, height, width)]
    counts = segmentation["counts"]
    return [{"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}]


# ---------------------------------------------------------------------------------------------
# Datasets and batching
# ---------------------------------------------------------------------------------------------


class CrackMaskDataset(Dataset[Sample]):
    """Images with class masks: ``{"image", "mask", "path", "scale"}`` samples.

    ``image`` is ``uint8 (3, H, W)``, ``mask`` is ``int64 (H, W)`` with 0 background and ``1..K``
    the classes, both after the joint transform; ``scale`` names the scale the image belongs to.

    Args:
        records: Validated records (from :func:`read_coco` or :func:`read_mask_pairs`).
        num_classes: K, the number of classes besides background.
        scale: Scale name attached to every sample.
        transform: Joint transform applied to each ``(image, mask)`` pair.
    """

    def __init__(
        self,
        records: Sequence[MaskRecord],
        num_classes: int,
        scale: str = "",
        transform: JointTransform | None = None,
    ) -> None:
        self.records = list(records)
        self.num_classes = num_classes
        self.scale = scale
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        image = read_image(record.image)
        mask = torch.from_numpy(load_mask(record, self.num_classes))
        if tuple(image.shape[-2:]) != tuple(mask.shape):
            where = record.mask or record.source
            raise DataError(
                f"{where}: mask is {mask.shape[1]}x{mask.shape[0]} but image {record.image} decodes to "
                f"{image.shape[2]}x{image.shape[1]}; fix the mask or the annotations"
            )
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return {"image": image, "mask": mask, "path": str(record.image), "scale": self.scale}


class PhotoDataset(Dataset[Sample]):
    """Unlabelled photos at native size for prediction: ``{"image", "path"}`` samples."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        return {"image": read_image(self.paths[index]), "path": str(self.paths[index])}


def pad_collate(samples: Sequence[Sample], multiple: int = PAD_MULTIPLE) -> Sample:
    """Batch samples of different sizes: pad to a common size divisible by ``multiple``.

    Images are padded with 0 and masks with :data:`MASK_IGNORE` (-1) on the bottom and right, so
    the original pixels keep their coordinates and padding never counts in a loss or a metric.

    Returns:
        ``image`` ``uint8 (B, 3, H, W)``, ``mask`` ``int64 (B, H, W)``, and the other keys as lists.
    """
    height = max(int(s["image"].shape[-2]) for s in samples)
    width = max(int(s["image"].shape[-1]) for s in samples)
    height, width = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    images = torch.zeros((len(samples), 3, height, width), dtype=torch.uint8)
    masks = torch.full((len(samples), height, width), MASK_IGNORE, dtype=torch.int64)
    for i, sample in enumerate(samples):
        h, w = sample["image"].shape[-2:]
        images[i, :, :h, :w] = sample["image"]
        masks[i, :h, :w] = sample["mask"]
    batch: Sample = {"image": images, "mask": masks}
    for key in samples[0]:
        if key not in batch:
            batch[key] = [s[key] for s in samples]
    return batch
