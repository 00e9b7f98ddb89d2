"""The Phi-Net writer (PHI Challenge arrays, class folders or CSV manifests) and the worker pool all writers share."""

from __future__ import annotations

import contextlib
import csv
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
from numpy.lib.format import open_memmap
from PIL import Image

from crackcascade.labels import (
    TASK_NAMES,
    get_task,
    resolve_tasks,
)
from crackcascade.synthetic.rendering import check_size, sample_for_task
from crackcascade.synthetic.scene import FORMATS, TASK_SCALES

_J = TypeVar("_J")
_R = TypeVar("_R")

SPLITS = ("train", "test")
CSV_STREAM = len(TASK_NAMES)  # seed stream of the CSV images, distinct from every task index


@dataclass(frozen=True)
class _Job:
    """One image to render: its seed, what to sample, and where the worker writes it (if anywhere)."""

    seed: int
    stream: int
    split: int
    index: int
    size: int
    task: str | None  # None: draw the task (and class) from ``tasks`` with the image's own seed
    label: int
    tasks: tuple[str, ...] = ()
    path: str | None = None  # None: return the pixels to the parent


def _run_job(job: _Job) -> tuple[np.ndarray | None, dict[str, int], str]:
    rng = np.random.default_rng([job.seed, job.stream, job.split, job.index])
    task, label = job.task, job.label
    if task is None:
        task = job.tasks[int(rng.integers(len(job.tasks)))]
        label = int(rng.integers(get_task(task).num_classes))
    scene = sample_for_task(rng, task, label, job.size)
    scale = str(scene.attributes["scale"])
    if job.path is None:
        return scene.image, scene.labels, scale
    image = Image.fromarray(scene.image)
    if job.path.endswith(".jpg"):
        image.save(job.path, format="JPEG", quality=95)
    else:
        # Level 6 (the default) is four times slower and no smaller on noisy photos.
        image.save(job.path, format="PNG", compress_level=1)
    return None, scene.labels, scale


@contextlib.contextmanager
def mapper(function: Callable[[_J], _R], workers: int) -> Iterator[Callable[[Iterable[_J]], Iterator[_R]]]:
    """An ordered ``map`` of ``function`` over jobs: in-process, or across a pool of ``workers`` processes.

    Every job carries its own seed, so the files are the same whichever way the jobs run.
    """
    if workers == 1:
        yield lambda jobs: map(function, jobs)
        return
    with multiprocessing.get_context().Pool(workers) as pool:
        yield lambda jobs: pool.imap(function, jobs, chunksize=4)


def _class_order(seed: int, stream: int, split: int, n: int, num_classes: int) -> np.ndarray:
    """Balanced labels (cycling through the classes) in a seeded random order."""
    labels = np.arange(n, dtype=np.int64) % num_classes
    np.random.default_rng([seed, stream, split]).shuffle(labels)
    return labels


def csv_count(n: int, n_tasks: int) -> int:
    """Number of CSV images that give about ``n`` labels to each of ``n_tasks`` tasks, about three per image."""
    return 0 if n == 0 else max(1, round(n * n_tasks / 3))


