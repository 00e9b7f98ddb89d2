"""The crack-mask writer: per scale, image/mask pairs or a COCO export of scenes with cracks of known width."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from crackcascade.labels import (
    CRACK,
    SCALES,
    normalize_name,
)
from crackcascade.synthetic.drawing import pick
from crackcascade.synthetic.rendering import check_size, render_scene
from crackcascade.synthetic.scene import CRACK_TYPES, SPALLED
from crackcascade.synthetic.writers import CSV_STREAM, SPLITS, check_integers, mapper

MASK_FORMATS: tuple[str, ...] = ("coco", "masks")
"""On-disk formats :func:`write_crack_masks` writes."""

_MASK_LAYERS: dict[str, str] = {normalize_name(CRACK): "crack_mask", normalize_name(SPALLED): "spalling_mask"}
"""Mask class (normalised) -> the :class:`Scene` attribute holding its pixels."""

MASK_STREAM = CSV_STREAM + 1  # seed stream of the mask sets, distinct from the Phi-Net writers'
_COCO_ENCODINGS = ("polygon", "rle", "rle_uncompressed")
_PALETTE = [0, 0, 0, 255, 0, 0, 0, 0, 255, 255, 255, 0, 0, 255, 0, 255, 0, 255, 0, 255, 255]


@dataclass(frozen=True)
class _MaskJob:
    """One image of a crack-mask set: its seed, whether it is crack-free, and where it goes."""

    seed: int
    scale: int  # index in SCALES
    split: int
    index: int
    size: int
    crack_free: bool
    classes: tuple[str, ...]
    image_path: str
    mask_path: str | None  # None: COCO, return the encoded annotations instead


def _run_mask_job(job: _MaskJob) -> list[dict[str, Any]]:
    rng = np.random.default_rng([job.seed, MASK_STREAM, job.scale, job.split, job.index])
    scale = SCALES[job.scale]
    if job.crack_free:
        scene = render_scene(rng, job.size, scale=scale, damaged=False, distractors=True)
    else:
        scene = render_scene(rng, job.size, scale=scale, damage_type=pick(rng, CRACK_TYPES))
    Image.fromarray(scene.image).save(job.image_path, format="PNG", compress_level=1)
    layers = [getattr(scene, _MASK_LAYERS[normalize_name(name)]) for name in job.classes]
    if job.mask_path is None:
        # Each class is cut into horizontal bands, one instance each, so that an image holds several
        # instances per class in different encodings, as hand-made exports do.
        annotations = []
        bands = np.array_split(np.arange(job.size), len(_COCO_ENCODINGS))
        for value, layer in enumerate(layers, start=1):
            for band_index, rows in enumerate(bands):
                band = np.zeros_like(layer)
                band[rows] = layer[rows]
                if band.any():
                    encoding = _COCO_ENCODINGS[(job.index + value + band_index) % len(_COCO_ENCODINGS)]
                    annotations.append(_coco_annotation(band, value, encoding))
        return annotations
    if len(layers) == 1:
        Image.fromarray(layers[0].astype(np.uint8) * 255).save(job.mask_path, format="PNG")
    else:
        values = np.zeros((job.size, job.size), dtype=np.uint8)
        for value in range(len(layers), 0, -1):  # the class listed first wins where classes overlap
            values[layers[value - 1]] = value
        mask = Image.fromarray(values, mode="P")
        mask.putpalette(_PALETTE)
        mask.save(job.mask_path, format="PNG")
    return []


def _coco_annotation(layer: np.ndarray, category: int, encoding: str) -> dict[str, Any]:
    """One COCO instance holding all of ``layer``, as polygons or RLE (compressed or not)."""
    fortran = np.asfortranarray(layer.astype(np.uint8))
    rle = mask_utils.encode(fortran)
    if encoding == "polygon":
        segmentation: Any = _run_polygons(layer)
    elif encoding == "rle":
        segmentation = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    else:
        flat = fortran.ravel(order="F")
        edges = np.flatnonzero(np.diff(flat)) + 1
        # COCO counts start with a run of zeros (possibly empty) and alternate from there.
        bounds = np.concatenate([[0], edges, [flat.size]])
        counts = np.diff(bounds).tolist()
        segmentation = {"size": list(layer.shape), "counts": ([0] if flat[0] else []) + counts}
    return {
        "category_id": category,
        "segmentation": segmentation,
        "area": float(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": 0 if encoding == "polygon" else 1,
    }


def _run_polygons(layer: np.ndarray) -> list[list[float]]:
    """Exact polygons of a binary mask: pixel-aligned rectangles of row runs, stacked where equal.

    Scenes keep no outline polygon of their cracks or spalling, and tracing outlines without cv2
    is long; rectangles on pixel corners rasterise in pycocotools to exactly their pixels.
    """
    polygons: list[list[float]] = []
    open_runs: dict[tuple[int, int], int] = {}  # (x0, x1) -> first row
    height = layer.shape[0]
    for y in range(height + 1):
        runs: set[tuple[int, int]] = set()
        if y < height:
            row = np.concatenate([[False], layer[y], [False]])
            edges = np.flatnonzero(row[1:] != row[:-1])
            runs = {(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)}
        for x0, x1 in sorted(set(open_runs) - runs):
            top = open_runs.pop((x0, x1))
            polygons.append([float(v) for v in (x0, top, x1, top, x1, y, x0, y)])
        for run in sorted(runs - set(open_runs)):
            open_runs[run] = y
    return polygons


def write_crack_masks(
    root: str | Path,
    *,
    format: Literal["coco", "masks"] = "masks",
    scales: Sequence[str] = SCALES,
    n_train: int = 40,
    n_test: int = 10,
    size: int = 256,
    seed: int = 0,
    classes: Sequence[str] = (CRACK,),
    workers: int = 1,
) -> Path:
    """Write synthetic crack-mask sets, one per scale, in a real segmentation format.

    Writes ``root/<scale>/train/`` and ``root/<scale>/test/`` (the layout
    :class:`~crackcascade.data.datamodules.CrackMaskDataModule` reads), each holding
    ``images/<split>_<index:05d>.png`` and either

    * ``masks``: ``masks/<same name>.png``, 0/255 for one class, or a palette PNG of class
      indices ``1..K`` for several (the class listed first wins where classes overlap); or
    * ``coco``: ``annotations.json`` where each class of an image is cut into up to three
      instances (horizontal thirds of the image), encoded in turn as polygons (``iscrowd`` 0;
      exact pixel-aligned rectangles, since scenes keep no outline polygon), compressed RLE and
      uncompressed RLE (``iscrowd`` 1).

    About a third of the images (``round(n / 3)`` per split and scale) are undamaged scenes with
    distractors (joints, wires, stains, shadows): crack-free negatives with all-zero masks. The
    others have cracks of a random damage type, and spalling where the scene draws it. Each
    image has its own seed (``seed``, scale, split, index), so both formats hold the same scenes
    and the files are identical whatever ``workers``.

    Args:
        root: Output folder (created if needed; files of the same names are overwritten).
        format: ``masks`` or ``coco``.
        scales: Scene scales to write (any spelling of :data:`~crackcascade.labels.SCALES`).
        n_train: Training images per scale (>= 1).
        n_test: Test images per scale (>= 0; 0 writes no test split).
        size: Image side in pixels (>= 32).
        seed: Base seed (>= 0).
        classes: Mask classes in value order, each ``crack`` or ``spalling``.
        workers: Processes rendering in parallel (>= 1).

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: With a one-line message naming the bad option.
    """
    if format not in MASK_FORMATS:
        raise ValueError(f"format must be one of {', '.join(MASK_FORMATS)}, got {format!r}")
    check_integers(n_train=(n_train, 1), n_test=(n_test, 0), seed=(seed, 0), workers=(workers, 1))
    size = check_size(size)
    scale_indices = mask_scales(scales)
    chosen = _mask_classes(classes)
    root = Path(root)
    counts = {"train": int(n_train), "test": int(n_test)}
    with mapper(_run_mask_job, int(workers)) as run:
        for scale_index in scale_indices:
            for split_index, split in enumerate(SPLITS):
                n = counts[split]
                if n == 0:
                    continue
                split_dir = root / SCALES[scale_index] / split
                (split_dir / "images").mkdir(parents=True, exist_ok=True)
                if format == "masks":
                    (split_dir / "masks").mkdir(parents=True, exist_ok=True)
                free = np.zeros(n, dtype=bool)
                order = np.random.default_rng([int(seed), MASK_STREAM, scale_index, split_index]).permutation(n)
                free[order[: round(n / 3)]] = True
                names = [f"{split}_{i:05d}.png" for i in range(n)]
                jobs = (
                    _MaskJob(
                        int(seed),
                        scale_index,
                        split_index,
                        i,
                        size,
                        bool(free[i]),
                        chosen,
                        str(split_dir / "images" / names[i]),
                        str(split_dir / "masks" / names[i]) if format == "masks" else None,
                    )
                    for i in range(n)
                )
                results = list(run(jobs))
                if format == "coco":
                    _write_coco(split_dir / "annotations.json", names, results, size, chosen)
    return root


def mask_scales(scales: Sequence[str]) -> list[int]:
    """Indices into :data:`~crackcascade.labels.SCALES` of the scales named (ValueError if one is unknown)."""
    names = [scales] if isinstance(scales, str) else list(scales)
    if not names:
        raise ValueError(f"scales is empty; choose from: {', '.join(SCALES)}")
    keys = [normalize_name(s) for s in SCALES]
    indices = set()
    for name in names:
        if normalize_name(str(name)) not in keys:
            raise ValueError(f"scales: unknown scale {name!r}; choose from: {', '.join(SCALES)}")
        indices.add(keys.index(normalize_name(str(name))))
    return sorted(indices)


def _mask_classes(classes: Sequence[str]) -> tuple[str, ...]:
    names = (classes,) if isinstance(classes, str) else tuple(str(c) for c in classes)
    keys = [normalize_name(c) for c in names]
    if not names or len(set(keys)) != len(keys) or any(k not in _MASK_LAYERS for k in keys):
        raise ValueError(f"classes must be distinct names among {CRACK}, {SPALLED}; got {list(names)}")
    return names


def _write_coco(
    path: Path, names: list[str], results: list[list[dict[str, Any]]], size: int, classes: tuple[str, ...]
) -> None:
    images = [{"id": i + 1, "file_name": name, "height": size, "width": size} for i, name in enumerate(names)]
    annotations: list[dict[str, Any]] = []
    for image_id, instances in enumerate(results, start=1):
        for instance in instances:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **instance})
    categories = [{"id": k, "name": name, "supercategory": "damage"} for k, name in enumerate(classes, start=1)]
    data = {
        "info": {"description": "crackcascade synthetic crack masks"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    path.write_text(json.dumps(data), encoding="utf-8")
