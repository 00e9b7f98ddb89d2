"""The layouts of a crack-mask scale folder: one dataset, ``train/ val/ test/`` folders, or id lists."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Literal

from crackcascade.data.cracks.coco import read_coco
from crackcascade.data.cracks.pairs import read_mask_pairs
from crackcascade.data.cracks.records import (
    ANNOTATIONS,
    DEFAULT_CLASSES,
    ID_LISTS,
    IMAGES_DIR,
    MASKS_DIR,
    MaskFormat,
    MaskRecord,
    Problems,
    RecordList,
)
from crackcascade.data.io import is_image_file
from crackcascade.data.phinet import SPLIT_ALIASES, SPLITS
from crackcascade.data.types import OnError
from crackcascade.errors import ConfigError, DataError
from crackcascade.labels import normalize_name

logger = logging.getLogger(__name__)


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
        problems = Problems(path, on_error)
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
