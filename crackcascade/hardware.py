"""What the machine can do fast: used to pick sensible defaults for precision."""

from __future__ import annotations

from typing import Literal

import torch

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
"""The ``mode`` values of :func:`torch.compile`, offered by the models' ``compile_mode`` option."""


def bf16_supported() -> bool:
    """Whether bf16 convolutions run natively here: a CUDA GPU with bf16, or a CPU with AVX512-BF16/AMX.

    Without native support bf16 is emulated and slower than float32, so ``auto`` precision
    choices fall back to ``32``.
    """
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    is_supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and is_supported is not None and is_supported())


def default_precision() -> str:
    """Lightning ``precision`` for training here: ``bf16-mixed`` where :func:`bf16_supported`, else ``32``."""
    return "bf16-mixed" if bf16_supported() else "32"
