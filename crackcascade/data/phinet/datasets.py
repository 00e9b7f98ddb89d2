"""Map-style datasets returning dict samples ``{"image", "labels", "path"}``.

``image`` is a ``uint8`` tensor ``(3, H, W)``; ``labels`` is an ``int64`` vector with one entry
per task of :data:`crackcascade.labels.TASK_NAMES` (``-1`` where the image is not labelled for
that task), so samples from different tasks and formats batch together unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from crackcascade.data.io import read_image
from crackcascade.data.types import Sample
from crackcascade.labels import IGNORE_INDEX, TASK_NAMES

Transform = Callable[[torch.Tensor], torch.Tensor]


def label_vector(task_column: int, label: int) -> torch.Tensor:
    """Return a label vector that is ``label`` at ``task_column`` and unknown elsewhere."""
    vec = torch.full((len(TASK_NAMES),), IGNORE_INDEX, dtype=torch.long)
    vec[task_column] = label
    return vec


def label_matrix(count: int, labels: np.ndarray | None) -> torch.Tensor:
    """``(count, len(TASK_NAMES))`` int64 labels, all ``-1`` (unknown) when ``labels`` is None.

    Raises:
        ValueError: If ``labels`` has another shape.
    """
    if labels is None:
        return torch.full((count, len(TASK_NAMES)), IGNORE_INDEX, dtype=torch.long)
    matrix = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if matrix.shape != (count, len(TASK_NAMES)):
        raise ValueError(f"labels must have shape ({count}, {len(TASK_NAMES)})")
    return matrix


class ArrayTaskDataset(Dataset[Sample]):
    """One task's images from a PHI Challenge ``X_*.npy`` array, read through a memory map.

    The array is opened lazily in each process: a ``np.memmap`` pickled to a DataLoader worker
    would be copied whole, which is exactly the full load into RAM the memory map avoids.

    Args:
        x_path: ``X_<split>.npy`` of shape ``(N, H, W, 3)``, ``uint8``.
        labels: Validated class indices of all N images.
        task_column: Column of the task in the label vector.
        indices: Rows of the array that belong to this dataset (a split); all rows if None.
        transform: Applied to each ``uint8`` ``(3, H, W)`` image.
    """

    def __init__(
        self,
        x_path: Path,
        labels: np.ndarray,
        task_column: int,
        indices: np.ndarray | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.x_path = Path(x_path)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.task_column = task_column
        self.indices = np.arange(len(self.labels)) if indices is None else np.asarray(indices)
        self.transform = transform
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    def __getitem__(self, index: int) -> Sample:
        if self._array is None:
            self._array = np.load(self.x_path, mmap_mode="r")
        row = int(self.indices[index])
        image = torch.from_numpy(np.array(self._array[row], dtype=np.uint8)).permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        return {
            "image": image,
            "labels": label_vector(self.task_column, int(self.labels[row])),
            "path": f"{self.x_path}[{row}]",
        }


class ImageFileDataset(Dataset[Sample]):
    """Images on disk with a label vector each (image folders, CSV manifests, photos to predict).

    Args:
        paths: Image files.
        labels: ``(N, len(TASK_NAMES))`` label matrix, ``-1`` where unknown; None for unlabelled.
        transform: Applied to each decoded ``uint8`` ``(3, H, W)`` image.
        min_size: Side the transform resizes to, if it only ever shrinks: large JPEGs are then
            decoded at a reduced scale no smaller than it (see :func:`~crackcascade.data.io.read_image`).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: np.ndarray | None = None,
        transform: Transform | None = None,
        min_size: int | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = label_matrix(len(self.paths), labels)
        self.transform = transform
        self.min_size = min_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        image = read_image(self.paths[index], self.min_size)
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "labels": self.labels[index].clone(), "path": str(self.paths[index])}