def check_integers(**options: tuple[object, int]) -> None:
    """Raise a one-line ValueError naming the first option that is not an integer >= its minimum.

    Args:
        **options: Option name -> (value, minimum).
    """
    for name, (value, minimum) in options.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def write_phinet(
    root: str | Path,
    *,
    format: Literal["arrays", "folders", "csv"] = "arrays",
    n_train: int = 100,
    n_test: int = 20,
    size: int = 224,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
    workers: int = 1,
) -> Path:
    """Write a synthetic Phi-Net set in one of the real on-disk formats.

    * ``arrays`` (PHI Challenge): ``root/<task>/X_train.npy`` ``(N, H, W, 3)`` uint8 and
      ``y_train.npy`` ``(N,)`` int64, and ``X_test.npy`` / ``y_test.npy``; ``n_train`` /
      ``n_test`` images per task with balanced classes in a random order.
    * ``folders``: ``root/<task>/<split>/<class>/<task>_<index:05d>.jpg`` (JPEG quality 95);
      every class folder is created, even one left empty by a tiny set.
    * ``csv``: ``root/images/<index:06d>.png`` and ``root/train.csv`` / ``root/test.csv`` with
      header ``path,<task>,...`` (all eight tasks); about ``n * len(tasks) / 3`` images per split,
      each sampled for a random selected task and class and also labelled (by class name) for
      every other selected task meaningful at its scale; other cells are blank.

    Each image has its own seed (``seed``, task, split, index), so the files are byte-identical
    for the same arguments, whatever ``workers``. ``n_test=0`` writes no test split.

    Args:
        root: Output folder (created if needed; files of the same names are overwritten).
        format: ``arrays``, ``folders`` or ``csv``.
        n_train: Training images per task (>= 1).
        n_test: Test images per task (>= 0).
        size: Image side in pixels (>= 32).
        seed: Base seed (>= 0).
        tasks: Tasks to write (names or aliases); None for all eight.
        workers: Processes rendering in parallel (>= 1).

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: With a one-line message naming the bad option.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    check_integers(n_train=(n_train, 1), n_test=(n_test, 0), seed=(seed, 0), workers=(workers, 1))
    size = check_size(size)
    try:
        chosen = resolve_tasks(None if tasks is None else [tasks] if isinstance(tasks, str) else list(tasks))
    except ValueError as err:
        raise ValueError(f"tasks: {err}") from None
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    counts = {"train": int(n_train), "test": int(n_test)}
    with mapper(_run_job, int(workers)) as run:
        if format == "csv":
            _write_csv(root, run, chosen, counts, size, int(seed))
        else:
            for task in chosen:
                _write_task(root, run, format, task, counts, size, int(seed))
    return root


def _write_task(
    root: Path,
    run: Callable[[Iterable[_Job]], Iterator[tuple[np.ndarray | None, dict[str, int], str]]],
    format: str,
    task: str,
    counts: dict[str, int],
    size: int,
    seed: int,
) -> None:
    spec = get_task(task)
    stream = TASK_NAMES.index(spec.name)
    for split_index, split in enumerate(SPLITS):
        n = counts[split]
        if n == 0:
            continue
        labels = _class_order(seed, stream, split_index, n, spec.num_classes)
        if format == "arrays":
            task_dir = root / spec.name
            task_dir.mkdir(parents=True, exist_ok=True)
            jobs = (_Job(seed, stream, split_index, i, size, spec.name, int(y)) for i, y in enumerate(labels))
            # Streamed into a memory-mapped .npy: the same bytes as np.save, without holding N images.
            x = open_memmap(task_dir / f"X_{split}.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
            for i, (image, _, _) in enumerate(run(jobs)):
                x[i] = image
            x.flush()
            del x
            np.save(task_dir / f"y_{split}.npy", labels)
        else:
            split_dir = root / spec.name / split
            for name in spec.classes:
                (split_dir / name).mkdir(parents=True, exist_ok=True)
            jobs = (
                _Job(
                    seed,
                    stream,
                    split_index,
                    i,
                    size,
                    spec.name,
                    int(labels[i]),
                    (),
                    str(split_dir / spec.classes[int(labels[i])] / f"{spec.name}_{i:05d}.jpg"),
                )
                for i in range(n)
            )
            for _ in run(jobs):
                pass


def _write_csv(
    root: Path,
    run: Callable[[Iterable[_Job]], Iterator[tuple[np.ndarray | None, dict[str, int], str]]],
    tasks: tuple[str, ...],
    counts: dict[str, int],
    size: int,
    seed: int,
) -> None:
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    offset = 0  # image numbers run on across the splits, so train and test never share a file
    for split_index, split in enumerate(SPLITS):
        n = csv_count(counts[split], len(tasks))
        if n == 0:
            continue
        names = [f"{offset + i:06d}.png" for i in range(n)]
        paths = [str(images / name) for name in names]
        jobs = (_Job(seed, CSV_STREAM, split_index, i, size, None, 0, tasks, p) for i, p in enumerate(paths))
        with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["path", *TASK_NAMES])
            for name, (_, labels, scale) in zip(names, run(jobs), strict=True):
                row = [f"images/{name}"]
                for task in TASK_NAMES:
                    # A scene is labelled only for the selected tasks that have a meaning at its scale.
                    labelled = task in tasks and scale in TASK_SCALES[task]
                    row.append(get_task(task).classes[labels[task]] if labelled else "")
                writer.writerow(row)
        offset += n
