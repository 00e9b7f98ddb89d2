"""Trained models restored from their Lightning checkpoints, checked for the use they are loaded for.

The cascade (``model.classifier`` / ``model.segmenter``) and ``crackcascade export`` build their
models here: from the checkpoint's hyper-parameters, offline, with one-line errors naming the
file and the option that gave it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from crackcascade.checkpoints.reading import checkpoint_kind, read_lightning_checkpoint
from crackcascade.errors import WeightsError, first_line
from crackcascade.labels import CRACK, TASKS
from crackcascade.models.base import TaskModule
from crackcascade.models.multitask import MultiTaskClassifier
from crackcascade.models.segmenter import CrackSegmenter


def restore_model(cls: type[TaskModule], path: str | Path, checkpoint: dict[str, Any], option: str) -> Any:
    """Build ``cls`` from a checkpoint's hyper-parameters and load its weights, offline, in evaluation mode.

    The class's :attr:`~crackcascade.models.base.TaskModule.offline_hparams` replace the saved ones
    (the weights come from the checkpoint: no pretrained weights are fetched or read again, and
    nothing is compiled).

    Raises:
        WeightsError: One line naming the file and option, if its state does not load into ``cls``.
    """
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    hparams.update(cls.offline_hparams)
    try:
        # An empty context: when LightningCLI builds the cascade it sets the hyper-parameters every
        # LightningModule created meanwhile would save; these sub-models must save their own.
        module = contextvars.Context().run(cls, **hparams)
        module.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, TypeError, ValueError) as err:
        raise WeightsError(f"{option}: '{path}' does not load into {cls.__name__} ({first_line(err)})") from None
    module.on_load_checkpoint(checkpoint)
    return module.eval()


def load_classifier(path: str | Path, required_tasks: Sequence[str] = (), option: str = "model.classifier") -> Any:
    """Load a :class:`MultiTaskClassifier` checkpoint for the cascade and check it can serve it.

    Args:
        path: The classifier's ``.ckpt`` file.
        required_tasks: Tasks whose heads the cascade reads (the gate's, the scene head); each
            must exist and have been trained.
        option: The option that named the file, for error messages.

    Raises:
        WeightsError: One line naming the file and option, if it is missing, is not a classifier
            checkpoint, lacks a required head, or its class names differ from :mod:`crackcascade.labels`.
    """
    return classifier_from_checkpoint(read_lightning_checkpoint(path, option), path, required_tasks, option)


def classifier_from_checkpoint(
    checkpoint: dict[str, Any], path: str | Path, required_tasks: Sequence[str], option: str
) -> MultiTaskClassifier:
    """The classifier of a checkpoint already read (see :func:`load_classifier`)."""
    kind = checkpoint_kind(checkpoint)
    if not kind.startswith("classifier"):
        raise WeightsError(f"{option}: '{path}' holds a {kind}, not a classifier (MultiTaskClassifier)")
    saved_classes = checkpoint.get("crackcascade_task_classes", {})
    for known in TASKS:
        if known.name in saved_classes and tuple(saved_classes[known.name]) != known.classes:
            raise WeightsError(
                f"{option}: '{path}' was trained with {known.name} classes {list(saved_classes[known.name])}, "
                f"but crackcascade's are {list(known.classes)}; retrain it with this version"
            )
    module = cast(MultiTaskClassifier, restore_model(MultiTaskClassifier, path, checkpoint, option))
    trained = set(checkpoint.get("crackcascade_trained_tasks", module.tasks))
    for task in required_tasks:
        if task not in module.tasks or task not in trained:
            raise WeightsError(
                f"{option}: '{path}' has no trained {task} head (trained: {', '.join(sorted(trained))}); "
                f"train one with --model.tasks including {task}, or change the cascade's gate/routing"
            )
    return module


def load_segmenter(path: str | Path, option: str = "model.segmenter") -> Any:
    """Load a :class:`CrackSegmenter` checkpoint (with its validated thresholds) for the cascade.

    Raises:
        WeightsError: One line naming the file and option, if it is missing, is not a U-Net
            checkpoint, or has no ``crack`` class.
    """
    checkpoint = read_lightning_checkpoint(path, option)
    kind = checkpoint_kind(checkpoint)
    if not kind.startswith("U-Net"):
        raise WeightsError(f"{option}: '{path}' holds a {kind}, not a U-Net (CrackSegmenter)")
    module = cast(CrackSegmenter, restore_model(CrackSegmenter, path, checkpoint, option))
    if CRACK not in module.classes:
        raise WeightsError(f"{option}: '{path}' segments {module.classes}, not '{CRACK}'; the cascade localizes cracks")
    return module
