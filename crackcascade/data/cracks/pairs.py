"""Image/mask-pair crack datasets: ``images/*`` and ``masks/*`` paired by file stem, checked from file headers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from crackcascade.data.cracks.records import (
    DEFAULT_CLASSES,
    ESCAPING,
    IMAGES_DIR,
    MASKS_DIR,
    UNREADABLE,
    MaskRecord,
    Problems,
    RecordList,
    class_lookup,
    image_size,
    mask_header,
)
from crackcascade.data.io import escape_message, scan_images
from crackcascade.data.maskcheck import INDEX_MODES, lossy_message
from crackcascade.data.types import OnError
from crackcascade.errors import DataError

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
    problems = Problems(folder, on_error)
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
            problems.report(UNREADABLE, f"{image_path}: cannot read image ({err}); replace or remove it", stem)
            continue
        try:
            mask_h, mask_w, mode, lossy = mask_header(mask_path)
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


def _scan(directory: Path, folder: Path, problems: Problems) -> list[Path]:
    """Image files of ``images/`` or ``masks/``; a symlink leaving the dataset folder is a problem."""
    scan = scan_images(directory, boundary=folder, recursive=False)
    for path, target in scan.escaping:
        problems.report(ESCAPING, escape_message(path, target, folder), path.stem)
    return scan.images


def _by_stem(paths: list[Path], problems: Problems) -> dict[str, Path]:
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
