"""Rows measured under a time budget, for ``benchmarks/gpu_suite.py`` (imported as ``_budget``).

Each row gets a budget in seconds. A row starts only if the suite has that much time left, and
a timer (``SIGALRM``, main thread) interrupts it when it runs past its budget, so the whole suite
never outlasts its own budget and a stuck row is reported as skipped instead of hanging.
"""

from __future__ import annotations

import gc
import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from crackcascade.errors import first_line


class OverBudgetError(Exception):
    """A row ran past its budget."""


@dataclass
class Row:
    """One line of the table: crackcascade's figure, the baseline's, and their ratio.

    ``ratio`` is ``ours / baseline`` whenever both were measured (for seconds, below 1 is faster).
    """

    name: str
    unit: str
    ours: float | None = None
    baseline: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """``ours / baseline``, None unless both are there."""
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline

    def as_dict(self) -> dict[str, Any]:
        """The row for the JSON file, ratio included."""
        return {**asdict(self), "ratio": self.ratio}


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`OverBudgetError` in the main thread after ``seconds``."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise OverBudgetError

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Suite:
    """Runs rows under per-row budgets within a total budget, and prints and saves the table.

    Args:
        total_s: Seconds the whole suite may take, counted from now.
    """

    def __init__(self, total_s: float) -> None:
        self.start = time.perf_counter()
        self.total_s = total_s
        self.rows: dict[str, Row] = {}

    def left(self) -> float:
        """Seconds of the suite's budget left."""
        return self.total_s - (time.perf_counter() - self.start)

    def run(self, name: str, unit: str, budget_s: float, measure: Callable[[Row], None]) -> Row:
        """Measure one row (``measure`` fills it in), or note why it was skipped or failed."""
        row = Row(name, unit)
        self.rows[name] = row
        if self.left() < budget_s:
            row.note = (
                f"skipped: {max(self.left(), 0):.0f} s of the suite's budget left, the row needs {budget_s:.0f} s"
            )
        else:
            began = time.perf_counter()
            try:
                with time_limit(budget_s):
                    measure(row)
            except OverBudgetError:
                row.ours = row.baseline = None
                row.note = f"skipped: ran past its {budget_s:.0f} s budget"
            except Exception as err:
                row.ours = row.baseline = None
                row.note = f"failed: {type(err).__name__}: {first_line(err)}"[:100]
            row.extra["seconds"] = round(time.perf_counter() - began, 2)
            if torch.cuda.is_available():  # give the next row the memory (a collection costs seconds on a busy CPU)
                gc.collect()
                torch.cuda.empty_cache()
        print(f"  [{time.perf_counter() - self.start:6.1f} s] {name}: {row.note or 'done'}", flush=True)
        return row

    def skip(self, name: str, unit: str, note: str) -> None:
        """Record a row that is not run, with the reason."""
        self.rows[name] = Row(name, unit, note=note)

    def table(self, order: list[str]) -> str:
        """The table, rows in ``order`` (then any others)."""
        names = [n for n in order if n in self.rows] + [n for n in self.rows if n not in order]
        width = max(len(n) for n in names) + 2
        header = f"{'row':<{width}}{'ours':>11}{'baseline':>11}{'ratio':>8}  {'unit':<10}note"
        lines = [header, "-" * len(header)]
        for name in names:
            row = self.rows[name]
            ours = f"{row.ours:>11.2f}" if row.ours is not None else f"{'-':>11}"
            base = f"{row.baseline:>11.2f}" if row.baseline is not None else f"{'-':>11}"
            ratio = f"{row.ratio:>8.3f}" if row.ratio is not None else f"{'-':>8}"
            lines.append(f"{name:<{width}}{ours}{base}{ratio}  {row.unit:<10}{row.note}".rstrip())
        return "\n".join(lines)

    def save(self, path: Path, machine: dict[str, Any], settings: dict[str, Any], order: list[str]) -> None:
        """Write the machine, settings and rows (in table order) as JSON."""
        names = [n for n in order if n in self.rows] + [n for n in self.rows if n not in order]
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "machine": machine,
            "settings": settings,
            "budget_s": self.total_s,
            "elapsed_s": round(time.perf_counter() - self.start, 2),
            "rows": [self.rows[n].as_dict() for n in names],
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
