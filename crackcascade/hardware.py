"""What the machine has and can do fast: precision defaults, and the memory a process may use."""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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


_CGROUP_V2 = Path("/sys/fs/cgroup")
_CGROUP_V1 = Path("/sys/fs/cgroup/memory")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) is not a number


def available_memory() -> int | None:
    """Bytes of host memory this process may still use: ``MemAvailable``, less where a cgroup limit is tighter.

    None where it cannot be read (not Linux).
    """
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        return None
    for limit_file, usage_file in (
        (_CGROUP_V2 / "memory.max", _CGROUP_V2 / "memory.current"),
        (_CGROUP_V1 / "memory.limit_in_bytes", _CGROUP_V1 / "memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and available is not None:
            available = min(available, max(0, limit - usage))
    return available


def data_segment_size() -> int | None:
    """Bytes this process has in private writable memory (``VmData``), what ``RLIMIT_DATA`` counts; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@contextmanager
def memory_cap(device: torch.device, fraction: float) -> Iterator[int | None]:
    """Let this process allocate at most ``fraction`` of the memory free now on ``device``, then restore.

    On a CUDA device the caching allocator is capped
    (:func:`torch.cuda.set_per_process_memory_fraction`), so an allocation beyond the cap raises
    CUDA's out-of-memory error while the card still has room left. On the CPU (Linux) the
    process's ``RLIMIT_DATA`` is set to its current data size plus ``fraction`` of the available
    RAM, so PyTorch's allocator fails with its "can't allocate memory" error (or oneDNN with
    ``could not create a primitive``, see
    :func:`~crackcascade.callbacks.batch_finder.is_out_of_memory`) instead of the machine swapping
    or the kernel killing the process. That bounds how far the data segment
    grows: memory the process freed earlier but kept mapped is reused without counting, so the
    cap is tightest in a fresh process, as a training run is. DataLoader workers forked meanwhile
    inherit the limit.

    Yields:
        The number of bytes allowed beyond what is in use now, or None where no cap could be set.
    """
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        allowed = int(fraction * free)
        torch.cuda.set_per_process_memory_fraction(
            min(1.0, (torch.cuda.memory_reserved(index) + allowed) / total), index
        )
        try:
            yield allowed
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, index)
        return
    available, in_use = available_memory(), data_segment_size()
    if device.type != "cpu" or available is None or in_use is None or not hasattr(resource, "RLIMIT_DATA"):
        yield None
        return
    allowed = int(fraction * available)
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = in_use + allowed
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield allowed
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
