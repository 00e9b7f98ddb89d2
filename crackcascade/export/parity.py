"""Parity of an export: onnxruntime against PyTorch on the same images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from crackcascade.errors import ConfigError, WeightsError
from crackcascade.export.graphs import ExportResult, example_images

MAX_ABS_DIFF = 1e-4
"""Largest difference between onnxruntime and PyTorch outputs that :func:`check_parity` accepts."""
VERIFY_RTOL = 1e-4
"""Relative part of the tolerance of ``crackcascade export``'s own check (see :func:`check_parity`)."""


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of an exported model.

    Args:
        path: The ONNX file.
        threads: Intra-op threads; None lets onnxruntime choose.

    Raises:
        ConfigError: If onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("onnxruntime is not installed; pip install 'crackcascade[export]'") from None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_outputs(module: nn.Module, images: Tensor) -> list[np.ndarray]:
    """The outputs of an exported module (:class:`ClassifierGraph` or a U-Net) for ``images``, as arrays."""
    with torch.inference_mode():
        out = module.eval()(images)
    return [o.float().numpy() for o in (out if isinstance(out, tuple) else (out,))]


def check_parity(
    module: nn.Module,
    session: Any,
    images: Tensor,
    metadata: dict[str, Any],
    atol: float = MAX_ABS_DIFF,
    rtol: float = 0.0,
) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's outputs on the same images.

    Args:
        module: The exported module (see :attr:`ExportResult.module`).
        session: An onnxruntime session of the export (:func:`onnx_session`).
        images: Input batch of the export's dtype and shape.
        metadata: The export's metadata (names the outputs).
        atol: Largest absolute difference accepted.
        rtol: Further difference accepted per unit of the output's largest absolute PyTorch value:
            float32 sums taken in another order differ in proportion to the activations, so a
            deep network with logits in the tens differs by more than 1e-4 even where a logit is
            near 0 (a random ResNet-34 U-Net at 256x256: logits up to 104, differences up to 1.3e-3).

    Raises:
        WeightsError: If an output differs by more than ``atol + rtol * max|pytorch output|``, or the shapes differ.
    """
    names = [o["name"] for o in metadata["outputs"]]
    got = session.run(names, {"image": images.numpy()})
    want = torch_outputs(module, images)
    worst = 0.0
    for name, a, b in zip(names, got, want, strict=True):
        if a.shape != b.shape:
            raise WeightsError(f"exported output '{name}' has shape {a.shape}, PyTorch gives {b.shape}")
        if not a.size:
            continue
        difference = float(np.abs(a - b).max())
        worst = max(worst, difference)
        limit = atol + rtol * float(np.abs(b).max())
        if difference > limit:
            raise WeightsError(
                f"exported output '{name}' differs from PyTorch by {difference:.3g} on the same input "
                f"(more than {limit:.3g})"
            )
    return worst


def parity_inputs(metadata: dict[str, Any]) -> list[Tensor]:
    """Random images an export is checked on: its classifier size, or U-Net sizes that need padding and a crop."""
    dtype = metadata["input"]["dtype"]
    if metadata["kind"] == "classifier":
        size = metadata["image_size"]
        return [example_images((3, 3, size, size), dtype)]
    side = metadata["min_side"]
    # Two sizes that are not multiples of 32, so both the padding and the crop are checked.
    return [
        example_images((1, 3, 2 * side + 7, 3 * side - 5), dtype),
        example_images((2, 3, side + 13, side + 1), dtype),
    ]


def verify_export(result: ExportResult, threads: int | None = None, rtol: float = VERIFY_RTOL) -> float:
    """Run an export in onnxruntime and PyTorch on random images; return the largest absolute difference.

    Raises:
        WeightsError: If an output differs by more than ``MAX_ABS_DIFF + rtol * max|output|``.
    """
    session = onnx_session(result.onnx_path, threads)
    inputs = parity_inputs(result.metadata)
    return max(check_parity(result.module, session, x, result.metadata, rtol=rtol) for x in inputs)
