"""Classification metrics: a confusion matrix counted without host syncs, and the scores read from it."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def binary_scores(matrix: Tensor) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of the positive class from a 2x2 matrix ``[[tn, fp], [fn, tp]]``.

    A ratio with an empty denominator (no predicted or no true positive) is 0, as in torchmetrics.
    """
    (tn, fp), (fn, tp) = matrix.double().tolist()
    total = tn + fp + fn + tp
    return {
        "acc": (tp + tn) / total if total else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
    }


def scores_from_confusion(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Accuracy and macro-F1 from a confusion matrix (rows = truth, columns = prediction).

    Macro-F1 averages the classes that occur in the truth or the predictions, so a class absent
    from a small validation set does not count as a zero.
    """
    matrix = matrix.double()
    tp = matrix.diag()
    support = matrix.sum(1)
    predicted = matrix.sum(0)
    accuracy = tp.sum() / matrix.sum().clamp(min=1)
    present = (support + predicted) > 0
    f1 = 2 * tp / (support + predicted).clamp(min=1)
    return accuracy.float(), f1[present].mean().float() if present.any() else f1.new_zeros(()).float()


class ConfusionCounts(Metric):
    """Confusion matrix of one task (rows truth, columns prediction), counted without a host-device sync.

    torchmetrics' ``MulticlassConfusionMatrix`` drops ignored labels by boolean indexing and
    counts with ``bincount``; both need tensor sizes on the host, so on a GPU every update waits
    for the device, eight times per training step with eight heads. Here each image is compared
    with every cell index ``truth * C + prediction`` and the matches of valid labels are summed:
    fixed shapes, integer arithmetic (exact under autocast), nothing read back. Labels that are
    unknown (``-1``) or out of range are not counted.

    Args:
        num_classes: Number of classes of the task.
    """

    full_state_update = False
    is_differentiable = False
    confmat: Tensor

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("confmat", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of predicted class indices ``(B,)`` and labels ``(B,)``."""
        n = self.num_classes
        valid = (target >= 0) & (target < n)
        index = target.clamp(0, n - 1) * n + preds.clamp(0, n - 1)
        cells = torch.arange(n * n, device=index.device)
        self.confmat += ((index.unsqueeze(1) == cells) & valid.unsqueeze(1)).sum(0).view(n, n)

    def compute(self) -> Tensor:
        """The ``(C, C)`` matrix, summed over processes."""
        return self.confmat
