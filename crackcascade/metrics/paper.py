"""What Bai et al. (2020) measured, computed the way they defined it, beside their own figures.

crackcascade's own scores (``metrics.cascade``) divide by every photo of a scale in both modes,
so ungated and gated compare on one denominator. The paper did not: its gated localization
accuracy counts the photos whose cracks the U-Net located **among the photos the gate passed**.
Both are reported; nothing here is called the paper's unless it is computed as the paper did.

The paper judged "located" by eye. crackcascade's reading of it: a passed photo with a crack
is located when the predicted mask overlaps the true one with IoU >= ``iou_threshold``; a passed
crack-free photo is handled correctly when nothing is masked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

DAMAGE_TYPE_ROWS = ("non", "flexural", "shear", "combined")
"""Rows of the paper's Table 2: the damage type the Phi-Net classifier predicted."""

CRACK_COLUMNS = ("non-cracking", "cracking")
"""Columns of the paper's Table 2: the concrete-crack set's own label."""


@dataclass(frozen=True)
class PaperLocalization:
    """The counts behind the paper's localization accuracy of one scale and mode.

    Attributes:
        images: Photos of the scale.
        passed: Photos the U-Net segmented: all of them ungated, those the gate let through gated.
        located: Photos among ``passed`` handled correctly (cracks located, or nothing masked on a
            crack-free photo).
    """

    images: int
    passed: int
    located: int

    def __post_init__(self) -> None:
        if not 0 <= self.located <= self.passed <= self.images:
            raise ValueError(f"need 0 <= located <= passed <= images, got {self.located}, {self.passed}, {self.images}")

    @property
    def accuracy(self) -> float:
        """``located / passed`` (the paper's figure), NaN when the gate passed nothing."""
        return self.located / self.passed if self.passed else float("nan")


PAPER_LOCALIZATION: dict[tuple[str, str], PaperLocalization] = {
    ("object", "ungated"): PaperLocalization(images=5713, passed=5713, located=1494),
    ("object", "gated"): PaperLocalization(images=5713, passed=1896, located=1129),
    ("structural", "ungated"): PaperLocalization(images=5832, passed=5832, located=500),
    ("structural", "gated"): PaperLocalization(images=5832, passed=717, located=356),
}
"""Bai et al. (2020), section 3.3: (scale, mode) -> counts (26.15%, 59.55%, 8.57%, 49.65%)."""

PAPER_TABLE2 = np.array([[19184, 2699], [228, 4490], [84, 7702], [504, 5109]], dtype=np.int64)
"""Bai et al. (2020), Table 2: rows :data:`DAMAGE_TYPE_ROWS`, columns :data:`CRACK_COLUMNS`."""


def table2_scores(counts: np.ndarray | Sequence[Sequence[int]]) -> dict[str, float]:
    """Per-column and total accuracy of a Table 2 confusion, as the paper reads it.

    A non-cracking image is right when the damage type is predicted ``non``; a cracking image is
    right when it is predicted flexural, shear or combined (any crack type).

    Args:
        counts: 4x2 counts, rows :data:`DAMAGE_TYPE_ROWS`, columns :data:`CRACK_COLUMNS`.

    Returns:
        ``non-cracking``, ``cracking`` and ``total`` accuracies (NaN for an empty column).
    """
    table = np.asarray(counts, dtype=np.int64)
    if table.shape != (len(DAMAGE_TYPE_ROWS), len(CRACK_COLUMNS)) or (table < 0).any():
        raise ValueError(f"Table 2 needs 4x2 non-negative counts (damage type x crack), got shape {table.shape}")
    right = np.array([table[0, 0], table[1:, 1].sum()])
    columns = table.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_column = np.where(columns > 0, right / np.maximum(columns, 1), np.nan)
    total = table.sum()
    return {
        CRACK_COLUMNS[0]: float(per_column[0]),
        CRACK_COLUMNS[1]: float(per_column[1]),
        "total": float(right.sum() / total) if total else float("nan"),
    }


