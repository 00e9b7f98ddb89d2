"""CSV manifests of a Phi-Net root: ``path,<task>,...`` rows whose cells are class names or indices.

An image may be labelled for several tasks in one row; a blank cell means "not labelled".
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from crackcascade.data.io import BadFiles, check_files_exist
from crackcascade.data.phinet.entries import MANIFEST_KEY, SPLIT_ALIASES, SPLITS, Entry, Index
from crackcascade.errors import DataError, first_line
from crackcascade.labels import IGNORE_INDEX, TASK_NAMES, Task, get_task, normalize_name, task_index


def read_csv_root(root: Path, tasks: tuple[str, ...] | None, bad: BadFiles) -> tuple[Index, tuple[str, ...]]:
    """Read the ``train.csv`` / ``val.csv`` / ``test.csv`` manifests of a CSV root; return the index and its tasks."""
    index: Index = {split: {} for split in SPLITS}
    provided: set[str] = set()
    for split in SPLITS:
        csv_path = next((root / f"{a}.csv" for a in SPLIT_ALIASES[split] if (root / f"{a}.csv").is_file()), None)
        if csv_path is None:
            continue
        entry, columns = read_manifest(csv_path, tasks, bad)
        provided.update(columns)
        if len(entry):
            index[split][MANIFEST_KEY] = entry
    if MANIFEST_KEY not in index["train"]:
        raise DataError(f"{root / 'train.csv'}: no rows with labels for the selected tasks")
    if tasks is not None:
        absent = [t for t in tasks if t not in provided]
        if absent:
            raise DataError(
                f"{root / 'train.csv'}: no column for task '{absent[0]}'; add it or drop it from --data.tasks"
            )
        return index, tasks
    return index, tuple(t for t in TASK_NAMES if t in provided)


def read_manifest(
    csv_path: Path, tasks: tuple[str, ...] | None, bad: BadFiles | None = None
) -> tuple[Entry, tuple[str, ...]]:
    """Read a CSV manifest ``path,<task>,...`` whose cells are class names or indices.

    Blank cells mean "not labelled for this task". Paths are relative to the CSV's folder
    unless absolute (a manifest may list images anywhere, so no root boundary applies). Rows
    without any label for the selected tasks are dropped. Image headers are checked.

    Args:
        csv_path: The manifest.
        tasks: Tasks to keep; None keeps every task column.
        bad: Counts missing or unreadable images when skipping; None raises on the first.

    Returns:
        The entry and the task columns found in the file.

    Raises:
        DataError: Unknown or repeated column, unknown class, index out of range, an image
            given two labels for one task, or (unless skipped) a missing or unreadable image.
    """
    bad = bad if bad is not None else BadFiles()
    with io.StringIO(_read_text(csv_path), newline="") as handle:
        reader = _rows(csv_path, csv.reader(handle))
        header = next(reader, None)
        if not header or normalize_name(header[0]) != "path":
            raise DataError(f"{csv_path}: the first column must be 'path' (header: {header})")
        columns: list[tuple[int, Task]] = []
        for position, name in enumerate(header[1:], start=1):
            try:
                task = get_task(name)
            except KeyError:
                raise DataError(
                    f"{csv_path}: unknown column '{name}'; columns are path and task names ({', '.join(TASK_NAMES)})"
                ) from None
            twin = next((header[p] for p, t in columns if t.name == task.name), None)
            if twin is not None:
                # Two columns for one task (e.g. "scene" and "task1"): one would silently win.
                raise DataError(f"{csv_path}: columns '{twin}' and '{name}' are both task '{task.name}'; keep one")
            columns.append((position, task))
        keep = [(pos, task) for pos, task in columns if tasks is None or task.name in tasks]
        paths: list[Path] = []
        rows: list[np.ndarray] = []
        seen: dict[tuple[Path, str], tuple[int, int]] = {}
        for line_number, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{csv_path}:{line_number}: {len(row)} cells for {len(header)} columns")
            labels = np.full(len(TASK_NAMES), IGNORE_INDEX, dtype=np.int64)
            for position, task in keep:
                labels[task_index(task.name)] = _parse_cell(row[position], task, f"{csv_path}:{line_number}")
            if (labels == IGNORE_INDEX).all():
                continue
            path = Path(row[0].strip())
            path = path if path.is_absolute() else csv_path.parent / path
            for _, task in keep:
                # An image may be listed again (for other tasks, or to weigh it more), never with another label.
                label = int(labels[task_index(task.name)])
                earlier = seen.setdefault((path, task.name), (line_number, label)) if label != IGNORE_INDEX else None
                if earlier is not None and earlier[1] != label:
                    raise DataError(
                        f"{csv_path}:{line_number}: {row[0].strip()} is {task.classes[label]} for task "
                        f"'{task.name}' but {task.classes[earlier[1]]} on line {earlier[0]}; keep one label"
                    )
            paths.append(path)
            rows.append(labels)
    if bad.on_error == "raise":
        check_files_exist(paths, str(csv_path))
    keep_rows = [i for i, path in enumerate(paths) if bad.check(path)]
    paths = [paths[i] for i in keep_rows]
    rows = [rows[i] for i in keep_rows]
    matrix = np.stack(rows) if rows else np.zeros((0, len(TASK_NAMES)), dtype=np.int64)
    return Entry(labels=matrix, paths=paths), tuple(t.name for _, t in columns)


def _rows(csv_path: Path, reader: Any) -> Iterator[list[str]]:
    """The rows of a ``csv.reader``, its errors (a NUL byte, an overlong field) as one line naming the file."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(f"{csv_path}:{reader.line_num}: not valid CSV ({err}); save it as CSV UTF-8") from None
        yield row


def _read_text(csv_path: Path) -> str:
    """The manifest's text, UTF-8 with or without a byte-order mark; anything else is refused, not guessed.

    Excel saves "CSV" in the system's code page (Latin-1 / cp1252 in Western Europe) and "Unicode
    text" as UTF-16; read as UTF-8 either would turn accented file names into other names.
    """
    try:
        data = csv_path.read_bytes()
    except OSError as err:
        raise DataError(f"{csv_path}: cannot read manifest ({first_line(err)})") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(f"{csv_path}: the manifest is UTF-16 text; save it as UTF-8 (in Excel: CSV UTF-8)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{csv_path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}, e.g. an accent saved as Latin-1 "
            "or Windows-1252); save the manifest as UTF-8 (in Excel: CSV UTF-8)"
        ) from None


def _parse_cell(cell: str, task: Task, where: str) -> int:
    text = cell.strip()
    if text == "" or text.lower() in {"nan", "na", "none"}:
        return IGNORE_INDEX
    if text.lstrip("-").isdigit():
        value = int(text)
        if value == IGNORE_INDEX:
            return IGNORE_INDEX
        if not 0 <= value < task.num_classes:
            raise DataError(
                f"{where}: label {value} is out of range for task '{task.name}' "
                f"({task.num_classes} classes: {', '.join(task.classes)})"
            )
        return value
    try:
        return task.class_index(text)
    except KeyError as err:
        raise DataError(f"{where}: {err.args[0]}") from None
