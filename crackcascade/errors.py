"""Errors that crackcascade reports to users as one line (file or option, and what to do)."""

from __future__ import annotations


class CrackcascadeError(Exception):
    """Base class of the errors the CLI prints as a single line instead of a traceback."""


class DataError(CrackcascadeError, ValueError):
    """A data file, folder or label is missing, unreadable or inconsistent."""


class ConfigError(CrackcascadeError, ValueError):
    """An option has a value that cannot work (names the option)."""


class WeightsError(CrackcascadeError, ValueError):
    """A weight file or checkpoint cannot be loaded into the model (names the file)."""


class NumericalError(CrackcascadeError, ArithmeticError):
    """Training produced a NaN or infinite loss (names the step, the task or loss term, the batch's files)."""


class StoppedError(CrackcascadeError):
    """The run was stopped from outside (SIGTERM) after saving a checkpoint; the CLI exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(err: BaseException) -> str:
    """Reduce an error to one line a user can act on.

    Errors raised inside DataLoader worker processes come back wrapped in a message that holds
    the worker's whole traceback; the actionable text is its last line, after the class name.

    Args:
        err: The exception to summarize.

    Returns:
        A single line without a trailing class prefix.
    """
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(err).__name__
    for prefix in (f"{type(err).__module__}.{type(err).__qualname__}: ", f"{type(err).__qualname__}: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return text


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its class name if it has none), to quote inside a one-line error."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def find_error(err: BaseException) -> CrackcascadeError | None:
    """Return the crackcascade error behind ``err``, following causes and contexts.

    jsonargparse wraps exceptions raised while it instantiates classes from a config (for
    example ``ValueError: Does not validate against any of the Union subtypes``); the error a
    user can act on is further down the chain.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, CrackcascadeError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