def format_table2(counts: np.ndarray | Sequence[Sequence[int]], pixel_share: float | None = None) -> str:
    """Table 2 as the paper printed it, ours beside the paper's, with the accuracies under it.

    Args:
        counts: Our 4x2 counts (rows :data:`DAMAGE_TYPE_ROWS`, columns :data:`CRACK_COLUMNS`).
        pixel_share: Our share of images the scene head called pixel level (the paper checked
            that all of them were), or None when the classifier has no scene head.

    Returns:
        A plain-text table.
    """
    ours, paper = np.asarray(counts, dtype=np.int64), PAPER_TABLE2
    head = f"{'predicted damage type':<22}" + "".join(f"{f'{c} ours':>18}{f'{c} paper':>20}" for c in CRACK_COLUMNS)
    lines = [head, "-" * len(head)]
    for row, name in enumerate(DAMAGE_TYPE_ROWS):
        cells = "".join(f"{ours[row, col]:>18,}{paper[row, col]:>20,}" for col in range(len(CRACK_COLUMNS)))
        lines.append(f"{name:<22}{cells}")
    ours_scores, paper_scores = table2_scores(ours), table2_scores(paper)
    for key in (*CRACK_COLUMNS, "total"):
        lines.append(f"accuracy {key:<13}{ours_scores[key]:>18.4f}{paper_scores[key]:>20.4f}")
    if pixel_share is not None:
        lines.append(f"scene head: {pixel_share:.4f} of the images called pixel level (the paper: all of them)")
    return "\n".join(lines)


def format_localization(rows: Mapping[tuple[str, str], PaperLocalization]) -> str:
    """Our paper-style localization per (scale, mode) beside the paper's, counts included.

    Args:
        rows: (scale, mode) -> our counts.

    Returns:
        A plain-text table; the paper's columns are blank where it reported no figure (pixel level).
    """
    head = f"{'scale':<11}{'mode':<9}{'passed':>8}{'located':>9}{'paper.loc':>11}  "
    head += f"{'paper: passed':>14}{'located':>9}{'acc':>8}"
    lines = [head, "-" * len(head)]
    for (scale, mode), ours in rows.items():
        line = f"{scale:<11}{mode:<9}{ours.passed:>8,}{ours.located:>9,}{ours.accuracy:>11.4f}  "
        theirs = PAPER_LOCALIZATION.get((scale, mode))
        if theirs is not None:
            line += f"{theirs.passed:>14,}{theirs.located:>9,}{theirs.accuracy:>8.4f}"
        lines.append(line.rstrip())
    return "\n".join(lines)


class Table2Counts(Metric):
    """The paper's Table 2 counted over a test set with crack flags: damage type x crack, DDP-summed.

    Also counts how many of those images the scene head calls pixel level, which the paper
    checked for the concrete-crack set (section 3.3.1).
    """

    full_state_update = False
    counts: Tensor
    pixel: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("counts", torch.zeros(len(DAMAGE_TYPE_ROWS), len(CRACK_COLUMNS), dtype=torch.long), "sum")
        self.add_state("pixel", torch.zeros(2, dtype=torch.long), "sum")  # (called pixel level, seen by the head)

    def update(self, damage_type: Tensor, crack: Tensor, scene: Tensor | None = None) -> None:
        """Add a batch.

        Args:
            damage_type: ``(B,)`` predicted damage-type indices (``DAMAGE_TYPE_ROWS`` order).
            crack: ``(B,)`` the data's crack flags.
            scene: ``(B,)`` predicted scene indices (0 = pixel level), or None without a scene head.
        """
        flat = damage_type.long() * len(CRACK_COLUMNS) + crack.long().to(damage_type.device)
        self.counts += torch.bincount(flat, minlength=self.counts.numel()).view_as(self.counts)
        if scene is not None:
            self.pixel += torch.stack([(scene == 0).sum(), torch.tensor(scene.numel(), device=scene.device)])

    def compute(self) -> tuple[Tensor, float | None]:
        """The 4x2 counts and the share called pixel level (None when no scene head looked)."""
        called, seen = self.pixel.tolist()
        return self.counts.clone(), called / seen if seen else None
