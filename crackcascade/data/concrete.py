"""The concrete-crack set of Özgenel (2018): its reader and its dataset.

The set is two class folders, ``root/Positive/*`` (crack) and ``root/Negative/*`` (none), matched
case-insensitively, with no splits of its own. Samples are labelled in the Phi-Net format for the
``damage_state`` task (every other task unlabelled) and also carry ``"crack"`` (1 or 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crackcascade.data.io import BadFiles, escape_message, list_images, scan_images
from crackcascade.data.phinet import ImageFileDataset
from crackcascade.data.types import Sample
from crackcascade.errors import DataError
from crackcascade.labels import IGNORE_INDEX, TASK_NAMES, get_task, task_index

CONCRETE_CRACK_FOLDERS: tuple[tuple[str, bool], ...] = (("Positive", True), ("Negative", False))
"""Class folders of the Özgenel (2018) concrete-crack set and whether their images show a crack."""


def class_folder(root: Path, name: str) -> Path:
    """The class folder ``root/<name>``, matched case-insensitively, holding at least one image.

    Raises:
        DataError: If ``root`` or the folder is missing, spelled twice in different cases, or
            holds no images.
    """
    if not root.is_dir():
        raise DataError(f"data.root '{root}' does not exist or is not a folder; set --data.root")
    matches = [c for c in sorted(root.iterdir()) if c.is_dir() and c.name.lower() == name.lower()]
    if not matches:
        expected = " and ".join(f"{n}/" for n, _ in CONCRETE_CRACK_FOLDERS)
        raise DataError(f"data.root '{root}': no '{name}' folder; the set needs {expected}")
    if len(matches) > 1:
        spellings = ", ".join(f"'{m.name}'" for m in matches)
        raise DataError(f"data.root '{root}': folders {spellings} differ only in case; keep one")
    if not list_images(matches[0], recursive=False):
        raise DataError(f"{matches[0]}: '{name}' folder has no images (jpg, png, tif, bmp, webp)")
    return matches[0]


def read_concrete_crack(root: Path, bad: BadFiles) -> list[tuple[list[Path], bool]]:
    """Read both class folders, in the order of :data:`CONCRETE_CRACK_FOLDERS`.

    Args:
        root: Folder holding ``Positive/`` and ``Negative/``.
        bad: Raises on, or counts, bad image files and symlinks out of ``root``; collects the
            non-image files passed over.

    Returns:
        For each class folder, its usable images and whether they show a crack.

    Raises:
        DataError: If a class folder is missing or has no readable images.
    """
    classes: list[tuple[list[Path], bool]] = []
    for name, crack in CONCRETE_CRACK_FOLDERS:
        folder = class_folder(root, name)
        scan = scan_images(folder, boundary=root, recursive=False)
        bad.ignored.extend(scan.others)
        for path, target in scan.escaping:
            bad.report("symlinks out of the root", escape_message(path, target, root))
        paths = [path for path in scan.images if bad.check(path)]
        if not paths:
            raise DataError(f"{folder}: '{name}' folder has no readable images")
        classes.append((paths, crack))
    return classes


class ConcreteCrackDataset(ImageFileDataset):
    """:class:`ImageFileDataset` whose samples also carry ``"crack"`` (1 or 0) for cross-dataset metrics."""

    def __init__(self, paths: Sequence[Path], cracks: Sequence[bool], transform: Any, min_size: int | None) -> None:
        damage_state = get_task("damage_state")
        labels = np.full((len(paths), len(TASK_NAMES)), IGNORE_INDEX, dtype=np.int64)
        labels[:, task_index(damage_state.name)] = [
            damage_state.class_index("damaged" if crack else "undamaged") for crack in cracks
        ]
        super().__init__(paths, labels, transform, min_size)
        self.cracks = [int(crack) for crack in cracks]

    def __getitem__(self, index: int) -> Sample:
        sample = super().__getitem__(index)
        sample["crack"] = self.cracks[index]
        return sample
