"""Cascade metrics: image-level crack detection, localization (ours and the paper's) and pixel scores."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

COUNTS: tuple[str, ...] = (
    "images",
    "ran",  # photos the U-Net segmented
    "tp",  # image level: crack present and found
    "fp",
    "fn",
    "tn",
    "located",  # localization correct (see CascadeMetrics)
    "located_ran",  # localization correct among the photos the U-Net segmented
    "pixel_tp",
    "pixel_fp",
    "pixel_fn",
)
"""Counters of :class:`CascadeMetrics`, summed over photos (and DDP ranks)."""

SCORE_COLUMNS: tuple[str, ...] = (
    "images",
    "ran",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "localization",
    "paper_localization",
    "passed",
    "located",
    "pixel_iou",
    "pixel_f1",
    "ms_per_image",
)
"""Columns of the evaluation table, after ``scale`` and ``mode``."""


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


class CascadeMetrics(Metric):
    """Image-level crack detection, localization (ours and the paper's) and pixel scores of one scale and mode.

    A photo *has* a crack when its true mask has any crack pixel; the model *found* one when its
    mask has at least ``min_pixels`` crack pixels (fewer are noise, and count as nothing masked).
    A photo is *located* when it is crack-free and nothing is masked, or it has a crack and the
    predicted mask overlaps it with IoU >= ``iou_threshold`` (Bai et al. judged this by eye; the
    IoU rule is crackcascade's reading of it).

    Two localization scores come out. ``localization`` (ours) is located photos over all photos,
    in both modes, so a photo the gate turned away counts as correct exactly when it is
    crack-free: ungated and gated share one denominator. ``paper_localization`` is computed as
    the paper did: located photos among the photos the U-Net segmented (``passed``: all of them
    ungated, those the gate let through gated), with the counts ``passed`` and ``located`` beside
    it so the fraction can be recomputed. NaN when the gate passed nothing.

    Pixel IoU and F1 sum the pixels of all photos. Time is seconds of model work per photo.

    Args:
        iou_threshold: IoU a cracked photo's mask needs to count as located.
        min_pixels: Fewest crack pixels that count as a crack found.
    """

    full_state_update = False
    counts: Tensor
    seconds: Tensor

    def __init__(self, iou_threshold: float = 0.3, min_pixels: int = 10) -> None:
        super().__init__()
        self.iou_threshold = iou_threshold
        self.min_pixels = min_pixels
        self.add_state("counts", torch.zeros(len(COUNTS), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("seconds", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predicted: Tensor, truth: Tensor, ran: bool, seconds: float) -> None:
        """Add one photo.

        Args:
            predicted: ``(H, W)`` bool, the crack pixels this mode masked (all False if it did not run).
            truth: ``(H, W)`` bool, the true crack pixels.
            ran: Whether the U-Net segmented the photo in this mode.
            seconds: Model time spent on the photo in this mode.
        """
        tp = int((predicted & truth).sum())
        fp = int((predicted & ~truth).sum())
        fn = int((~predicted & truth).sum())
        has, found = bool(truth.any()), int(predicted.sum()) >= self.min_pixels
        located = found and _ratio(tp, tp + fp + fn) >= self.iou_threshold if has else not found
        values = {
            "images": 1,
            "ran": int(ran),
            "tp": int(has and found),
            "fp": int(found and not has),
            "fn": int(has and not found),
            "tn": int(not has and not found),
            "located": int(located),
            "located_ran": int(located and ran),
            "pixel_tp": tp,
            "pixel_fp": fp,
            "pixel_fn": fn,
        }
        self.counts += torch.tensor([values[k] for k in COUNTS], device=self.counts.device)
        self.seconds += seconds

    def compute(self) -> dict[str, float]:
        """The scores of :data:`SCORE_COLUMNS`: ``ran`` a fraction of the photos, ``passed``/``located`` counts."""
        c = dict(zip(COUNTS, self.counts.tolist(), strict=True))
        images = c["images"]
        precision, recall = _ratio(c["tp"], c["tp"] + c["fp"]), _ratio(c["tp"], c["tp"] + c["fn"])
        pixels = c["pixel_tp"] + c["pixel_fp"] + c["pixel_fn"]
        return {
            "images": float(images),
            "ran": _ratio(c["ran"], images),
            "accuracy": _ratio(c["tp"] + c["tn"], images),
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
            "localization": _ratio(c["located"], images),
            "paper_localization": c["located_ran"] / c["ran"] if c["ran"] else float("nan"),
            "passed": float(c["ran"]),
            "located": float(c["located_ran"]),
            "pixel_iou": _ratio(c["pixel_tp"], pixels),
            "pixel_f1": _ratio(2 * c["pixel_tp"], 2 * c["pixel_tp"] + c["pixel_fp"] + c["pixel_fn"]),
            "ms_per_image": 1000 * _ratio(float(self.seconds), images),
        }
