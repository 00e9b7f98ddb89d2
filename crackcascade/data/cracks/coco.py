"""COCO crack-mask datasets (as exported by COCO Annotator): ``annotations.json`` read into validated records.

Every key, id, path, polygon and RLE string is checked here, so that pycocotools never sees
input it would hang or crash on (see :mod:`crackcascade.data.maskcheck`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from pycocotools.coco import COCO

from crackcascade.data.cracks.records import (
    ANNOTATIONS,
    DEFAULT_CLASSES,
    ESCAPING,
    IMAGES_DIR,
    UNREADABLE,
    CocoInstance,
    MaskRecord,
    Problems,
    RecordList,
    class_lookup,
    image_size,
)
from crackcascade.data.io import FOLLOW_SYMLINKS_ENV, escape_message
from crackcascade.data.maskcheck import check_segmentation
from crackcascade.data.types import OnError
from crackcascade.errors import DataError
from crackcascade.labels import normalize_name

_IMAGE_KEYS = ("id", "file_name", "height", "width")
_ANNOTATION_KEYS = ("id", "image_id", "category_id", "segmentation")
_CATEGORY_KEYS = ("id", "name")

_BAD_KEYS = "entries missing a required key (with their images)"
_BAD_PATH = "images whose file_name escapes the folder"
_MISSING = "images whose file is missing"
_BAD_SIZE = "images whose size differs from annotations.json"
_BAD_SIDE = "images whose height or width is not a whole number"
_DUPLICATE = "images with a duplicate id"
_DUPLICATE_ANNOTATION = "annotations with a duplicate id (with their images)"
_DUPLICATE_CATEGORY = "categories with a duplicate id (with the images they label)"
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
    problems = Problems(path, on_error)
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
    problems: Problems,
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
    path: Path, folder: Path, entries: list[Any], problems: Problems
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
            problems.report(ESCAPING, f"{where}: {escape_message(image_path, target, folder)}", stem)
            continue
        try:
            height, width = image_size(image_path)
        except Exception as err:
            problems.report(UNREADABLE, f"{where}: cannot read {image_path} ({err}); replace or remove it", stem)
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
    problems: Problems,
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
