"""Records of crack-mask datasets: one image and how to build its mask, and what a reader skipped."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from crackcascade.data.maskcheck import lossy_format
from crackcascade.data.phinet import SPLITS
from crackcascade.data.types import OnError
from crackcascade.errors import ConfigError, DataError
from crackcascade.labels import CRACK, IGNORE_INDEX, normalize_name

logger = logging.getLogger(__name__)

MaskFormat = Literal["auto", "coco", "masks"]
"""Dataset format of a folder: ``coco``, ``masks`` (image/mask pairs), or ``auto`` to detect it."""

DEFAULT_CLASSES: tuple[str, ...] = (CRACK,)
"""Classes of a crack-only mask (class index 1; 0 is background)."""

ANNOTATIONS = "annotations.json"
IMAGES_DIR = "images"
MASKS_DIR = "masks"
ID_LISTS: dict[str, str] = {split: f"{split}.txt" for split in SPLITS}
"""Id-list file of each split, next to a single dataset."""

MASK_IGNORE = IGNORE_INDEX
"""Mask value of padding added by :func:`pad_collate`; losses and metrics must ignore it."""

_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})


# Kinds of problem that both readers count under one name.
UNREADABLE = "images that cannot be read"
ESCAPING = "files that resolve outside the dataset folder"


@dataclass(frozen=True)
class CocoInstance:
    """One validated COCO annotation: its class and its polygons or RLE.

    Attributes:
        annotation_id: ``id`` of the annotation in ``annotations.json``.
        class_index: Index of the class in ``classes`` plus 1 (0 is background).
        segmentation: A list of polygons (flat ``x, y`` lists) or an RLE dict.
    """

    annotation_id: Any
    class_index: int
    segmentation: Any


@dataclass(frozen=True)
class MaskRecord:
    """One image and how to build its class mask: a mask file or COCO instances.

    Attributes:
        image: Image file.
        height: Image height as decoded (EXIF orientation applied), if known.
        width: Image width as decoded, if known.
        mask: Mask file of a pair; None for COCO records.
        instances: COCO instances of the image (empty: crack-free); unused with a mask file.
        source: ``annotations.json`` of a COCO record (named in errors); None for pairs.
        image_id: COCO image ``id``; None for pairs.
    """

    image: Path
    height: int | None = None
    width: int | None = None
    mask: Path | None = None
    instances: tuple[CocoInstance, ...] = ()
    source: Path | None = None
    image_id: Any = None

    @property
    def id(self) -> str:
        """The image's file stem, as used in ``train.txt`` / ``test.txt`` id lists."""
        return self.image.stem


class RecordList(list[MaskRecord]):
    """Records read from one dataset folder, with what was skipped.

    Attributes:
        skipped: Number of skipped entries per kind of problem (``on_error="skip"``).
        skipped_ids: File stems of images skipped, so id lists naming them are not reported twice.
        source: The file or folder the records were read from.
        examples: The first message of each kind of problem skipped, naming the file.
    """

    def __init__(
        self,
        records: Iterable[MaskRecord] = (),
        skipped: dict[str, int] | None = None,
        skipped_ids: Iterable[str] = (),
        source: Path | None = None,
    ) -> None:
        super().__init__(records)
        self.skipped: dict[str, int] = dict(skipped or {})
        self.skipped_ids: set[str] = set(skipped_ids)
        self.source = source
        self.examples: dict[str, str] = {}

    @property
    def n_skipped(self) -> int:
        """Total number of skipped entries."""
        return sum(self.skipped.values())


class Problems:
    """Raise each problem as a one-line :class:`DataError`, or count it under its kind."""

    def __init__(self, source: Path, on_error: OnError) -> None:
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"data.on_error must be 'raise' or 'skip', got {on_error!r}")
        self.source = source
        self.on_error = on_error
        self.counts: Counter[str] = Counter()
        self.ids: set[str] = set()
        self.examples: dict[str, str] = {}

    def report(self, kind: str, message: str, stem: str | None = None) -> None:
        """Raise ``message``, or count it under ``kind`` (and the image ``stem``, if given, as skipped)."""
        if self.on_error == "raise":
            raise DataError(message)
        self.counts[kind] += 1
        self.examples.setdefault(kind, message)
        if stem is not None:
            self.ids.add(stem)

    def result(self, records: Iterable[MaskRecord]) -> RecordList:
        """Log one warning line per kind skipped and return ``records`` with the counts."""
        for kind, count in sorted(self.counts.items()):
            logger.warning("%s: skipped %d: %s", self.source, count, kind)
        out = RecordList(records, dict(self.counts), self.ids, self.source)
        out.examples = dict(self.examples)
        return out


def class_lookup(classes: Sequence[str]) -> dict[str, int]:
    """Map each normalised class name to its mask value (1-based; 0 is background).

    Raises:
        ConfigError: If ``classes`` is empty or names a class twice.
    """
    if isinstance(classes, str):
        classes = [classes]
    if not classes:
        raise ConfigError("data.classes is empty; list the mask classes, e.g. [crack] or [crack, spalling]")
    lookup: dict[str, int] = {}
    for index, name in enumerate(classes, start=1):
        key = normalize_name(str(name))
        if key in lookup:
            raise ConfigError(f"data.classes names {name!r} twice; list each class once")
        lookup[key] = index
    return lookup


def image_size(path: Path) -> tuple[int, int]:
    """Return ``(height, width)`` of an image as :func:`~crackcascade.data.io.read_image` decodes it.

    Only the header is read. EXIF orientations 5-8 swap the sides, as the decoder rotates them.
    """
    with Image.open(path) as img:
        width, height = img.size
        if img.getexif().get(_ORIENTATION_TAG, 1) in _TRANSPOSING_ORIENTATIONS:
            width, height = height, width
    return height, width


def mask_header(path: Path) -> tuple[int, int, str, str | None]:
    """``(height, width, mode, lossy format or None)`` of a mask file from its header (masks have no EXIF rotation)."""
    with Image.open(path) as img:
        width, height = img.size
        return height, width, img.mode, lossy_format(img, path)
