"""Lightning callbacks, one per module.

Configs name them by these paths (``class_path: crackcascade.callbacks.TimeBudget``;
``crackcascade.LargestBatchFinder`` works too).

* :class:`TimeBudget` (:mod:`~crackcascade.callbacks.time_budget`): train for a wall-clock
  budget, the learning rate annealed over it.
* :class:`LargestBatchFinder` (:mod:`~crackcascade.callbacks.batch_finder`): the largest
  training batch that fits, under a memory cap.
* :class:`PredictionWriter` (:mod:`~crackcascade.callbacks.prediction_writer`): predictions as
  CSV/JSON, masks, overlays and an HTML report.
* :class:`TaskPreviews`, :class:`MaskPreviews` (:mod:`~crackcascade.callbacks.previews`): W&B
  validation previews, which the models add themselves when a W&B logger is configured.
* :class:`SaveBackbone` (:mod:`~crackcascade.callbacks.save_backbone`): the model's backbone as a
  ``.safetensors`` file with a JSON beside it, when ``fit`` ends.
* :class:`RunGuard` (:mod:`~crackcascade.callbacks.run_guard`), which the ``crackcascade``
  command adds to every Trainer, composed of :class:`PreflightCheck`, :class:`StepSeeds`,
  :class:`MidEpochResume` and :class:`SkipReport`.
"""

from crackcascade.callbacks.batch_finder import LargestBatchFinder
from crackcascade.callbacks.prediction_writer import PredictionWriter
from crackcascade.callbacks.preflight import PreflightCheck
from crackcascade.callbacks.previews import MaskPreviews, TaskPreviews, ValidationPreviews
from crackcascade.callbacks.resume import MidEpochResume
from crackcascade.callbacks.run_guard import RunGuard
from crackcascade.callbacks.save_backbone import SaveBackbone
from crackcascade.callbacks.skip_report import SkipReport
from crackcascade.callbacks.step_seeds import StepSeeds
from crackcascade.callbacks.time_budget import TimeBudget

__all__ = [
    "LargestBatchFinder",
    "MaskPreviews",
    "MidEpochResume",
    "PredictionWriter",
    "PreflightCheck",
    "RunGuard",
    "SaveBackbone",
    "SkipReport",
    "StepSeeds",
    "TaskPreviews",
    "TimeBudget",
    "ValidationPreviews",
]
