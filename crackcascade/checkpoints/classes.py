"""The class a checkpoint holds: the record crackcascade's models write, and the import path it names."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

from crackcascade.errors import ConfigError, first_line

CLASS_KEY = "crackcascade_class_path"
"""Checkpoint entry naming the class of its model as a config names it (``crackcascade.CrackSegmenter``)."""

# Hyper-parameters only one model class has: how checkpoints saved before CLASS_KEY are told apart.
_SIGNATURES = {
    "crackcascade.MultiTaskClassifier": ("backbone", "tasks"),
    "crackcascade.CrackSegmenter": ("encoder_name", "classes"),
    "crackcascade.CrackCascade": ("classifier", "segmenter"),
}


def class_path(cls: type) -> str:
    """The import path of ``cls`` as a config writes it: ``crackcascade.<Name>`` for the public classes."""
    # Looked up, not imported: the package imports the models, whose hooks call this once it is loaded.
    package = sys.modules.get("crackcascade")
    if getattr(package, cls.__name__, None) is cls:
        return f"crackcascade.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def import_class(path: str, option: str = "--model") -> type:
    """The class at an import path (``crackcascade.CrackSegmenter``).

    Raises:
        ConfigError: One line naming ``option`` and the path, if it cannot be imported.
    """
    module, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name) if module else None
    except Exception as err:  # ImportError, or any error the module raises while it is imported
        raise ConfigError(f"{option}: cannot import the model class '{path}' ({first_line(err)})") from None
    if not isinstance(found, type):
        raise ConfigError(f"{option}: '{path}' is not a class that can be imported")
    return found


def saved_class(checkpoint: Mapping[str, Any]) -> tuple[str | None, bool]:
    """The class path of the model a Lightning checkpoint holds, and whether the checkpoint records it.

    The record is ``CLASS_KEY`` (crackcascade's models write it) or the ``_class_path``
    hyper-parameter (Lightning's CLI writes it). A checkpoint with neither is judged by its
    hyper-parameters (``backbone``: a classifier, ``encoder_name``: a U-Net); that guess comes back
    with ``False``, and ``(None, False)`` when there is no guess either.
    """
    hparams = checkpoint.get("hyper_parameters") or {}
    recorded = hparams.get("_class_path") or checkpoint.get(CLASS_KEY)
    if recorded:
        return str(recorded), True
    for path, keys in _SIGNATURES.items():
        if all(key in hparams for key in keys):
            return path, False
    return None, False
