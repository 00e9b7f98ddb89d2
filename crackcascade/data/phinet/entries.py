"""The index a Phi-Net reader builds: one :class:`Entry` per split and loader key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

Format = Literal["auto", "arrays", "folders", "csv"]
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
MANIFEST_KEY = "manifest"


@dataclass
class Entry:
    """Images of one split for one loader key.

    Either ``x_path`` (a PHI array; ``labels`` holds the ``(N,)`` class indices of ``column``
    for all N rows, and ``rows`` selects the rows of this split) or ``paths`` (image files;
    ``labels`` holds an ``(N, len(TASK_NAMES))`` matrix).
    """

    labels: np.ndarray
    x_path: Path | None = None
    column: int = 0
    rows: np.ndarray | None = None
    paths: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels) if self.rows is None else len(self.rows)

    def subset(self, positions: np.ndarray) -> Entry:
        """Return the entry restricted to the given positions (``0 <= p < len(self)``)."""
        if self.x_path is not None:
            # Array entries keep all labels and select rows, so every split shares one memory map.
            rows = positions if self.rows is None else self.rows[positions]
            return Entry(labels=self.labels, x_path=self.x_path, column=self.column, rows=rows)
        return Entry(labels=self.labels[positions], paths=[self.paths[i] for i in positions])


Index = dict[str, dict[str, Entry]]
"""split -> loader key -> entry."""
