"""Metrics under DDP: names every process agrees on, and metrics synced by processes that never updated them."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import torch


def names_on_all_ranks(names: Sequence[str]) -> list[str]:
    """The union of every DDP process's ``names``, in one order all processes agree on (rank 0's first).

    Metrics created as their scale is first seen may exist on some processes only, or in another
    order; syncing them one by one would pair different metrics' collectives. Every process
    creates the missing ones (empty) and syncs them in this order. Without a process group, the
    names as given.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return list(names)
    gathered: list[list[str] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, list(names))
    return list(dict.fromkeys(name for rank_names in gathered for name in rank_names or ()))


@contextlib.contextmanager
def unupdated_metrics_ok() -> Iterator[None]:
    """Silence torchmetrics' warning for computing a metric this process never updated: it syncs all the same."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The ``compute`` method of metric", category=UserWarning)
        yield
