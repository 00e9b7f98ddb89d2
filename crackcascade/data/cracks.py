"""Crack-mask data: COCO instance annotations or image/mask pairs, read into lazily rasterised records.

Two dataset formats are read, each from one folder:

* **COCO** (as exported by COCO Annotator): ``folder/annotations.json`` and the images, each
  ``file_name`` relative to ``folder`` or to ``folder/images``. Polygons and RLE (compressed or
  uncompressed counts, ``iscrowd`` 0 or 1) are accepted; all instances of a class in an image
  are unioned; an image without annotations is crack-free (an all-zero mask).
* **Mask pairs**: ``folder/images/*`` and ``folder/masks/*`` paired by file stem (a mask may
  have any lossless image suffix, usually ``.png``; JPEG and lossy WebP masks are refused). With
  one class a grayscale mask holds 0 and 255 (or 1), an RGB mask black and one crack colour, and
  a palette mask the crack at index 1 (Phi-Net's 0/1/2: indices 2-254 are other classes); with
  several classes the mask holds class indices ``1..K`` (palette PNGs are read by palette index,
  grayscale by value). See :mod:`crackcascade.data.maskcheck` for what is refused rather than guessed.

A *scale folder* (``root/<scale>/``, one per scale of :data:`crackcascade.labels.SCALES`) holds
either

1. ONE dataset (COCO or pairs), from which validation (and test, if asked) are carved with a seed;
2. ``train/``, ``val/``, ``test/`` sub-folders (also ``valid``, ``validation``, ``training``,
   ``testing``), each a dataset; a missing validation split is carved from train; or
3. one dataset with id lists next to it, ``train.txt`` / ``val.txt`` / ``test.txt`` (file
   stems, one per line), as in CrackForest. Without ``train.txt`` train is every image not in
   another list; with it, images in no list are left out.

A folder holding both ``annotations.json`` and ``images/`` + ``masks/`` is read as COCO by
``format="auto"``.

Readers validate at read time what is cheap (keys, unique image, annotation and category ids,
paths, symlinks out of the dataset folder, polygons within the image and RLE strings that
decode to the image's size, so that pycocotools never sees input it would hang or crash on, image
and mask sizes and mask formats from file headers) and fail with one line naming
``annotations.json`` or the file and the image or annotation id. With ``on_error="skip"`` the
bad entry is skipped instead, counted in :attr:`RecordList.skipped` and logged as one warning
line per kind. Masks are rasterised only in :meth:`CrackMaskDataset.__getitem__`; problems that
only decoding reveals (a mask value above K, values other than 0/1/255 in a one-class mask, a
crack drawn in the alpha channel, a truncated file) raise there, or with the data module's
``on_error="skip"`` leave the sample out of its batch, counted at the end of the epoch (see
:mod:`crackcascade.data.sampling`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from crackcascade.data.io import FOLLOW_SYMLINKS_ENV, escape_message, is_image_file, read_image, scan_images
from crackcascade.data.maskcheck import INDEX_MODES, check_segmentation, decode_mask, lossy_format, lossy_message
from crackcascade.data.phinet import SPLIT_ALIASES, SPLITS
from crackcascade.data.transforms import JointTransform
from crackcascade.errors import ConfigError, DataError
from crackcascade.labels import CRACK, IGNORE_INDEX, normalize_name

logger = logging.getLogger(__name__)

MaskFormat = Literal["auto", "coco", "masks"]
OnError = Literal["raise", "skip"]
Sample = dict[str, Any]

DEFAULT_CLASSES: tuple[str, ...] = (CRACK,)
"""Classes of a crack-only mask (class index 1; 0 is background)."""

ANNOTATIONS = "annotations.json"
IMAGES_DIR = "images"
MASKS_DIR = "masks"
ID_LISTS: dict[str, str] = {split: f"{split}.txt" for split in SPLITS}
"""Id-list file of each split, next to a single dataset."""

MASK_IGNORE = IGNORE_INDEX
"""Mask value of padding added by :func:`pad_collate`; losses and metrics must ignore it."""

PAD_MULTIPLE = 32
"""Batches are padded to a multiple of this (a U-Net halves the resolution five times)."""

_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})


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


class _Problems:
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
        if self.on_error == "raise":
            raise DataError(message)
        self.counts[kind] += 1
        self.examples.setdefault(kind, message)
        if stem is not None:
            self.ids.add(stem)

    def result(self, records: Iterable[MaskRecord]) -> RecordList:
        for kind, count in sorted(self.counts.items()):
            logger.warning("%s: skipped %d: %s", self.source, count, kind)
        out = RecordList(records, dict(self.counts), self.ids, self.source)
        out.examples = dict(self.examples)
        return out


# ---------------------------------------------------------------------------------------------
# Classes and image headers
# ---------------------------------------------------------------------------------------------


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


def _header(path: Path) -> tuple[int, int, str, str | None]:
    """``(height, width, mode, lossy format or None)`` of a mask file from its header (masks have no EXIF rotation)."""
    with Image.open(path) as img:
        width, height = img.size
        return height, width, img.mode, lossy_format(img, path)


# ---------------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------------

_IMAGE_KEYS = ("id", "file_name", "height", "width")
_ANNOTATION_KEYS = ("id", "image_id", "category_id", "segmentation")
_CATEGORY_KEYS = ("id", "name")

_BAD_KEYS = "entries missing a required key (with their images)"
_BAD_PATH = "images whose file_name escapes the folder"
_MISSING = "images whose file is missing"
_UNREADABLE = "images that cannot be read"
_BAD_SIZE = "images whose size differs from annotations.json"
_BAD_SIDE = "images whose height or width is not a whole number"
_DUPLICATE = "images with a duplicate id"
_DUPLICATE_ANNOTATION = "annotations with a duplicate id (with their images)"
_DUPLICATE_CATEGORY = "categories with a duplicate id (with the images they label)"
_ESCAPING = "files that resolve outside the dataset folder"
_UNKNOWN_IMAGE = "annotations for an unknown image id"
_UNKNOWN_CATEGORY = "annotations with an unknown category_id (with their images)"
_OTHER_CLASS = "annotations of a category not in data.classes"


def read_coco(folder: str | Path, classes: Sequence[str] = DEFAULT_CLASSES, on_error: OnError = "raise") -> RecordList:
    """Read a COCO (COCO Annotator) export: ``folder/annotations.json`` and its images.

    Every image listed becomes a record, crack-free if it has no annotation. Category names match
    ``classes`` by :func:`~crackcascade.labels.normalize_name` (``"Crack"`` is ``crack``). The
    JSON is validated before :class:`pycocotools.coco.COCO` indexes it, because COCO silently
    keeps the last of two images with the same id. Masks are not rasterised here.

    Args:
        folder: Dataset folder holding ``annotations.json``.
        classes: Class names; mask value ``i`` is ``classes[i - 1]``.
        on_error: ``raise`` on the first problem, or ``skip`` it: a bad image is left out with its
            annotations, a bad annotation takes its image along (its mask would be incomplete),
            an annotation of another category is dropped alone (its pixels become background).

    Returns:
        Records sorted by image path, with the skipped counts.

    Raises:
        DataError: One line naming ``annotations.json`` and the image or annotation id.
        ConfigError: If ``classes`` is empty or repeats a class.
    """
    folder = Path(folder)
    path = folder / ANNOTATIONS
    lookup = class_lookup(classes)
    data = _load_json(path)
    problems = _Problems(path, on_error)
    categories = _coco_categories(path, data["categories"], lookup, problems)
    listed_ids = {e["id"] for e in data["images"] if isinstance(e, dict) and "id" in e}
    images = _coco_images(path, folder, data["images"], problems)
    annotations = _coco_annotations(path, data["annotations"], images, listed_ids, categories, classes, problems)
    coco = COCO()
    coco.dataset = {
        "images": [entry for entry, _ in images.values()],
        "annotations": annotations,
        "categories": [c for c in data["categories"] if isinstance(c, dict) and c.get("id") in categories],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints progress lines
        coco.createIndex()
    records = []
    for image_id in coco.getImgIds():
        entry, image_path = images[image_id]
        instances = tuple(
            CocoInstance(ann["id"], int(categories[ann["category_id"]][1] or 0), ann["segmentation"])
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        )
        records.append(
            MaskRecord(
                image=image_path,
                height=int(entry["height"]),
                width=int(entry["width"]),
                instances=instances,
                source=path,
                image_id=image_id,
            )
        )
    records.sort(key=lambda r: str(r.image))
    return problems.result(records)


def _load_json(path: Path) -> dict[str, list[Any]]:
    if not path.is_file():
        raise DataError(f"{path}: not found; a COCO dataset folder needs its annotations.json")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read COCO annotations ({err}); re-export the file") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a COCO file (expected an object with images, annotations, categories)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing required key '{key}' (a list); re-export the annotations")
    return data


def _missing_key(entry: Any, keys: Sequence[str]) -> str | None:
    if not isinstance(entry, dict):
        return keys[0]
    return next((k for k in keys if k not in entry), None)


def _coco_categories(
    path: Path,
    entries: list[Any],
    lookup: dict[str, int],
    problems: _Problems,
) -> dict[Any, tuple[str, int | None]]:
    """Category id -> (name, class value), the value None for a category not in ``classes``.

    A category id used twice is dropped (its annotations then name an unknown category), since
    either name could be the one the annotator meant.
    """
    seen = Counter(e["id"] for e in entries if isinstance(e, dict) and "id" in e)
    categories: dict[Any, tuple[str, int | None]] = {}
    for position, entry in enumerate(entries):
        key = _missing_key(entry, _CATEGORY_KEYS)
        if key is not None:
            problems.report(_BAD_KEYS, f"{path}: category #{position} lacks required key '{key}'; fix the export")
            continue
        if seen[entry["id"]] > 1:
            problems.report(
                _DUPLICATE_CATEGORY,
                f"{path}: category id {entry['id']} is used by {seen[entry['id']]} categories; give each a unique id",
            )
            continue
        name = str(entry["name"])
        categories[entry["id"]] = (name, lookup.get(normalize_name(name)))
    return categories


def _coco_images(
    path: Path, folder: Path, entries: list[Any], problems: _Problems
) -> dict[Any, tuple[dict[str, Any], Path]]:
    """Valid images: id -> (entry, file on disk)."""
    seen = Counter(e["id"] for e in entries if isinstance(e, dict) and "id" in e)
    images: dict[Any, tuple[dict[str, Any], Path]] = {}
    for position, entry in enumerate(entries):
        key = _missing_key(entry, _IMAGE_KEYS)
        if key is not None:
            ident = entry.get("id", f"#{position}") if isinstance(entry, dict) else f"#{position}"
            problems.report(_BAD_KEYS, f"{path}: image {ident} lacks required key '{key}'; fix the export")
            continue
        image_id, name = entry["id"], str(entry["file_name"])
        where = f"{path}: image id {image_id} ({name!r})"
        stem = PurePosixPath(name.replace("\\", "/")).stem
        if seen[image_id] > 1:
            problems.report(
                _DUPLICATE, f"{where}: id {image_id} is used by {seen[image_id]} images; give each a unique id", stem
            )
            continue
        side = next((k for k in ("height", "width") if not _is_whole(entry[k])), None)
        if side is not None:
            problems.report(
                _BAD_SIDE,
                f"{where}: {side} must be a whole number of pixels, got {entry[side]!r}; fix the export",
                stem,
            )
            continue
        if not _is_relative_inside(name):
            problems.report(
                _BAD_PATH, f"{where}: file_name escapes the dataset folder; make it relative to {folder}", stem
            )
            continue
        image_path = _locate(folder, name)
        if image_path is None:
            problems.report(_MISSING, f"{where}: image not found in {folder} or {folder / IMAGES_DIR}", stem)
            continue
        target = image_path.resolve()
        if not target.is_relative_to(folder.resolve()) and os.environ.get(FOLLOW_SYMLINKS_ENV, "") != "1":
            problems.report(_ESCAPING, f"{where}: {escape_message(image_path, target, folder)}", stem)
            continue
        try:
            height, width = image_size(image_path)
        except Exception as err:
            problems.report(_UNREADABLE, f"{where}: cannot read {image_path} ({err}); replace or remove it", stem)
            continue
        if (height, width) != (entry["height"], entry["width"]):
            problems.report(
                _BAD_SIZE,
                f"{where}: the file is {width}x{height} but annotations.json says "
                f"{entry['width']}x{entry['height']}; re-export the annotations",
                stem,
            )
            continue
        images[image_id] = (entry, image_path)
    return images


def _is_whole(value: Any) -> bool:
    """Whether a JSON value is a positive whole number (``64`` or ``64.0``; not ``"64"`` nor ``true``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value > 0 and float(value).is_integer()


def _id_mismatch(field: str, ident: Any, known: dict[str, Any]) -> str | None:
    """Say so when ``ident`` names a known id but as another JSON type (``"2"`` for ``2``), else None."""
    twin = known.get(str(ident))
    if twin is None or type(twin) is type(ident):
        return None

    def kind(value: Any) -> str:
        return "string" if isinstance(value, str) else "number"

    owner = field.removesuffix("_id")
    return (
        f"{field} {ident!r} is a {kind(ident)} but the {owner} id is the {kind(twin)} {twin!r}; "
        "write the ids as numbers in both places"
    )


def _is_relative_inside(name: str) -> bool:
    posix = PurePosixPath(name.replace("\\", "/"))
    windows = PureWindowsPath(name)
    return not (posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts)


def _locate(folder: Path, name: str) -> Path | None:
    relative = Path(*PurePosixPath(name.replace("\\", "/")).parts)
    for candidate in (folder / relative, folder / IMAGES_DIR / relative):
        if candidate.is_file():
            return candidate
    return None


def _coco_annotations(
    path: Path,
    entries: list[Any],
    images: dict[Any, tuple[dict[str, Any], Path]],
    listed_ids: set[Any],
    categories: dict[Any, tuple[str, int | None]],
    classes: Sequence[str],
    problems: _Problems,
) -> list[dict[str, Any]]:
    """Valid annotations of known images and chosen classes; drops ``images`` a bad one spoils."""
    kept: list[dict[str, Any]] = []
    spoiled: set[Any] = set()
    # pycocotools indexes annotations by id: of two with one id, one silently replaces the other.
    seen = Counter(e["id"] for e in entries if isinstance(e, dict) and "id" in e)
    listed_texts = {str(i): i for i in listed_ids}
    category_texts = {str(c): c for c in categories}
    for position, entry in enumerate(entries):
        key = _missing_key(entry, _ANNOTATION_KEYS)
        if key is not None:
            ident = entry.get("id", f"#{position}") if isinstance(entry, dict) else f"#{position}"
            problems.report(_BAD_KEYS, f"{path}: annotation {ident} lacks required key '{key}'; fix the export")
            if isinstance(entry, dict) and entry.get("image_id") in images:
                spoiled.add(entry["image_id"])
            continue
        image_id = entry["image_id"]
        where = f"{path}: annotation id {entry['id']} (image id {image_id})"
        if seen[entry["id"]] > 1:
            problems.report(
                _DUPLICATE_ANNOTATION,
                f"{where}: id {entry['id']} is used by {seen[entry['id']]} annotations; give each a unique id",
            )
            if image_id in images:
                spoiled.add(image_id)
            continue
        if image_id not in images:
            # An annotation of an image skipped above goes with it; only a dangling id is a problem.
            if image_id not in listed_ids:
                mismatch = _id_mismatch("image_id", image_id, listed_texts)
                problems.report(_UNKNOWN_IMAGE, f"{where}: {mismatch or f'no image has id {image_id}; fix the export'}")
                if mismatch is not None and listed_texts[str(image_id)] in images:
                    spoiled.add(listed_texts[str(image_id)])  # the image it meant would lack this annotation
            continue
        category = entry["category_id"]
        if category not in categories:
            mismatch = _id_mismatch("category_id", category, category_texts)
            problems.report(_UNKNOWN_CATEGORY, f"{where}: {mismatch or f'category_id {category} is not in categories'}")
            spoiled.add(image_id)
            continue
        name, value = categories[category]
        if value is None:
            problems.report(
                _OTHER_CLASS,
                f"{path}: category {name!r} (annotation id {entry['id']}) is not in data.classes "
                f"[{', '.join(classes)}]; add it to data.classes",
            )
            continue
        entry_image = images[image_id][0]
        problem = check_segmentation(entry["segmentation"], int(entry_image["height"]), int(entry_image["width"]))
        if problem is not None:
            kind, text = problem
            problems.report(kind, f"{where}: {text}")
            spoiled.add(image_id)
            continue
        kept.append(entry)
    for image_id in spoiled:
        name = str(images[image_id][0]["file_name"])
        problems.ids.add(PurePosixPath(name.replace("\\", "/")).stem)
        del images[image_id]
    return [ann for ann in kept if ann["image_id"] in images]


# ---------------------------------------------------------------------------------------------
# Image/mask pairs
# ---------------------------------------------------------------------------------------------

_DUPLICATE_STEM = "files sharing a stem with another file"
_NO_MASK = "images without a mask"
_NO_IMAGE = "masks without an image"
_UNREADABLE_MASK = "masks that cannot be read"
_MASK_SIZE = "masks whose size differs from the image"
_RGB_MASK = "RGB masks where class indices are needed"
_LOSSY_MASK = "masks in a lossy format (JPEG, lossy WebP)"


def read_mask_pairs(
    folder: str | Path, classes: Sequence[str] = DEFAULT_CLASSES, on_error: OnError = "raise"
) -> RecordList:
    """Read ``folder/images/*`` and ``folder/masks/*`` paired by file stem.

    Image and mask sizes come from the file headers (cheap), so a mismatch fails here, not
    mid-epoch. Mask values are checked when a mask is decoded (:func:`load_mask`).

    Args:
        folder: Dataset folder.
        classes: Class names; with several, mask value ``i`` is ``classes[i - 1]`` and masks must
            be single-channel (palette or grayscale).
        on_error: ``raise`` on the first problem, or ``skip`` the pair and count it.

    Returns:
        Records sorted by stem, with the skipped counts.

    Raises:
        DataError: One line naming the image or mask file.
    """
    folder = Path(folder)
    num_classes = len(class_lookup(classes))
    dirs = {name: folder / name for name in (IMAGES_DIR, MASKS_DIR)}
    for path in dirs.values():
        if not path.is_dir():
            raise DataError(f"{path}: folder not found; a mask-pair dataset needs images/ and masks/")
    problems = _Problems(folder, on_error)
    images = _by_stem(_scan(dirs[IMAGES_DIR], folder, problems), problems)
    masks = _by_stem(_scan(dirs[MASKS_DIR], folder, problems), problems)
    for stem in sorted(set(masks) - set(images) - problems.ids):  # a pair already skipped is counted once
        problems.report(_NO_IMAGE, f"{masks[stem]}: no image named {stem}.* in {dirs[IMAGES_DIR]}; add or remove it")
    records = []
    for stem in sorted(images):
        image_path = images[stem]
        mask_path = masks.get(stem)
        if mask_path is None:
            if stem in problems.ids:
                continue
            problems.report(_NO_MASK, f"{image_path}: no mask named {stem}.* in {dirs[MASKS_DIR]}", stem)
            continue
        try:
            height, width = image_size(image_path)
        except Exception as err:
            problems.report(_UNREADABLE, f"{image_path}: cannot read image ({err}); replace or remove it", stem)
            continue
        try:
            mask_h, mask_w, mode, lossy = _header(mask_path)
        except Exception as err:
            problems.report(_UNREADABLE_MASK, f"{mask_path}: cannot read mask ({err}); replace or remove it", stem)
            continue
        if lossy is not None:
            problems.report(_LOSSY_MASK, lossy_message(mask_path, lossy), stem)
            continue
        if (mask_h, mask_w) != (height, width):
            problems.report(
                _MASK_SIZE,
                f"{mask_path}: mask is {mask_w}x{mask_h} but its image {image_path.name} is {width}x{height}",
                stem,
            )
            continue
        if num_classes > 1 and mode not in INDEX_MODES:
            problems.report(
                _RGB_MASK,
                f"{mask_path}: {mode} mask, but with {num_classes} classes masks must hold class indices "
                "(palette or grayscale PNG)",
                stem,
            )
            continue
        records.append(MaskRecord(image=image_path, height=height, width=width, mask=mask_path))
    return problems.result(records)


def _scan(directory: Path, folder: Path, problems: _Problems) -> list[Path]:
    """Image files of ``images/`` or ``masks/``; a symlink leaving the dataset folder is a problem."""
    scan = scan_images(directory, boundary=folder, recursive=False)
    for path, target in scan.escaping:
        problems.report(_ESCAPING, escape_message(path, target, folder), path.stem)
    return scan.images


def _by_stem(paths: list[Path], problems: _Problems) -> dict[str, Path]:
    found: dict[str, Path] = {}
    clashes: set[str] = set()
    for path in paths:
        if path.stem in found:
            problems.report(
                _DUPLICATE_STEM, f"{path}: {found[path.stem].name} has the same stem; keep one of them", path.stem
            )
            clashes.add(path.stem)
        found.setdefault(path.stem, path)
    for stem in clashes:
        del found[stem]
    return found


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------


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
# Folders, formats and splits
# ---------------------------------------------------------------------------------------------


def detect_mask_format(folder: Path) -> Literal["coco", "masks"] | None:
    """Return the dataset format in ``folder`` (COCO first, as ``auto`` prefers it), or None."""
    if (folder / ANNOTATIONS).is_file():
        return "coco"
    if (folder / IMAGES_DIR).is_dir() and (folder / MASKS_DIR).is_dir():
        return "masks"
    return None


def read_mask_dataset(
    folder: str | Path,
    classes: Sequence[str] = DEFAULT_CLASSES,
    format: MaskFormat = "auto",
    on_error: OnError = "raise",
) -> RecordList:
    """Read one dataset folder in either format (``auto`` detects it, preferring COCO).

    Raises:
        DataError: If the folder holds no dataset of the asked format.
    """
    folder = Path(folder)
    if format not in ("auto", "coco", "masks"):
        raise ConfigError(f"data.format must be auto, coco or masks, got {format!r}")
    kind = detect_mask_format(folder) if format == "auto" else format
    if kind is None:
        raise DataError(
            f"{folder}: no crack-mask data found (expected annotations.json, or images/ and masks/, "
            "or train/ val/ test/ folders holding them)"
        )
    reader = read_coco if kind == "coco" else read_mask_pairs
    return reader(folder, classes, on_error)


def read_mask_splits(
    folder: str | Path,
    classes: Sequence[str] = DEFAULT_CLASSES,
    format: MaskFormat = "auto",
    on_error: OnError = "raise",
) -> dict[str, RecordList]:
    """Read a scale folder into its splits (see the module docstring for the three layouts).

    Args:
        folder: The scale folder (``root/<scale>``) or a single dataset folder.
        classes: Class names.
        format: ``auto``, ``coco`` or ``masks``.
        on_error: ``raise`` or ``skip`` (also for ids in a list that name no image).

    Returns:
        ``train`` / ``val`` / ``test`` -> records, for the splits the folder has. A single dataset
        without id lists is all ``train``; the data module carves the rest.

    Raises:
        DataError: For a missing folder, an id listed in two lists, or (``raise``) an unknown id.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; set --data.root to the crack-mask data")
    split_dirs = _split_dirs(folder)
    if split_dirs:
        return {split: read_mask_dataset(path, classes, format, on_error) for split, path in split_dirs.items()}
    records = read_mask_dataset(folder, classes, format, on_error)
    lists = {split: folder / name for split, name in ID_LISTS.items() if (folder / name).is_file()}
    if not lists:
        return {"train": records}
    return _split_by_lists(folder, records, lists, on_error)


def _split_dirs(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    children = {normalize_name(c.name): c for c in sorted(folder.iterdir()) if c.is_dir()}
    for split in SPLITS:
        for alias in SPLIT_ALIASES[split]:
            child = children.get(normalize_name(alias))
            if child is not None:
                found[split] = child
                break
    return found


def _read_ids(path: Path) -> list[str]:
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ids.append(PurePosixPath(line).stem if is_image_file(line) else PurePosixPath(line).name)
    return ids


def _split_by_lists(
    folder: Path, records: RecordList, lists: dict[str, Path], on_error: OnError
) -> dict[str, RecordList]:
    by_id: dict[str, MaskRecord] = {}
    for record in records:
        if record.id in by_id:
            raise DataError(
                f"{record.image}: {by_id[record.id].image.name} has the same stem, so the id lists of "
                f"{folder} are ambiguous; rename one"
            )
        by_id[record.id] = record
    owner: dict[str, str] = {}
    out: dict[str, RecordList] = {}
    for split, path in lists.items():
        problems = _Problems(path, on_error)
        chosen = []
        for ident in _read_ids(path):
            if ident in owner:
                raise DataError(f"{path}: id {ident!r} is also in {ID_LISTS[owner[ident]]}; keep it in one list")
            owner[ident] = split
            if ident in by_id:
                chosen.append(by_id[ident])
            elif ident not in records.skipped_ids:
                problems.report("listed ids without an image", f"{path}: id {ident!r} has no image in {folder}")
        result = problems.result(chosen)
        # The dataset's own skips are reported once, with the train split.
        out[split] = RecordList(result, result.skipped, source=path)
        out[split].examples = result.examples
    rest = [r for r in records if r.id not in owner]
    if "train" not in lists:
        out["train"] = RecordList(rest, source=folder)
    elif rest:
        logger.info("%s: %d images are in no id list and are left out", folder, len(rest))
    train = out["train"]
    train.skipped = dict(Counter(train.skipped) + Counter(records.skipped))
    train.examples = {**records.examples, **train.examples}
    return out


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
