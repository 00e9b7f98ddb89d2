"""ONNX export of trained models, for runtimes without PyTorch (drones, robots, C++ or mobile services).

``crackcascade export CHECKPOINT OUTPUT.onnx`` writes one ONNX file and a JSON file beside it
(``OUTPUT.json``, the same metadata is embedded in the ONNX file as ``metadata_props``). The
output path is checked before the export starts (:func:`check_output`): an existing ONNX file or
JSON is replaced only with ``--overwrite``, and a folder that cannot be written is named at once.

* a :class:`~crackcascade.models.multitask.MultiTaskClassifier` becomes a graph with input
  ``image`` ``(batch, 3, S, S)`` at its training size ``S`` and one output per trained head,
  named by task, with that head's logits ``(batch, classes)`` (softmax gives the probabilities
  ``predict`` reports);
* a :class:`~crackcascade.models.segmenter.CrackSegmenter` becomes a graph with input ``image``
  ``(batch, 3, height, width)`` of any height and width of at least :data:`MIN_SIDE` pixels and
  output ``logits`` ``(batch, classes, height, width)``; ``sigmoid(logits) >= threshold`` (the
  thresholds chosen on validation, in the metadata) is the mask.

Both take RGB images as the PyTorch modules do, ``uint8`` 0-255 by default (``--input-dtype
float32`` for floats 0-255): normalization with the model's mean and std is part of the graph,
and so is the U-Net's reflection padding to a multiple of 32 and the crop back, so a runtime
feeds decoded pixels and reads logits at the input's size. Tiling of large photos, test-time
flips and the cascade's routing and gating stay with the caller (see ``predict_tiled`` in
:mod:`crackcascade.tiling` and :class:`~crackcascade.models.cascade.CrackCascade`).

The graphs are made by ``torch.onnx.export(..., dynamo=True)``, torch's default exporter since
2.9 (it traces with ``torch.export`` and writes the ONNX graph with onnxscript); the legacy
TorchScript exporter is deprecated and not used.

The package: :mod:`~crackcascade.export.graphs` (the graphs and their metadata),
:mod:`~crackcascade.export.parity` (onnxruntime against PyTorch) and
:mod:`~crackcascade.export.command` (checkpoints, and ``crackcascade export``).
"""

from crackcascade.export.command import export_checkpoint, main
from crackcascade.export.graphs import (
    DEFAULT_OPSET,
    INPUT_DTYPES,
    METADATA_KEY,
    MIN_SIDE,
    ClassifierGraph,
    ExportResult,
    InputDtype,
    check_output,
    export_classifier,
    export_segmenter,
    read_metadata,
    write_metadata,
)
from crackcascade.export.parity import (
    MAX_ABS_DIFF,
    VERIFY_RTOL,
    check_parity,
    onnx_session,
    torch_outputs,
    verify_export,
)

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_DTYPES",
    "MAX_ABS_DIFF",
    "METADATA_KEY",
    "MIN_SIDE",
    "VERIFY_RTOL",
    "ClassifierGraph",
    "ExportResult",
    "InputDtype",
    "check_output",
    "check_parity",
    "export_checkpoint",
    "export_classifier",
    "export_segmenter",
    "main",
    "onnx_session",
    "read_metadata",
    "torch_outputs",
    "verify_export",
    "write_metadata",
]
