"""Metrics of crackcascade's models, all kept as sums so that DDP processes add them up exactly.

* :mod:`~crackcascade.metrics.classification`: confusion counts per task and the scores read from them;
* :mod:`~crackcascade.metrics.segmentation`: crack-segmentation counts at a grid of thresholds, the
  F1-best threshold chosen on validation, strict, tolerant and per-image scores;
* :mod:`~crackcascade.metrics.cascade`: ungated vs gated detection, localization and pixel scores;
* :mod:`~crackcascade.metrics.distributed`: the helpers that keep metrics created on the fly in step under DDP.
"""

from crackcascade.metrics.cascade import COUNTS, SCORE_COLUMNS, CascadeMetrics
from crackcascade.metrics.classification import ConfusionCounts, binary_scores, scores_from_confusion
from crackcascade.metrics.distributed import names_on_all_ranks, unupdated_metrics_ok
from crackcascade.metrics.segmentation import (
    COUNT_NAMES,
    SCORE_NAMES,
    THRESHOLD_GRID,
    SegmentationMetrics,
    best_threshold_index,
    class_targets,
    f1_curve,
    segmentation_scores,
)

__all__ = [
    "COUNTS",
    "COUNT_NAMES",
    "SCORE_COLUMNS",
    "SCORE_NAMES",
    "THRESHOLD_GRID",
    "CascadeMetrics",
    "ConfusionCounts",
    "SegmentationMetrics",
    "best_threshold_index",
    "binary_scores",
    "class_targets",
    "f1_curve",
    "names_on_all_ranks",
    "scores_from_confusion",
    "segmentation_scores",
    "unupdated_metrics_ok",
]
