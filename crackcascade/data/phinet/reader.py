"""Readers for the three Phi-Net on-disk formats.

Each reader turns a root folder into an index: for every split, one :class:`Entry` per loader
key (a task for the per-task formats, ``"manifest"`` for a CSV whose images carry several
labels). Readers validate what they can cheaply (shapes, dtypes, label ranges, class folders,
CSV columns, missing files, image headers, symlinks out of the root) so that bad data fails at
set-up with one line naming the file, never as a silently wrong label. A :class:`BadFiles`
passed in with ``on_error="skip"`` counts bad image files instead and leaves them out; bad
labels, arrays and manifests always raise, as skipping them would change what the other rows mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from crackcascade.data.io import BadFiles, escape_message, scan_images
from crackcascade.data.phinet.entries import SPLIT_ALIASES, SPLITS, Entry, Format, Index
from crackcascade.data.phinet.manifest import read_csv_root
from crackcascade.errors import DataError
from crackcascade.labels import IGNORE_INDEX, TASK_NAMES, Task, get_task, normalize_name, task_index


def detect_format(root: Path) -> Literal["arrays", "folders", "csv"]:
    """Guess the format of a Phi-Net root folder.

    Raises:
        DataError: If the root is missing or holds none of the three formats.
    """
    if not root.is_dir():
        raise DataError(f"data.root '{root}' does not exist or is not a folder; set --data.root to your data")
    if (root / "train.csv").is_file():
        return "csv"
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if any((d / "X_train.npy").is_file() for d in subdirs):
        return "arrays"
    if any(_find_dir(d, SPLIT_ALIASES["train"]) is not None for d in subdirs):
        return "folders"
    raise DataError(
        f"data.root '{root}': no Phi-Net data found (expected train.csv, <task>/X_train.npy or "
        "<task>/train/<class>/ images); see docs/data.md"
    )


def read_index(
    root: str | Path, fmt: Format, tasks: tuple[str, ...] | None, bad: BadFiles | None = None
) -> tuple[Index, tuple[str, ...]]:
    """Read a Phi-Net root in any format.

    Args:
        root: Dataset root folder.
        fmt: Format, or ``"auto"`` to detect it.
        tasks: Canonical task names to load; None loads every task found.
        bad: Collects bad image files (``on_error="skip"``) and ignored non-image files; None
            raises on the first bad file.

    Returns:
        The index and the tasks it provides labels for, in official order.
    """
    root = Path(root)
    kind = detect_format(root) if fmt == "auto" else fmt
    if not root.is_dir():
        raise DataError(f"data.root '{root}' does not exist or is not a folder; set --data.root to your data")
    bad = bad if bad is not None else BadFiles()
    if kind == "csv":
        return read_csv_root(root, tasks, bad)
    task_dirs = _task_dirs(root, tasks)
    index: Index = {split: {} for split in SPLITS}
    for task, task_dir in task_dirs.items():
        if kind == "arrays":
            entries = _read_array_task(task_dir, get_task(task))
        else:
            entries = _read_folder_task(task_dir, get_task(task), root, bad)
        for split, entry in entries.items():
            index[split][task] = entry
    missing = [task for task in task_dirs if task not in index["train"]]
    if missing:
        raise DataError(f"{task_dirs[missing[0]]}: no training data for task '{missing[0]}' in {kind} format")
    return index, tuple(task_dirs)


def _find_dir(parent: Path, names: tuple[str, ...]) -> Path | None:
    wanted = {normalize_name(n) for n in names}
    for child in sorted(parent.iterdir()):
        if child.is_dir() and normalize_name(child.name) in wanted:
            return child
    return None


def _task_dirs(root: Path, tasks: tuple[str, ...] | None) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        try:
            task = get_task(child.name)
        except KeyError:
            continue
        found.setdefault(task.name, child)
    if tasks is None:
        if not found:
            raise DataError(f"data.root '{root}': no task folders found (expected names like {', '.join(TASK_NAMES)})")
        return {t: found[t] for t in TASK_NAMES if t in found}
    for name in tasks:
        if name not in found:
            names = ", ".join((name, *get_task(name).aliases))
            raise DataError(
                f"data.root '{root}': no folder for task '{name}' (looked for {names}); "
                "add it or choose the tasks you have with --data.tasks"
            )
    return {t: found[t] for t in tasks}


def _read_array_task(task_dir: Path, task: Task) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for split in SPLITS:
        for alias in SPLIT_ALIASES[split]:
            x_path = task_dir / f"X_{alias}.npy"
            if x_path.is_file():
                n = _check_x_array(x_path)
                labels = _read_y_array(task_dir, alias, task, n)
                entries[split] = Entry(labels=labels, x_path=x_path, column=task_index(task.name))
                break
    if "train" not in entries:
        raise DataError(f"{task_dir}: task folder has no X_train.npy; PHI arrays need X_train.npy and y_train.npy")
    return entries


def _check_x_array(x_path: Path) -> int:
    try:
        x = np.load(x_path, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        raise DataError(f"{x_path}: cannot read array ({err}); re-save it with numpy.save") from None
    got = f"expected uint8 images of shape (N, H, W, 3), got {x.dtype} {tuple(x.shape)}"
    if x.ndim != 4 or x.shape[-1] != 3:
        if x.ndim == 4 and x.shape[1] == 3:
            hint = "the channels come first (NCHW); save x.transpose(0, 2, 3, 1)"
        elif x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 1):
            hint = "grayscale images need 3 channels; save np.repeat(x.reshape(*x.shape[:3], 1), 3, axis=3)"
        elif x.ndim == 4 and x.shape[-1] == 4:
            hint = "drop the alpha channel; save x[..., :3]"
        else:
            hint = "save the images as one (N, H, W, 3) array"
        raise DataError(f"{x_path}: {got}; {hint}")
    if x.dtype != np.uint8:
        if x.dtype.kind == "f":
            hint = "scale to 0..255 and round, e.g. np.rint(x * 255).astype(np.uint8) for values in 0..1"
        else:
            hint = "convert to 8 bits, e.g. (x >> 8).astype(np.uint8) for 16-bit images"
        raise DataError(f"{x_path}: {got}; {hint}")
    return int(x.shape[0])


def _read_y_array(task_dir: Path, split: str, task: Task, n: int) -> np.ndarray:
    candidates = [task_dir / f"y_{split}.npy", task_dir / f"Y_{split}.npy"]
    y_path = next((p for p in candidates if p.is_file()), None)
    if y_path is None:
        raise DataError(f"{task_dir}: X_{split}.npy has no label file y_{split}.npy (or Y_{split}.npy)")
    try:
        y = np.load(y_path, allow_pickle=False)
    except Exception as err:
        raise DataError(f"{y_path}: cannot read array ({err}); re-save it with numpy.save") from None
    labels = decode_labels(y, task, str(y_path))
    if len(labels) != n:
        raise DataError(f"{y_path}: {len(labels)} labels for {n} images in X_{split}.npy; they must match")
    return labels


def decode_labels(y: np.ndarray, task: Task, source: str) -> np.ndarray:
    """Turn integer, one-hot or class-name labels into validated class indices.

    Args:
        y: ``(N,)`` or ``(N, 1)`` integers, ``(N, C)`` one-hot rows, or ``(N,)`` strings: class
            names of the task in any spelling :meth:`~crackcascade.labels.Task.class_index`
            accepts, or indices written as text, as in a CSV manifest.
        task: The task the labels belong to (gives C).
        source: File named in errors.

    Raises:
        DataError: On a wrong shape, non-integer values, one-hot rows that do not sum to one,
            a string that is not a class of the task, or labels outside ``[0, C)``.
    """
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind in "US":
        if y.ndim != 1:
            raise DataError(f"{source}: class-name labels must be one name per image (N,), got shape {tuple(y.shape)}")
        y = _names_to_indices(y, task, source)
    if y.ndim == 2:
        if y.shape[1] != task.num_classes:
            raise DataError(
                f"{source}: one-hot labels have {y.shape[1]} columns but task '{task.name}' has "
                f"{task.num_classes} classes ({', '.join(task.classes)})"
            )
        if not np.all((y == 0) | (y == 1)) or not np.all(y.sum(axis=1) == 1):
            bad = int(np.flatnonzero(~np.all((y == 0) | (y == 1), axis=1) | (y.sum(axis=1) != 1))[0])
            raise DataError(f"{source}: one-hot row {bad} is not a single 1 among 0s; fix the label")
        return np.argmax(y, axis=1).astype(np.int64)
    if y.ndim != 1:
        raise DataError(f"{source}: labels must be (N,), (N, 1) or one-hot (N, C), got shape {tuple(y.shape)}")
    if y.dtype.kind not in "iub" and not np.all(np.mod(y, 1) == 0):
        raise DataError(f"{source}: labels must be whole numbers, got dtype {y.dtype}")
    labels = y.astype(np.int64)
    bad_mask = (labels < 0) | (labels >= task.num_classes)
    if bad_mask.any():
        row = int(np.flatnonzero(bad_mask)[0])
        raise DataError(
            f"{source}: label {labels[row]} at row {row} is out of range for task '{task.name}' "
            f"({task.num_classes} classes: {', '.join(task.classes)})"
        )
    return labels


def _names_to_indices(y: np.ndarray, task: Task, source: str) -> np.ndarray:
    """Map the strings of a label array (class names, or indices as text) to integers; the range is checked later."""
    names, inverse = np.unique(y, return_inverse=True)
    values = []
    for name in names.tolist():
        text = (name.decode("utf-8", "replace") if isinstance(name, bytes) else name).strip()
        if text.lstrip("-").isdigit():
            values.append(int(text))
            continue
        try:
            values.append(task.class_index(text))
        except KeyError:
            row = int(np.flatnonzero(y == name)[0])
            raise DataError(
                f"{source}: label {text!r} at row {row} is not a class of task '{task.name}' "
                f"(classes: {', '.join(task.classes)}); use these names or their indices 0..{task.num_classes - 1}"
            ) from None
    return np.asarray(values, dtype=np.int64)[inverse.reshape(-1)]


def _read_folder_task(task_dir: Path, task: Task, root: Path, bad: BadFiles) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    column = task_index(task.name)
    for split in SPLITS:
        split_dir = _find_dir(task_dir, SPLIT_ALIASES[split])
        if split_dir is None:
            continue
        paths: list[Path] = []
        labels: list[int] = []
        for class_dir in sorted(split_dir.iterdir()):
            if class_dir.name.startswith("."):
                continue
            if not class_dir.is_dir():
                continue
            try:
                label = task.class_index(class_dir.name)
            except KeyError:
                raise DataError(
                    f"{class_dir}: '{class_dir.name}' is not a class of task '{task.name}'; "
                    f"class folders must be named {', '.join(task.classes)}"
                ) from None
            files = _usable_images(class_dir, root, bad)
            paths.extend(files)
            labels.extend([label] * len(files))
        if not paths:
            skipped = " that could be read" if bad.total else ""
            raise DataError(f"{split_dir}: no images{skipped} in its class folders ({', '.join(task.classes)})")
        matrix = np.full((len(paths), len(TASK_NAMES)), IGNORE_INDEX, dtype=np.int64)
        matrix[:, column] = labels
        entries[split] = Entry(labels=matrix, paths=paths)
    if "train" not in entries:
        raise DataError(f"{task_dir}: task folder has no train/ split with class folders")
    return entries


def _usable_images(folder: Path, root: Path, bad: BadFiles) -> list[Path]:
    """Images of a class folder: header-checked, inside ``root``; other files are noted as ignored."""
    scan = scan_images(folder, boundary=root)
    bad.ignored.extend(scan.others)
    for path, target in scan.escaping:
        bad.report("symlinks out of the root", escape_message(path, target, root))
    return [path for path in scan.images if bad.check(path)]
