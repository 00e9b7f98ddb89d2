"""Lightning callbacks of crackcascade: a wall-clock training budget and W&B validation previews."""

from crackcascade.callbacks.previews import MaskPreviews, TaskPreviews, ValidationPreviews
from crackcascade.callbacks.time_budget import TimeBudget

__all__ = ["MaskPreviews", "TaskPreviews", "TimeBudget", "ValidationPreviews"]
