"""Procedural Phi-Net-like photos of structures with known damage, labels and masks.

The generator draws, with numpy and PIL only, the three Phi-Net scene scales:

* ``pixel``: a close-up of a concrete, masonry or steel surface filling the frame;
* ``object``: one structural member (beam, column, wall or something else such as a brace or a
  slab edge) in front of sky, ground and dim adjacent surfaces;
* ``structural``: a building facade with storeys and a window grid, intact, partially collapsed
  (a corner missing, a hanging fragment and a rubble heap) or globally collapsed (a rubble pile).

Damage is drawn with known geometry: cracks are branching random walks of known width (also
drawn into a crack mask) whose orientation relative to the member axis gives the damage type,
and spalling is an irregular rough patch (drawn into a spalling mask). Wires, joints, shadows
and stains appear in damaged and undamaged scenes alike, so "a dark thin line" alone is not a
crack. All eight Phi-Net labels are derived from what was drawn.

Every image depends only on its own seed, so the writers give byte-identical files for the same
arguments whatever the number of worker processes. ``crackcascade synthesize`` (:func:`main`)
writes a set in the PHI Challenge array layout, as class folders or as CSV manifests, or with
``--masks`` a crack-segmentation set per scale (:func:`write_crack_masks`: COCO or mask PNGs).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from numpy.lib.format import open_memmap
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from crackcascade.labels import (
    CRACK,
    CRACK_DAMAGE_TYPES,
    SCALES,
    TASK_NAMES,
    Task,
    get_task,
    normalize_name,
    resolve_tasks,
)

__all__ = [
    "MATERIALS",
    "TASK_SCALES",
    "CrackInfo",
    "Scene",
    "main",
    "render_scene",
    "sample_for_task",
    "write_concrete_cracks",
    "write_crack_masks",
    "write_phinet",
]

# ---------------------------------------------------------------------------------------------
# Names, all looked up in crackcascade.labels so that a renamed class fails here at import time.
# ---------------------------------------------------------------------------------------------

_SCENE = get_task("scene")
_STATE = get_task("damage_state")
_SPALLING = "spalling"  # both a task and its positive class
_SPALL = get_task(_SPALLING)
_MATERIAL = get_task("material")
_COLLAPSE = get_task("collapse")
_COMPONENT = get_task("component")
_LEVEL = get_task("damage_level")
_TYPE = get_task("damage_type")

_UNDAMAGED = "undamaged"  # a class of damage_state, damage_level and damage_type
_OTHER = "other"  # a class of material and component


def _cls(task: Task, name: str) -> str:
    """Return the canonical spelling of class ``name`` of ``task`` (KeyError if it is not one)."""
    return task.classes[task.class_index(name)]


PIXEL = _cls(_SCENE, "pixel")
OBJECT = _cls(_SCENE, "object")
STRUCTURAL = _cls(_SCENE, "structural")
DAMAGED = _cls(_STATE, "damaged")
SPALLED = _cls(_SPALL, _SPALLING)
NON_SPALLED = _cls(_SPALL, "non_spalling")
STEEL = _cls(_MATERIAL, "steel")
MATERIAL_OTHER = _cls(_MATERIAL, _OTHER)
NON_COLLAPSE = _cls(_COLLAPSE, "non_collapse")
PARTIAL_COLLAPSE = _cls(_COLLAPSE, "partial_collapse")
GLOBAL_COLLAPSE = _cls(_COLLAPSE, "global_collapse")
BEAM = _cls(_COMPONENT, "beam")
COLUMN = _cls(_COMPONENT, "column")
WALL = _cls(_COMPONENT, "wall")
COMPONENT_OTHER = _cls(_COMPONENT, _OTHER)
LEVEL_UNDAMAGED = _cls(_LEVEL, _UNDAMAGED)
MINOR = _cls(_LEVEL, "minor")
MODERATE = _cls(_LEVEL, "moderate")
HEAVY = _cls(_LEVEL, "heavy")
TYPE_UNDAMAGED = _cls(_TYPE, _UNDAMAGED)
FLEXURAL = _cls(_TYPE, "flexural")
SHEAR = _cls(_TYPE, "shear")
COMBINED = _cls(_TYPE, "combined")
CRACK_TYPES: tuple[str, ...] = tuple(_cls(_TYPE, name) for name in CRACK_DAMAGE_TYPES)

# Rendered materials; only steel is a material class, concrete and masonry are both "other".
CONCRETE = "concrete"
MASONRY = "masonry"
MATERIALS: tuple[str, ...] = (CONCRETE, MASONRY, STEEL)
"""Surface materials the generator renders (``material`` label: steel vs other)."""

TASK_SCALES: dict[str, tuple[str, ...]] = {
    _SCENE.name: SCALES,
    _STATE.name: SCALES,
    _SPALL.name: (PIXEL, OBJECT),
    _MATERIAL.name: (PIXEL, OBJECT),
    _COLLAPSE.name: (STRUCTURAL,),
    _COMPONENT.name: (OBJECT,),
    _LEVEL.name: (PIXEL, OBJECT),
    _TYPE.name: (PIXEL, OBJECT),
}
"""Scales each task's image set is drawn from, as in Phi-Net; a scene is labelled for a task
only if its scale is listed here (the CSV writer leaves the other cells blank)."""

FORMATS: tuple[str, ...] = ("arrays", "folders", "csv")
"""On-disk formats :func:`write_phinet` writes."""

# Crack families: orientation relative to the member axis (degrees) and the half-range a crack's
# mean orientation must stay within. Generation keeps one degree of slack inside these bounds.
_FAMILY_CENTRES: dict[str, tuple[float, ...]] = {FLEXURAL: (90.0,), SHEAR: (45.0, 135.0)}
_FAMILY_TOLERANCE: dict[str, float] = {FLEXURAL: 15.0, SHEAR: 10.0}


@dataclass(frozen=True)
class _Severity:
    """How a damage level is drawn; widths are in pixels at 224 x 224 and scale with the size."""

    n_cracks: tuple[int, int]
    width: tuple[int, int]
    branches: tuple[int, int]
    spalling_area: tuple[float, float]  # fraction of the damageable area
    spalling_with_cracks: tuple[bool, ...]
    spalling_only: bool  # whether a spalling patch without cracks is this level


# Minor cracks are 2-3 px at 224 (hairline, ~0.3-0.6 mm on a close-up); 1 px lines vanish in the
# 128-160 px inputs a CPU demo trains on, which made "minor" indistinguishable from undamaged.
_SEVERITY: dict[str, _Severity] = {
    MINOR: _Severity((1, 2), (2, 3), (0, 1), (0.0, 0.0), (False,), False),
    MODERATE: _Severity((2, 4), (3, 5), (0, 2), (0.015, 0.04), (False, True), True),
    HEAVY: _Severity((4, 7), (5, 9), (1, 3), (0.06, 0.15), (True,), False),
}

Rng = np.random.Generator
_J = TypeVar("_J")
_R = TypeVar("_R")
Point = tuple[float, float]
Array = np.ndarray

_ATTRIBUTES = (
    "scale",
    "material",
    "component",
    "collapse",
    "damaged",
    "damage_level",
    "damage_type",
    "spalling",
    "n_cracks",
    "crack_width",
    "n_branches",
    "distractors",
)

# Which render_scene attribute carries each task's label (sample_for_task).
_TASK_ATTRIBUTE: dict[str, str] = {
    _SCENE.name: "scale",
    _STATE.name: "damaged",
    _SPALL.name: "spalling",
    _MATERIAL.name: "material",
    _COLLAPSE.name: "collapse",
    _COMPONENT.name: "component",
    _LEVEL.name: "damage_level",
    _TYPE.name: "damage_type",
}

# ---------------------------------------------------------------------------------------------
# Public data classes
# ---------------------------------------------------------------------------------------------


@dataclass
class CrackInfo:
    """One drawn crack polyline (a main crack or one of its branches).

    Attributes:
        points: ``(K, 2)`` float ``x, y`` polyline in pixels (``y`` points down).
        width: Drawn width in pixels: the true width of the crack.
        length: Polyline length in pixels.
        angle: Length-weighted mean orientation in degrees in ``[0, 180)``; 0 is the image x axis,
            angles grow clockwise on screen because ``y`` points down.
    """

    points: np.ndarray = field(repr=False)
    width: float
    length: float
    angle: float


@dataclass
class Scene:
    """One rendered image with its ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB image.
        crack_mask: ``(H, W)`` bool, True on crack pixels (the polylines at their true widths).
        spalling_mask: ``(H, W)`` bool, True on spalled pixels.
        cracks: Every drawn crack polyline, main cracks and branches.
        labels: Class index for each of the eight tasks (``labels.TASK_NAMES``). Tasks without a
            meaning at the scene's scale still get a consistent value (component ``other`` off the
            object scale, non-collapse off the structural scale); see :data:`TASK_SCALES`.
        attributes: What was rendered (JSON-serializable): scale, material, component, collapse,
            damage level and type, member axis, crack widths, distractors, layout variant...
    """

    image: np.ndarray = field(repr=False)
    crack_mask: np.ndarray = field(repr=False)
    spalling_mask: np.ndarray = field(repr=False)
    cracks: list[CrackInfo]
    labels: dict[str, int]
    attributes: dict[str, object]


@dataclass
class _Spec:
    """Resolved scene attributes: everything render_scene draws, decided before drawing."""

    size: int
    scale: str
    material: str
    component: str | None
    collapse: str
    damage_level: str
    damage_type: str
    spalling: bool
    families: list[str]  # one per main crack
    widths: list[int]  # one per main crack
    branches: list[int]  # one per main crack
    spalling_area: float
    distractors: bool


@dataclass
class _Layout:
    """A drawn scene before damage: float image, where damage may go, and the member axis."""

    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    region: np.ndarray  # (H, W) bool
    axis: float  # member axis in degrees, image convention
    grain: float  # texture scale relative to a close-up (1.0)
    info: dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _pick(rng: Rng, options: Sequence[Any]) -> Any:
    """Uniform choice that returns the element itself (plain Python types stay plain)."""
    return options[int(rng.integers(len(options)))]


def _uniform(rng: Rng, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _integer(rng: Rng, low: int, high: int) -> int:
    """Uniform integer in ``[low, high]``, both ends included."""
    return int(rng.integers(low, high + 1))


def _normal(rng: Rng, sigma: float, n: int) -> np.ndarray:
    return rng.normal(0.0, sigma, n).astype(np.float32)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)`` as float32 arrays, shared and read-only."""
    coords = np.arange(size, dtype=np.float32) + 0.5
    x = np.broadcast_to(coords[None, :], (size, size))
    y = np.broadcast_to(coords[:, None], (size, size))
    return x, y


def _noise(rng: Rng, height: int, width: int, cells_y: int, cells_x: int) -> np.ndarray:
    """Smooth value noise in about [0, 1]: a small random array upsampled bicubically."""
    small = rng.random((max(2, cells_y), max(2, cells_x)), dtype=np.float32)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def _fractal(rng: Rng, size: int, cells: Sequence[int], weights: Sequence[float]) -> np.ndarray:
    """Sum of noise octaves (coarse to fine), normalised to mean about 0.5."""
    out = np.zeros((size, size), dtype=np.float32)
    for c, w in zip(cells, weights, strict=True):
        c = int(min(max(c, 2), size // 2))
        out += np.float32(w) * _noise(rng, size, size, c, c)
    return out / np.float32(sum(weights))


def _layer(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    layer = Image.new("L", (size, size), 0)
    return layer, ImageDraw.Draw(layer)


def _alpha(layer: Image.Image) -> np.ndarray:
    return np.asarray(layer, dtype=np.float32) * np.float32(1.0 / 255.0)


def _blend(image: Array, alpha: Array, colour: Array | float | np.floating) -> Array:
    """``image`` over-painted with ``colour`` at per-pixel opacity ``alpha``."""
    a = alpha[..., None]
    return image * (1.0 - a) + np.asarray(colour, dtype=np.float32) * a


def _to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def _from_pil(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) * np.float32(1.0 / 255.0)


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    c = np.clip(np.asarray(colour) * 255.0 + 0.5, 0, 255).astype(int)
    return int(c[0]), int(c[1]), int(c[2])


def _band(centre: tuple[float, float], angle: float, width: float, length: float) -> list[Point]:
    """Corners of a rectangle of ``width`` x ``length`` centred at ``centre``, long side at ``angle``."""
    ux, uy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    vx, vy = -uy, ux
    cx, cy = centre
    hl, hw = length / 2.0, width / 2.0
    return [
        (cx + ux * hl + vx * hw, cy + uy * hl + vy * hw),
        (cx + ux * hl - vx * hw, cy + uy * hl - vy * hw),
        (cx - ux * hl - vx * hw, cy - uy * hl - vy * hw),
        (cx - ux * hl + vx * hw, cy - uy * hl + vy * hw),
    ]


def _band_coordinate(size: int, centre: tuple[float, float], angle: float, width: float) -> np.ndarray:
    """Signed distance across a band, scaled to [-1, 1] between its long edges."""
    x, y = _grid(size)
    s, c = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    return ((x - centre[0]) * -s + (y - centre[1]) * c) * np.float32(2.0 / width)


def _polygon_mask(size: int, points: Sequence[tuple[float, float]]) -> np.ndarray:
    layer, draw = _layer(size)
    draw.polygon(points, fill=255)
    return np.asarray(layer) > 0


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square binary erosion by ``radius`` pixels; outside the image counts as False."""
    if radius <= 0:
        return mask
    rows = mask.copy()
    for k in range(1, radius + 1):
        rows[:, k:] &= mask[:, :-k]
        rows[:, :-k] &= mask[:, k:]
    out = rows.copy()
    for k in range(1, radius + 1):
        out[k:, :] &= rows[:-k, :]
        out[:-k, :] &= rows[k:, :]
    out[:radius, :] = False
    out[-radius:, :] = False
    out[:, :radius] = False
    out[:, -radius:] = False
    return out


def _star_polygon(
    rng: Rng, centre: tuple[float, float], radius: float, roughness: float = 0.35
) -> list[tuple[float, float]]:
    """An irregular closed polygon around ``centre`` (star-shaped, so it always contains it)."""
    n = int(rng.integers(10, 18))
    start = _uniform(rng, 0, 2 * math.pi)
    angles = start + (np.arange(n) + rng.uniform(-0.35, 0.35, n)) * (2.0 * math.pi / n)
    # Neighbouring radii are correlated so the outline is lumpy rather than spiky.
    raw = rng.standard_normal(n)
    lumps = (raw + 0.6 * (np.roll(raw, 1) + np.roll(raw, -1))) / math.sqrt(1.72)
    radii = radius * np.clip(1.0 + roughness * lumps, 0.45, 1.6)
    aspect = _uniform(rng, 0.65, 1.5)
    tilt = _uniform(rng, 0.0, math.pi)
    px = radii * np.cos(angles) * aspect
    py = radii * np.sin(angles) / aspect
    x = centre[0] + px * math.cos(tilt) - py * math.sin(tilt)
    y = centre[1] + px * math.sin(tilt) + py * math.cos(tilt)
    return list(zip(x.tolist(), y.tolist(), strict=True))


# ---------------------------------------------------------------------------------------------
# Surface textures
# ---------------------------------------------------------------------------------------------


def _surface(rng: Rng, material: str, size: int, grain: float, axis: float) -> np.ndarray:
    """A full-frame ``(size, size, 3)`` float texture of ``material``.

    ``grain`` is the apparent feature size relative to a close-up (1.0 for the pixel scale,
    smaller when the surface is seen from further away).
    """
    if material == STEEL:
        return _steel(rng, size, grain, axis)
    if material == MASONRY:
        return _masonry(rng, size, grain)
    return _concrete(rng, size, grain)


def _cells(size: int, cells_at_close_up: float, grain: float) -> int:
    return int(min(size // 2, max(2, round(cells_at_close_up / grain * size / 224.0))))


def _concrete(rng: Rng, size: int, grain: float) -> np.ndarray:
    base = _uniform(rng, 0.48, 0.72)
    warmth = _uniform(rng, -0.03, 0.04)
    tint = np.array([1.0 + warmth, 1.0, 1.0 - warmth], np.float32) + _normal(rng, 0.015, 3)
    mottle = _fractal(rng, size, [_cells(size, c, grain) for c in (3, 9, 28)], (0.5, 0.3, 0.2))
    lum = base * (0.8 + 0.4 * mottle)
    # Aggregate: coarse sand grains show as dark and light specks about two pixels across.
    grit = _noise(rng, size, size, *(2 * [_cells(size, 95, grain)]))
    lum = lum * np.select([grit > 0.82, grit < 0.16], [np.float32(0.82), np.float32(1.1)], np.float32(1.0))
    lum = lum + (rng.random((size, size), dtype=np.float32) - 0.5) * np.float32(0.05)
    image = lum[..., None] * tint
    if grain > 0.6:
        # Bug holes (air voids) are a close-up cue of cast concrete.
        layer, draw = _layer(size)
        for _ in range(int(rng.integers(0, 7))):
            r = _uniform(rng, 0.004, 0.012) * size * grain
            cx, cy = rng.uniform(0, size, 2)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=200)
        image = image * (1.0 - 0.55 * _alpha(layer))[..., None]
    return image


def _masonry(rng: Rng, size: int, grain: float) -> np.ndarray:
    x, y = _grid(size)
    course = max(3.0, grain * size * _uniform(rng, 0.11, 0.2))
    brick = course * _uniform(rng, 2.0, 2.8)
    mortar = max(1.0, course * _uniform(rng, 0.1, 0.16))
    oy, ox = rng.uniform(0, course), rng.uniform(0, brick)
    yy = y + np.float32(oy)
    row = np.floor(yy / course).astype(np.int32)
    xx = x + np.float32(ox) + (row % 2).astype(np.float32) * np.float32(brick / 2)  # stretcher bond
    col = np.floor(xx / brick).astype(np.int32)
    joint = (np.mod(yy, course) < mortar) | (np.mod(xx, brick) < mortar)
    if rng.random() < 0.75:
        brick_colour = np.array([0.58, 0.3, 0.22], np.float32)  # red clay
    else:
        brick_colour = np.array([0.68, 0.58, 0.42], np.float32)  # buff / yellow
    brick_colour = brick_colour * _uniform(rng, 0.8, 1.15)
    # Each brick gets its own shade; index a small random table by (row, column).
    table = rng.normal(1.0, 0.08, (int(size / course) + 3, int(size / brick) + 4)).astype(np.float32)
    shade = table[row % table.shape[0], col % table.shape[1]]
    texture = _fractal(rng, size, [_cells(size, c, grain) for c in (6, 40)], (0.6, 0.4))
    fine = rng.random((size, size), dtype=np.float32)
    lum = shade * (0.85 + 0.3 * texture) + (fine - 0.5) * np.float32(0.08)
    image = brick_colour * lum[..., None]
    mortar_colour = _uniform(rng, 0.55, 0.78) * np.array([1.02, 1.0, 0.96], np.float32)
    mortar_lum = (0.9 + 0.2 * fine)[..., None]
    return np.where(joint[..., None], mortar_colour * mortar_lum, image)


def _steel(rng: Rng, size: int, grain: float, axis: float) -> np.ndarray:
    x, y = _grid(size)
    colour = np.array([0.5, 0.55, 0.62], np.float32) + rng.normal(0, 0.025, 3).astype(np.float32)
    colour = colour * _uniform(rng, 0.85, 1.2)
    phi = _uniform(rng, 0, 2 * math.pi)
    g = (x * math.cos(phi) + y * math.sin(phi)) / np.float32(size)
    sheen = 0.82 + 0.28 * (g - g.min()) + 0.18 * np.exp(-(((g - _uniform(rng, 0, 1)) / 0.18) ** 2))
    # Brushed streaks run along the member: long in one direction, fine across it.
    along_x = abs(math.cos(math.radians(axis))) >= abs(math.sin(math.radians(axis)))
    fine_cells = min(size // 2, max(8, int(size * 0.45)))
    streak = _noise(rng, size, size, fine_cells, 3) if along_x else _noise(rng, size, size, 3, fine_cells)
    fine = rng.random((size, size), dtype=np.float32)
    lum = sheen + (streak - 0.5) * np.float32(0.09) + (fine - 0.5) * np.float32(0.02)
    image = lum[..., None] * colour
    if rng.random() < 0.55:
        image = _bolts(rng, image, size, grain, along_x)
    if rng.random() < 0.4:
        image = _weld(rng, image, size, grain, along_x)
    return image


def _bolts(rng: Rng, image: np.ndarray, size: int, grain: float, along_x: bool) -> np.ndarray:
    body, draw = _layer(size)
    shine, draw_shine = _layer(size)
    r = max(1.5, size * _uniform(rng, 0.018, 0.03) * grain)
    pitch = r * _uniform(rng, 4.0, 7.0)
    rows = int(rng.integers(1, 3))
    start = _uniform(rng, 0.15, 0.75) * size
    gap = r * _uniform(rng, 3.5, 6.0)
    offset = _uniform(rng, 0, pitch)
    for k in range(rows):
        across = start + k * gap
        along = offset
        while along < size + r:
            cx, cy = (along, across) if along_x else (across, along)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
            draw_shine.ellipse((cx - r * 0.6, cy - r * 0.7, cx, cy - r * 0.1), fill=255)
            along += pitch
    base = image.mean(axis=(0, 1)) * 0.75
    image = _blend(image, _alpha(body), base)
    return _blend(image, _alpha(shine) * 0.5, np.float32(0.92))


def _weld(rng: Rng, image: np.ndarray, size: int, grain: float, along_x: bool) -> np.ndarray:
    bead, draw = _layer(size)
    w = max(2, round(size * 0.03 * grain))
    p = _uniform(rng, 0.15, 0.85) * size
    # Welds run along or across the member; rippled by a row of overlapping beads.
    horizontal = along_x == (rng.random() < 0.5)
    line = [(-2.0, p), (size + 2.0, p)] if horizontal else [(p, -2.0), (p, size + 2.0)]
    draw.line(line, fill=150, width=w)
    step = max(1.0, w * 0.6)
    t = 0.0
    while t < size + 2:
        cx, cy = (t, p) if horizontal else (p, t)
        draw.ellipse((cx - w * 0.45, cy - w * 0.45, cx + w * 0.45, cy + w * 0.45), fill=255)
        t += step
    tone = image.mean(axis=(0, 1)) * np.float32(_uniform(rng, 0.7, 1.15))
    return _blend(image, _alpha(bead) * 0.85, tone)


# ---------------------------------------------------------------------------------------------
# Scene layouts
# ---------------------------------------------------------------------------------------------


def _background(rng: Rng, size: int, horizon: Point, dim_surfaces: bool) -> tuple[np.ndarray, int]:
    """Sky over ground, optionally with dim out-of-focus surfaces; returns (image, horizon row)."""
    _, y = _grid(size)
    t = (y / np.float32(size))[..., None]
    if rng.random() < 0.6:
        top = np.array([0.42, 0.58, 0.85], np.float32) + rng.normal(0, 0.04, 3).astype(np.float32)
        bottom = np.array([0.78, 0.85, 0.93], np.float32)
    else:  # overcast
        grey = _uniform(rng, 0.6, 0.85)
        top = np.full(3, grey, np.float32) * np.array([0.97, 0.99, 1.03], np.float32)
        bottom = np.full(3, min(1.0, grey * 1.1), np.float32)
    sky = top + (bottom - top) * t
    if rng.random() < 0.5:
        clouds = np.clip((_noise(rng, size, size, 4, 6) - 0.5) * 2.5, 0, 1)
        sky = _blend(sky, clouds * 0.6, np.float32(0.95))
    row = int(size * _uniform(rng, *horizon))
    palette = (
        np.array([0.33, 0.42, 0.24], np.float32),  # grass
        np.array([0.45, 0.38, 0.3], np.float32),  # dirt
        np.array([0.42, 0.42, 0.43], np.float32),  # pavement
    )
    ground = _pick(rng, palette) * (0.8 + 0.4 * _fractal(rng, size, (6, 30), (0.6, 0.4)))[..., None]
    image = np.where((y >= row)[..., None], ground, sky)
    if dim_surfaces:
        for _ in range(int(rng.integers(0, 3))):
            # Out-of-focus neighbouring walls/slabs: dim, low-contrast, straight-edged.
            x0, x1 = np.sort(rng.uniform(-0.2, 1.2, 2)) * size
            y0, y1 = np.sort(rng.uniform(-0.2, 1.2, 2)) * size
            if x1 - x0 < size * 0.15 or y1 - y0 < size * 0.15:
                continue
            tone = np.array([1.0, 0.99, 0.97], np.float32) * _uniform(rng, 0.25, 0.5)
            patch = (0.85 + 0.3 * _noise(rng, size, size, 5, 5))[..., None] * tone
            inside = _polygon_mask(size, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
            image = np.where(inside[..., None], patch, image)
    return image.astype(np.float32), row


def _layout_pixel(rng: Rng, spec: _Spec) -> _Layout:
    grain = _uniform(rng, 0.8, 1.25)
    image = _surface(rng, spec.material, spec.size, grain, 0.0)
    region = np.ones((spec.size, spec.size), dtype=bool)
    return _Layout(image, region, 0.0, grain)


def _layout_object(rng: Rng, spec: _Spec) -> _Layout:
    size = spec.size
    image, _ = _background(rng, size, (0.45, 0.9), dim_surfaces=True)
    grain = _uniform(rng, 0.35, 0.55)
    info: dict[str, object] = {}
    component = spec.component
    shade: Array = np.ones((size, size), np.float32)
    if component in (BEAM, COLUMN):
        axis = (0.0 if component == BEAM else 90.0) + _uniform(rng, -4, 4)
        depth = size * _uniform(rng, 0.28, 0.45)
        centre = (size * _uniform(rng, 0.38, 0.62), size * _uniform(rng, 0.38, 0.62))
        member = _polygon_mask(size, _band(centre, axis, depth, size * 3))
        v = _band_coordinate(size, centre, axis, depth)
        shade = 1.0 + np.float32(_uniform(rng, -0.15, 0.15)) * v - 0.08 * v * v
        if spec.material == STEEL:
            # An I-section seen from the side: bright flanges, a shadow line at each web fillet.
            shade = np.where(np.abs(v) > 0.8, shade * 1.12, shade)
            shade = np.where((np.abs(v) > 0.74) & (np.abs(v) <= 0.8), shade * 0.55, shade)
        elif rng.random() < 0.5:
            # The slab on top of a beam / the floor at a column foot: a dim adjacent surface.
            side = 1.0 if component == COLUMN else -1.0
            slab = (v * side > 1.0) & (v * side < 1.0 + _uniform(rng, 0.3, 0.8))
            image = np.where(slab[..., None], image * np.float32(0.45), image)
        info["variant"] = "band"
    elif component == WALL:
        axis = 0.0
        x0, y0 = rng.uniform(-0.05, 0.12, 2) * size
        x1, y1 = size - rng.uniform(-0.05, 0.12, 2) * size
        member = _polygon_mask(size, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
        x, _ = _grid(size)
        if spec.material == STEEL:
            # Profiled cladding / steel plate wall: periodic ribs.
            period = size * _uniform(rng, 0.06, 0.12)
            shade = 1.0 + 0.12 * np.sign(np.sin(x * np.float32(2 * math.pi / period)))
        opening = rng.random() < 0.5
        info["variant"] = "opening" if opening else "panel"
        if opening:
            w, h = size * _uniform(rng, 0.15, 0.3), size * _uniform(rng, 0.2, 0.45)
            ox = _uniform(rng, x0 + 0.1 * size, x1 - w - 0.1 * size)
            oy = _uniform(rng, y0 + 0.08 * size, y1 - h)
            hole = _polygon_mask(size, [(ox, oy), (ox + w, oy), (ox + w, oy + h), (ox, oy + h)])
            image = np.where(hole[..., None], image * np.float32(_uniform(rng, 0.15, 0.4)), image)
            member &= ~hole
    else:
        image, member, axis, shade, variant = _other_member(rng, size, image)
        info["variant"] = variant
    texture = _surface(rng, spec.material, size, grain, axis)
    if spec.material == CONCRETE and component == WALL and rng.random() < 0.5:
        texture = _tie_holes(rng, texture, size)
    image = np.where(member[..., None], texture * shade[..., None], image)
    return _Layout(image.astype(np.float32), member, axis, grain, info)


def _other_member(rng: Rng, size: int, image: Array) -> tuple[Array, Array, float, Array, str]:
    """A member that is neither beam, column nor wall: a diagonal brace or a slab edge."""
    if rng.random() < 0.5:
        axis = _uniform(rng, 30, 60) * _pick(rng, (1.0, -1.0)) % 180.0
        depth = size * _uniform(rng, 0.14, 0.24)
        centre = (size * _uniform(rng, 0.4, 0.6), size * _uniform(rng, 0.4, 0.6))
        member = _polygon_mask(size, _band(centre, axis, depth, size * 3))
        v = _band_coordinate(size, centre, axis, depth)
        shade = 1.0 - 0.12 * v * v
        # Gusset plate where the brace meets the frame corner.
        gx, gy = _pick(rng, ((0.0, 0.0), (size, 0.0), (0.0, size), (size, size)))
        plate = _polygon_mask(size, _star_polygon(rng, (gx, gy), size * 0.22, 0.1))
        image = np.where(plate[..., None], image * np.float32(0.6) + np.float32(0.15), image)
        return image, member, axis, shade, "brace"
    # A floor slab seen from below at an angle: lit top face, thin edge face, its shadow below.
    tilt = _uniform(rng, 8, 25) * _pick(rng, (1.0, -1.0))
    slope = math.tan(math.radians(tilt))
    y_edge = size * _uniform(rng, 0.45, 0.7)
    thickness = size * _uniform(rng, 0.07, 0.13)
    depth = size * _uniform(rng, 0.25, 0.4)
    xs = (-0.3 * size, 1.3 * size)

    def edge_y(x: float, offset: float, factor: float = 1.0) -> float:
        return y_edge + offset + slope * factor * (x - size / 2)

    top = [(x, edge_y(x, 0.0)) for x in xs] + [(x, edge_y(x, -depth, 0.5)) for x in xs[::-1]]
    edge = [(x, edge_y(x, 0.0)) for x in xs] + [(x, edge_y(x, thickness)) for x in xs[::-1]]
    shadow = thickness + size * 0.25
    under = [(x, edge_y(x, thickness)) for x in xs] + [(x, edge_y(x, shadow)) for x in xs[::-1]]
    top_mask, edge_mask = _polygon_mask(size, top), _polygon_mask(size, edge)
    image = np.where(_polygon_mask(size, under)[..., None], image * np.float32(0.55), image)
    shade = np.where(edge_mask, np.float32(0.78), np.float32(1.08))
    return image, top_mask | edge_mask, tilt % 180.0, shade, "slab_edge"


def _tie_holes(rng: Rng, texture: np.ndarray, size: int) -> np.ndarray:
    """Formwork tie holes: a regular grid of small dark dots on a cast concrete wall."""
    layer, draw = _layer(size)
    pitch = size * _uniform(rng, 0.18, 0.3)
    r = max(1.0, size * 0.008)
    ox, oy = rng.uniform(0, pitch, 2)
    for gx in np.arange(ox, size, pitch):
        for gy in np.arange(oy, size, pitch):
            draw.ellipse((gx - r, gy - r, gx + r, gy + r), fill=255)
    return texture * (1.0 - 0.6 * _alpha(layer))[..., None]


def _layout_structural(rng: Rng, spec: _Spec) -> _Layout:
    size = spec.size
    background, ground_row = _background(rng, size, (0.8, 0.95), dim_surfaces=False)
    if spec.collapse == GLOBAL_COLLAPSE:
        return _layout_global_collapse(rng, spec, background, ground_row)
    grain = _uniform(rng, 0.1, 0.18)
    x0 = size * _uniform(rng, -0.05, 0.12)
    x1 = size - size * _uniform(rng, -0.05, 0.12)
    y0 = size * _uniform(rng, 0.06, 0.3)
    y1 = float(ground_row)
    storeys, bays = int(rng.integers(3, 8)), int(rng.integers(3, 8))
    facade = _polygon_mask(size, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    texture = _surface(rng, spec.material, size, grain, 0.0)
    _, y = _grid(size)
    light = 1.0 + np.float32(_uniform(rng, -0.12, 0.12)) * (y / np.float32(size) - 0.5)
    image = np.where(facade[..., None], texture * light[..., None], background)
    storey_h, bay_w = (y1 - y0) / storeys, (x1 - x0) / bays
    win_w, win_h = bay_w * _uniform(rng, 0.4, 0.65), storey_h * _uniform(rng, 0.42, 0.62)
    sill = storey_h * _uniform(rng, 0.18, 0.32)
    glass_layer, glass = _layer(size)
    slab_layer, slab = _layer(size)
    slab_t = max(1.0, storey_h * _uniform(rng, 0.06, 0.14))
    for s in range(storeys):
        top = y0 + s * storey_h
        slab.rectangle((x0, top, x1, top + slab_t), fill=255)
        for b in range(bays):
            left = x0 + b * bay_w + (bay_w - win_w) / 2
            wy = top + storey_h - sill - win_h
            glass.rectangle((left, wy, left + win_w, wy + win_h), fill=255)
    windows = np.asarray(glass_layer) > 0
    tone = _uniform(rng, 0.8, 1.25)
    image = _blend(image, _alpha(slab_layer) * np.float32(0.6), image.mean(axis=(0, 1)) * np.float32(tone))
    glass_colour = np.array([0.18, 0.24, 0.32], np.float32) * _uniform(rng, 0.6, 1.6)
    reflection = (0.75 + 0.5 * _noise(rng, size, size, 3, 3))[..., None]
    image = np.where(windows[..., None], glass_colour * reflection, image)
    region = facade & ~windows
    info: dict[str, object] = {"storeys": storeys, "bays": bays}
    if spec.collapse == PARTIAL_COLLAPSE:
        image = _partial_collapse(rng, spec, image, background, (x0, y0, x1, y1), info)
        region = np.zeros_like(region)
    return _Layout(image.astype(np.float32), region, 0.0, grain, info)


def _partial_collapse(
    rng: Rng,
    spec: _Spec,
    image: np.ndarray,
    background: np.ndarray,
    box: tuple[float, float, float, float],
    info: dict[str, object],
) -> np.ndarray:
    """Remove an upper corner of the facade, hang a tilted fragment from the break, heap rubble."""
    size = spec.size
    x0, y0, x1, y1 = box
    right = rng.random() < 0.5
    info["collapsed_side"] = "right" if right else "left"
    side_x = x1 + 2 if right else x0 - 2
    inward = -1.0 if right else 1.0
    span, drop = (x1 - x0) * _uniform(rng, 0.35, 0.7), (y1 - y0) * _uniform(rng, 0.4, 0.8)
    a = np.array([side_x + inward * span, y0 - 2.0])
    b = np.array([side_x, y0 + drop])
    t = np.linspace(0, 1, 8)[1:-1, None]
    normal = np.array([b[1] - a[1], a[0] - b[0]]) / np.hypot(*(b - a))
    jag = a + t * (b - a) + normal * rng.normal(0, 0.035 * size, (6, 1))
    cut = [(side_x, y0 - 3.0), tuple(a), *map(tuple, jag), tuple(b)]
    image = np.where(_polygon_mask(size, cut)[..., None], background, image)
    # Sampled from the intact ground storey, so fragments and rubble match the building.
    strip = image[int(y1) - 3 : int(y1) - 1, int(max(x0, 0)) : int(min(x1, size))]
    facade_colour = np.median(strip, axis=(0, 1))
    canvas = _to_pil(image)
    before = np.asarray(canvas)
    draw = ImageDraw.Draw(canvas)
    # A floor slab torn at the break hangs down outwards.
    pivot = a + _uniform(rng, 0.5, 0.9) * (b - a)
    angle = (90.0 - inward * _uniform(rng, 20, 60)) % 360.0
    length, thick = size * _uniform(rng, 0.15, 0.3), size * _uniform(rng, 0.035, 0.07)
    end = pivot + length / 2 * np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
    fragment = _band((float(end[0]), float(end[1])), angle, thick, length)
    draw.polygon(fragment, fill=_rgb(facade_colour * 0.85), outline=_rgb(facade_colour * 0.4))
    tip = pivot + length * np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
    for _ in range(int(rng.integers(1, 4))):
        bend = tip + rng.normal(0, 0.04 * size, 2)
        draw.line([tuple(tip), tuple(bend)], fill=(70, 45, 35), width=max(1, size // 160))
    heap_centre = side_x + inward * span * _uniform(rng, 0.2, 0.6)
    heap_half = span * _uniform(rng, 0.5, 0.8) + 0.05 * size
    _draw_rubble(
        rng,
        draw,
        size,
        (heap_centre - heap_half, heap_centre + heap_half),
        y1 + size * 0.02,
        size * _uniform(rng, 0.12, 0.28),
        _rubble_palette(spec.material, facade_colour),
        density=0.7,
    )
    return _roughen(rng, canvas, before)


def _layout_global_collapse(rng: Rng, spec: _Spec, background: np.ndarray, ground_row: int) -> _Layout:
    size = spec.size
    canvas = _to_pil(background)
    before = np.asarray(canvas)
    draw = ImageDraw.Draw(canvas)
    palette = _rubble_palette(spec.material, None)
    if rng.random() < 0.4:
        # A leaning remnant of a column or wall above the pile.
        lean = 90.0 + _uniform(rng, -25, 25)
        base_x = size * _uniform(rng, 0.15, 0.85)
        stub = _band((base_x, ground_row - size * 0.3), lean, size * _uniform(rng, 0.06, 0.12), size * 0.6)
        draw.polygon(stub, fill=_rgb(palette[0] * 0.8), outline=_rgb(palette[0] * 0.4))
    height = size * _uniform(rng, 0.35, 0.65)
    span = (-0.15 * size, 1.15 * size)
    _draw_rubble(rng, draw, size, span, ground_row + size * 0.05, height, palette, density=1.0)
    image = _roughen(rng, canvas, before)
    # Dust haze over the pile.
    _, y = _grid(size)
    haze = np.clip(1.0 - np.abs(y - (ground_row - height)) / np.float32(size * 0.3), 0, 1)
    haze = haze * _uniform(rng, 0, 0.3)
    image = _blend(image, haze, np.float32(0.75))
    return _Layout(image, np.zeros((size, size), bool), 0.0, 0.15, {"variant": "rubble_pile"})


def _rubble_palette(material: str, facade: np.ndarray | None) -> list[np.ndarray]:
    concrete = np.array([0.6, 0.58, 0.55], np.float32)
    palette = [concrete, concrete * 0.75, np.array([0.45, 0.4, 0.34], np.float32)]
    if material == MASONRY:
        palette += [np.array([0.58, 0.3, 0.22], np.float32), np.array([0.66, 0.42, 0.3], np.float32)]
    if material == STEEL:
        palette += [np.array([0.5, 0.55, 0.62], np.float32), np.array([0.45, 0.3, 0.2], np.float32)]
    if facade is not None:
        palette.append(np.asarray(facade, np.float32))
    return palette


def _draw_rubble(
    rng: Rng,
    draw: ImageDraw.ImageDraw,
    size: int,
    span: tuple[float, float],
    base_y: float,
    height: float,
    palette: Sequence[np.ndarray],
    density: float,
) -> None:
    """A heap of irregular debris polygons, slab fragments and bent rebar (no regular grid)."""
    xa, xb = span
    xs = np.linspace(xa, xb, 25)
    t = (xs - xa) / (xb - xa)
    bumps = np.sin(np.pi * t) ** 0.8
    for _ in range(int(rng.integers(0, 3))):
        c, w = rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.25)
        bumps = bumps + rng.uniform(-0.3, 0.3) * np.exp(-(((t - c) / w) ** 2))
    profile = height * np.clip(bumps + rng.normal(0, 0.04, t.shape), 0, None)
    draw.polygon(
        [(xa, base_y), *zip(xs.tolist(), (base_y - profile).tolist(), strict=True), (xb, base_y)],
        fill=(48, 44, 40),
    )
    n = max(25, int(density * 170 * (xb - xa) / size * height / (0.5 * size)))
    px = rng.uniform(xa, xb, n)
    depth = rng.random(n)
    py = base_y - np.interp(px, xs, profile) * (1.0 - 0.95 * depth)
    radii = size * rng.uniform(0.015, 0.07, n)
    tones = rng.uniform(0.55, 1.15, n)
    kinds = rng.integers(0, len(palette), n)
    for i in np.argsort(-depth):  # pieces nearer the top of the pile drawn last
        outline = _star_polygon(rng, (float(px[i]), float(py[i])), float(radii[i]), 0.3)
        pts = outline[: int(rng.integers(4, 8))]  # a truncated star: an angular chunk
        colour = palette[int(kinds[i])] * tones[i]
        draw.polygon(pts, fill=_rgb(colour), outline=_rgb(colour * 0.45))
    for _ in range(int(rng.integers(2, 6))):
        cx = _uniform(rng, xa + 0.1 * (xb - xa), xb - 0.1 * (xb - xa))
        cy = base_y - float(np.interp(cx, xs, profile)) * _uniform(rng, 0.3, 1.0)
        angle, length = _uniform(rng, 0, 180), size * _uniform(rng, 0.15, 0.4)
        slab = _band((cx, cy), angle, size * _uniform(rng, 0.03, 0.06), length)
        colour = palette[0] * _uniform(rng, 0.7, 1.1)
        draw.polygon(slab, fill=_rgb(colour), outline=_rgb(colour * 0.4))
        end = np.array(slab[0])
        for _ in range(int(rng.integers(0, 3))):
            bent = end + rng.normal(0, 0.05 * size, 2)
            draw.line([tuple(end), tuple(bent)], fill=(75, 50, 38), width=max(1, size // 180))


def _roughen(rng: Rng, canvas: Image.Image, before: Array) -> Array:
    """The canvas as floats, with a gritty texture on what was drawn since ``before`` (debris only)."""
    image = _from_pil(canvas)
    drawn = np.any(np.asarray(canvas) != before, axis=2)
    grit = _fractal(rng, image.shape[0], (image.shape[0] // 8, image.shape[0] // 3), (0.5, 0.5))
    return np.where(drawn[..., None], image * (0.82 + 0.36 * grit)[..., None], image)


_LAYOUTS: dict[str, Callable[[np.random.Generator, _Spec], _Layout]] = {
    PIXEL: _layout_pixel,
    OBJECT: _layout_object,
    STRUCTURAL: _layout_structural,
}

# ---------------------------------------------------------------------------------------------
# Damage: cracks and spalling
# ---------------------------------------------------------------------------------------------

_SMOOTHING = np.array([0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25]) / math.sqrt(2.625)  # unit-variance output


def _walk(
    rng: Rng,
    start: np.ndarray,
    direction: float,
    length: float,
    step: float,
    region: np.ndarray,
) -> np.ndarray:
    """A jagged one-way walk from ``start``: persistent ``direction`` plus correlated jitter.

    Stops after ``length`` pixels or before the first point that leaves ``region``.
    """
    n = int(length / step * 1.5) + 2
    jitter = np.convolve(rng.standard_normal(n + len(_SMOOTHING) - 1), _SMOOTHING, mode="valid")
    theta = np.radians(direction + np.clip(jitter * 14.0, -35.0, 35.0))
    steps = step * rng.uniform(0.6, 1.4, n)
    xy = start + np.cumsum(np.stack([np.cos(theta) * steps, np.sin(theta) * steps], axis=1), axis=0)
    ix, iy = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
    h, w = region.shape
    ok = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h) & (np.cumsum(steps) <= length)
    ok[ok] = region[iy[ok], ix[ok]]
    k = n if ok.all() else int(np.argmin(ok))
    return np.vstack([start[None, :], xy[:k]])


def _crack_info(points: np.ndarray, width: int) -> CrackInfo:
    d = np.diff(points, axis=0)
    seg = np.hypot(d[:, 0], d[:, 1])
    doubled = 2.0 * np.arctan2(d[:, 1], d[:, 0])
    # Orientations are axial (a crack has no head or tail): average on the doubled angle.
    mean = math.degrees(math.atan2(float(seg @ np.sin(doubled)), float(seg @ np.cos(doubled))))
    return CrackInfo(points=points, width=float(width), length=float(seg.sum()), angle=(mean / 2.0) % 180.0)


def _family_of(angle: float, axis: float) -> str | None:
    """The crack family of an orientation relative to the member axis, or None if neither."""
    rel = (angle - axis) % 180.0
    for family, centres in _FAMILY_CENTRES.items():
        if min(abs(rel - c) for c in centres) <= _FAMILY_TOLERANCE[family] - 1.0:
            return family
    return None


class _Regions:
    """Damageable area eroded by each crack half-width, so cracks stay on the member."""

    def __init__(self, region: np.ndarray) -> None:
        self.region = region
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        margin = width // 2 + 1
        if margin not in self._cache:
            eroded = _erode(self.region, margin)
            flat = np.flatnonzero(eroded)
            if flat.size == 0:  # a sliver narrower than the crack: keep it on the member at least
                eroded, flat = self.region, np.flatnonzero(self.region)
            self._cache[margin] = (eroded, flat)
        return self._cache[margin]


def _main_crack(rng: Rng, family: str, width: int, regions: _Regions, axis: float, size: int) -> CrackInfo:
    region, flat = regions.get(width)
    tolerance = _FAMILY_TOLERANCE[family]
    step = max(1.5, size / 45.0)
    best: CrackInfo | None = None
    start = np.zeros(2)
    direction = axis + 90.0
    for _ in range(10):
        direction = axis + _pick(rng, _FAMILY_CENTRES[family]) + _uniform(rng, -0.35, 0.35) * tolerance
        index = int(flat[int(rng.integers(flat.size))])
        start = np.array([index % size + 0.5, index // size + 0.5])
        length = size * _uniform(rng, 0.35, 0.9)
        share = _uniform(rng, 0.3, 0.7)
        forward = _walk(rng, start, direction, length * share, step, region)
        backward = _walk(rng, start, direction + 180.0, length * (1 - share), step, region)
        points = np.vstack([backward[::-1], forward[1:]])
        if len(points) < 2:
            continue
        info = _crack_info(points, width)
        if _family_of(info.angle, axis) != family:
            continue
        if best is None or info.length > best.length:
            best = info
        if info.length >= 0.25 * size:
            break
    if best is None:
        # Too narrow a member for a walk: a short straight crack of the right orientation.
        u = np.array([math.cos(math.radians(direction)), math.sin(math.radians(direction))])
        best = _crack_info(np.vstack([start - u * max(2, width), start + u * max(2, width)]), width)
    return best


def _branch(
    rng: Rng,
    main: CrackInfo,
    family: str,
    regions: _Regions,
    axis: float,
    size: int,
) -> CrackInfo | None:
    k = len(main.points)
    if k < 4:
        return None
    width = max(1, round(main.width * _uniform(rng, 0.35, 0.65)))
    region, _ = regions.get(width)
    start = main.points[int(rng.integers(k // 4, max(k // 4 + 1, 3 * k // 4)))]
    rel = (main.angle - axis) % 180.0
    centre = min(_FAMILY_CENTRES[family], key=lambda c: abs(rel - c))
    tolerance = _FAMILY_TOLERANCE[family]
    for _ in range(3):
        # Diverge from the main crack but stay in its family so the damage type stays true.
        direction = axis + centre + _pick(rng, (-1.0, 1.0)) * _uniform(rng, 0.4, 0.7) * tolerance
        direction += _pick(rng, (0.0, 180.0))
        length = main.length * _uniform(rng, 0.25, 0.55)
        points = _walk(rng, start, direction, length, max(1.5, size / 45.0), region)
        if len(points) < 3:
            continue
        info = _crack_info(points, width)
        if _family_of(info.angle, axis) == family:
            return info
    return None


def _draw_cracks(rng: Rng, spec: _Spec, layout: _Layout) -> tuple[Array, Array, list[CrackInfo], list[str]]:
    """Draw the spec's cracks; returns (image, crack mask, cracks, family of each main crack)."""
    size = spec.size
    layer, draw = _layer(size)
    cracks: list[CrackInfo] = []
    regions = _Regions(layout.region)
    for family, width, n_branches in zip(spec.families, spec.widths, spec.branches, strict=True):
        main = _main_crack(rng, family, width, regions, layout.axis, size)
        chain = [main]
        for _ in range(n_branches):
            branch = _branch(rng, main, family, regions, layout.axis, size)
            if branch is not None:
                chain.append(branch)
        for crack in chain:
            # Branches are a little less deep, so a little less dark.
            fill = 255 if crack is main else 215
            draw.line(crack.points.ravel().tolist(), fill=fill, width=int(crack.width), joint="curve")
        cracks.extend(chain)
    alpha = _alpha(layer)
    darkness = np.float32(_uniform(rng, 0.72, 0.9))
    image = layout.image * (1.0 - darkness * alpha)[..., None]
    return image, alpha > 0, cracks, list(spec.families)


def _draw_spalling(rng: Rng, spec: _Spec, layout: _Layout, image: Array) -> tuple[Array, Array]:
    """Draw one spalling patch; returns (image, spalling mask)."""
    size = spec.size
    region = layout.region
    radius = max(2.0, math.sqrt(spec.spalling_area * float(region.sum()) / math.pi))
    # Keep the centre away from the member's edges, so the patch keeps about its intended area.
    flat = np.flatnonzero(region)
    for margin in (int(0.7 * radius), int(0.35 * radius), 2):
        inner = np.flatnonzero(_erode(region, margin))
        if inner.size:
            flat = inner
            break
    index = int(flat[int(rng.integers(flat.size))])
    cx, cy = index % size, index // size
    polygon = _star_polygon(rng, (cx + 0.5, cy + 0.5), radius)
    # Rescale the irregular outline about its centre to the intended area (pi r^2).
    px, py = (np.array(polygon) - (cx + 0.5, cy + 0.5)).T
    area = 0.5 * abs(float(np.dot(px, np.roll(py, 1)) - np.dot(py, np.roll(px, 1))))
    stretch = math.sqrt(math.pi * radius * radius / max(area, 1e-6))
    polygon = [(cx + 0.5 + x * stretch, cy + 0.5 + y * stretch) for x, y in zip(px, py, strict=True)]
    layer, draw = _layer(size)
    draw.polygon(polygon, fill=255)
    mask = (np.asarray(layer) > 0) & region
    mask[cy, cx] = True  # the centre is on the member by construction; never an empty patch
    local = image[mask].mean(axis=0)
    cells = [_cells(size, c, layout.grain) for c in (20, 70)]
    rough = _fractal(rng, size, cells, (0.5, 0.5))
    pits = rng.random((size, size), dtype=np.float32)
    if spec.material == STEEL:
        # Steel does not spall; its counterpart is flaking coating over rust.
        base = np.array([0.5, 0.28, 0.14], np.float32) * _uniform(rng, 0.7, 1.1)
    elif spec.material == MASONRY:
        base = local * np.array([1.05, 0.85, 0.8], np.float32) * _uniform(rng, 0.7, 1.15)
    else:
        base = local * np.array([1.03, 1.0, 0.94], np.float32) * _pick(rng, (0.72, 0.82, 1.12))
    lum = 0.62 + 0.75 * rough + (pits - 0.5) * np.float32(0.25)
    patch = base * lum[..., None]
    image = np.where(mask[..., None], patch, image)
    rim_layer, rim = _layer(size)
    rim.polygon(polygon, outline=255, width=max(1, round(size / 150)))
    image = image * (1.0 - 0.45 * (_alpha(rim_layer) * mask))[..., None]
    if spec.material == CONCRETE and rng.random() < 0.6:
        bars, bar = _layer(size)
        across = layout.axis + (90.0 if rng.random() < 0.3 else 0.0)
        ux, uy = math.cos(math.radians(across)), math.sin(math.radians(across))
        bar_w = max(2, round(size * _uniform(rng, 0.02, 0.035) * (1.0 if spec.scale == PIXEL else 0.6)))
        for _ in range(int(rng.integers(1, 3))):
            off = _uniform(rng, -0.5, 0.5) * radius
            bx, by = cx + 0.5 - uy * off, cy + 0.5 + ux * off
            bar.line(
                [(bx - ux * 2 * radius, by - uy * 2 * radius), (bx + ux * 2 * radius, by + uy * 2 * radius)],
                fill=255,
                width=bar_w,
            )
        rust = np.array([0.36, 0.21, 0.13], np.float32) * _uniform(rng, 0.8, 1.3)
        image = _blend(image, _alpha(bars) * mask, rust)
    return image, mask


# ---------------------------------------------------------------------------------------------
# Distractors and photometric variation
# ---------------------------------------------------------------------------------------------


def _joints(rng: Rng, image: np.ndarray, size: int, layout: _Layout) -> np.ndarray:
    """Formwork, mortar or expansion joints: long perfectly straight lines on the surfaces."""
    layer, draw = _layer(size)
    for _ in range(int(rng.integers(1, 4))):
        r = rng.random()
        # Often perpendicular to the member, exactly like a flexural crack but straight and long.
        angle = layout.axis + (90.0 if r < 0.4 else 0.0 if r < 0.75 else _uniform(rng, 0, 180))
        ux, uy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        px, py = rng.uniform(0.1, 0.9, 2) * size
        width = max(1, round(_uniform(rng, 1, 3) * size / 224))
        for offset in (0.0, _uniform(rng, 2, 5) * width) if rng.random() < 0.3 else (0.0,):
            qx, qy = px - uy * offset, py + ux * offset
            draw.line(
                [(qx - ux * 2 * size, qy - uy * 2 * size), (qx + ux * 2 * size, qy + uy * 2 * size)],
                fill=255,
                width=width,
            )
    alpha = _alpha(layer) * layout.region
    if rng.random() < 0.75:
        return image * (1.0 - _uniform(rng, 0.25, 0.6) * alpha)[..., None]
    return _blend(image, alpha * 0.5, np.float32(0.85))  # a light sealant joint


def _stains(rng: Rng, image: np.ndarray, size: int, layout: _Layout) -> np.ndarray:
    """Soft blotches (water, efflorescence) or rust drip streaks."""
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.7:
            blot = _noise(rng, size, size, 4, 4)
            alpha = np.clip((blot - _uniform(rng, 0.55, 0.72)) * 5.0, 0, 1)
        else:
            _, y = _grid(size)
            streaks = _noise(rng, size, size, 2, max(4, size // 10))
            top = _uniform(rng, 0, 0.5) * size
            fade = np.clip(1.0 - (y - top) / np.float32(size * _uniform(rng, 0.3, 0.7)), 0, 1) * (y > top)
            alpha = np.clip((streaks - 0.6) * 4.0, 0, 1) * fade
        alpha = alpha * layout.region * _uniform(rng, 0.25, 0.6)
        colour = _pick(rng, ((0.18, 0.17, 0.15), (0.92, 0.92, 0.9), (0.5, 0.3, 0.15)))
        image = _blend(image, alpha, np.asarray(colour, np.float32))
    return image


def _shadow(rng: Rng, image: np.ndarray, size: int) -> np.ndarray:
    """A large soft cast shadow: a half-plane with a blurred edge."""
    x, y = _grid(size)
    phi = _uniform(rng, 0, 2 * math.pi)
    soft = size * _uniform(rng, 0.04, 0.25)
    offset = _uniform(rng, -0.3, 0.3) * size
    t = ((x - size / 2) * math.cos(phi) + (y - size / 2) * math.sin(phi) - offset) / soft
    alpha = 0.5 * (1.0 + np.tanh(t))
    return image * (1.0 - _uniform(rng, 0.2, 0.55) * alpha)[..., None]


def _wires(rng: Rng, image: np.ndarray, size: int) -> np.ndarray:
    """Sagging cables crossing the frame in front of everything: thin, dark, smooth."""
    layer, draw = _layer(size)
    t = np.linspace(0.0, 1.0, 33)
    rot = math.radians(_uniform(rng, -40, 40))
    sag = _uniform(rng, 0.02, 0.25) * size
    ya, yb = rng.uniform(-0.1, 0.9, 2) * size
    width = max(1, round(_uniform(rng, 1, 3) * size / 224))
    for k in range(int(rng.integers(1, 4))):
        x = -0.3 * size + 1.6 * size * t
        y = ya + (yb - ya) * t + 4 * sag * t * (1 - t) + k * size * _uniform(rng, 0.03, 0.08)
        xr = size / 2 + (x - size / 2) * math.cos(rot) - (y - size / 2) * math.sin(rot)
        yr = size / 2 + (x - size / 2) * math.sin(rot) + (y - size / 2) * math.cos(rot)
        draw.line(np.stack([xr, yr], axis=1).ravel().tolist(), fill=255, width=width, joint="curve")
    return _blend(image, _alpha(layer) * _uniform(rng, 0.75, 0.95), np.float32(_uniform(rng, 0.03, 0.15)))


def _photometric(rng: Rng, image: np.ndarray) -> np.ndarray:
    """Per-image exposure, contrast, colour cast and sensor noise; returns uint8."""
    mean = image.mean(axis=(0, 1), keepdims=True)
    image = (image - mean) * np.float32(_uniform(rng, 0.75, 1.25)) + mean
    cast = (1.0 + rng.normal(0, 0.04, 3)).astype(np.float32) * np.float32(_uniform(rng, 0.75, 1.2))
    image = image * cast
    h, w, _ = image.shape
    image = image + rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(_uniform(rng, 0.004, 0.02))
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Attribute resolution and rendering
# ---------------------------------------------------------------------------------------------


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 32:
        raise ValueError(f"size must be an integer >= 32, got {size!r}")
    return int(size)


def _class_attr(task: Task, value: object, name: str) -> str | None:
    """Canonical class name from a class name (any spelling) or index; None stays None."""
    if value is None:
        return None
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        if 0 <= int(value) < task.num_classes:
            return task.classes[int(value)]
    elif isinstance(value, str):
        with contextlib.suppress(KeyError):
            return _cls(task, value)
    raise ValueError(f"{name}={value!r} is not a class of task {task.name!r} ({', '.join(task.classes)})")


def _bool_attr(value: object, name: str) -> bool | None:
    if value is None or isinstance(value, bool | np.bool_):
        return None if value is None else bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


def _int_attr(value: object, name: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float) or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _material_attr(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        key = normalize_name(value)
        for material in (*MATERIALS, MATERIAL_OTHER):
            if normalize_name(material) == key:
                return material
        raise ValueError(f"material={value!r} is not one of {', '.join((*MATERIALS, MATERIAL_OTHER))}")
    return _class_attr(_MATERIAL, value, "material")  # an index of the material task


def _width_range(level: str, size: int) -> tuple[int, int]:
    lo, hi = _SEVERITY[level].width
    scale = size / 224.0
    lo_s = max(1, round(lo * scale))
    return lo_s, max(lo_s, round(hi * scale))


def _damage_combos() -> list[tuple[str, str, bool]]:
    """Every consistent (damage level, damage type, spalling) triple of a non-collapsed scene."""
    combos = [(LEVEL_UNDAMAGED, TYPE_UNDAMAGED, False)]
    for level, severity in _SEVERITY.items():
        combos += [(level, kind, s) for kind in CRACK_TYPES for s in severity.spalling_with_cracks]
        if severity.spalling_only:
            combos.append((level, TYPE_UNDAMAGED, True))
    return combos


def _resolve(rng: Rng, size: int, attributes: dict[str, Any]) -> _Spec:
    """Fill in the attributes not given, consistently with the ones that are."""
    unknown = sorted(set(attributes) - set(_ATTRIBUTES))
    if unknown:
        raise TypeError(
            f"render_scene() got unknown attribute(s) {', '.join(unknown)}; known: {', '.join(_ATTRIBUTES)}"
        )
    scale = _class_attr(_SCENE, attributes.get("scale"), "scale")
    collapse = _class_attr(_COLLAPSE, attributes.get("collapse"), "collapse")
    component = _class_attr(_COMPONENT, attributes.get("component"), "component")
    level = _class_attr(_LEVEL, attributes.get("damage_level"), "damage_level")
    kind = _class_attr(_TYPE, attributes.get("damage_type"), "damage_type")
    spalling = _bool_attr(attributes.get("spalling"), "spalling")
    damaged = _bool_attr(attributes.get("damaged"), "damaged")
    distractors = _bool_attr(attributes.get("distractors"), "distractors")
    n_cracks = _int_attr(attributes.get("n_cracks"), "n_cracks", 0)
    crack_width = _int_attr(attributes.get("crack_width"), "crack_width", 1)
    n_branches = _int_attr(attributes.get("n_branches"), "n_branches", 0)
    material = _material_attr(attributes.get("material"))

    scales = [
        s
        for s in SCALES
        if (component is None or s == OBJECT) and (collapse in (None, NON_COLLAPSE) or s == STRUCTURAL)
    ]
    if scale is None:
        if not scales:
            raise ValueError(f"component={component!r} and collapse={collapse!r} need different scales")
        scale = _pick(rng, scales)
    elif scale not in scales:
        raise ValueError(f"scale={scale!r} cannot show component={component!r} / collapse={collapse!r}")

    cracks_wanted = bool(n_cracks) or crack_width is not None or kind in CRACK_TYPES
    if scale != STRUCTURAL:
        collapse = NON_COLLAPSE
    elif collapse is None:
        # A collapsed scene shows rubble, not cracks or spalling, and is heavily damaged.
        crack_free = not cracks_wanted and spalling is not True and damaged is not False
        crack_free = crack_free and level in (None, HEAVY) and kind in (None, TYPE_UNDAMAGED)
        collapse = _pick(rng, _COLLAPSE.classes if crack_free else (NON_COLLAPSE,))

    if collapse != NON_COLLAPSE:
        if cracks_wanted or spalling or damaged is False or level not in (None, HEAVY):
            raise ValueError(
                f"collapse={collapse!r} is drawn as rubble: heavy damage, no cracks or spalling (got "
                f"damage_level={level!r}, damage_type={kind!r}, spalling={spalling!r}, damaged={damaged!r})"
            )
        level, kind, spalling = HEAVY, TYPE_UNDAMAGED, False
    else:
        combos = _damage_combos()
        levels_ok: set[str] | None = None
        if crack_width is not None and level is None:
            # The label follows the drawn width: levels whose width range holds it, else the nearest.
            ranges = {lv: _width_range(lv, size) for lv in _SEVERITY}
            levels_ok = {lv for lv, (lo, hi) in ranges.items() if lo <= crack_width <= hi}
            if not levels_ok:
                levels_ok = {min(ranges, key=lambda lv: min(abs(crack_width - b) for b in ranges[lv]))}
        combos = [
            (lv, kd, sp)
            for lv, kd, sp in combos
            if (level is None or lv == level)
            and (levels_ok is None or lv in levels_ok)
            and (kind is None or kd == kind)
            and (spalling is None or sp == spalling)
            and (damaged is None or (lv != LEVEL_UNDAMAGED) == damaged)
            and (not cracks_wanted or kd in CRACK_TYPES)
            and (n_cracks is None or (n_cracks == 0) == (kd == TYPE_UNDAMAGED))
            and (n_cracks is None or kd != COMBINED or n_cracks >= 2)
        ]
        if not combos:
            raise ValueError(
                "inconsistent damage attributes: "
                + ", ".join(f"{k}={attributes[k]!r}" for k in _ATTRIBUTES if attributes.get(k) is not None)
            )
        levels = list(dict.fromkeys(lv for lv, _, _ in combos))
        if scale == STRUCTURAL and LEVEL_UNDAMAGED in levels and len(levels) > 1 and rng.random() < 0.5:
            # Most non-collapsed buildings in Phi-Net look intact.
            level = LEVEL_UNDAMAGED
        else:
            level = _pick(rng, levels)
        combos = [c for c in combos if c[0] == level]
        kind = _pick(rng, list(dict.fromkeys(kd for _, kd, _ in combos)))
        spalling = _pick(rng, [sp for _, kd, sp in combos if kd == kind])

    if scale == OBJECT:
        component = component or _pick(rng, _COMPONENT.classes)
    if material is None:
        material = _pick(rng, MATERIALS)
    elif material == MATERIAL_OTHER:
        material = _pick(rng, (CONCRETE, MASONRY))

    families: list[str] = []
    widths: list[int] = []
    branches: list[int] = []
    spalling_area = 0.0
    if level in _SEVERITY and collapse == NON_COLLAPSE:
        severity = _SEVERITY[level]
        if kind in CRACK_TYPES:
            n = n_cracks if n_cracks is not None else _integer(rng, *severity.n_cracks)
            if kind == COMBINED:
                n = max(n, 2)
                families = [FLEXURAL, SHEAR] + [_pick(rng, (FLEXURAL, SHEAR)) for _ in range(n - 2)]
                families = [families[i] for i in rng.permutation(n)]
            else:
                families = [kind] * n
            lo, hi = _width_range(level, size)
            widths = [crack_width or _integer(rng, lo, hi) for _ in range(n)]
            b_lo, b_hi = severity.branches
            branches = [n_branches if n_branches is not None else _integer(rng, b_lo, b_hi) for _ in range(n)]
        if spalling:
            spalling_area = _uniform(rng, *severity.spalling_area)
    return _Spec(
        size=size,
        scale=scale,
        material=material,
        component=component if scale == OBJECT else None,
        collapse=collapse,
        damage_level=level,
        damage_type=kind,
        spalling=bool(spalling),
        families=families,
        widths=widths,
        branches=branches,
        spalling_area=spalling_area,
        distractors=bool(rng.random() < 0.75) if distractors is None else distractors,
    )


def render_scene(rng: np.random.Generator, size: int = 224, **attributes: Any) -> Scene:
    """Render one scene; attributes not given are drawn at random, consistently with those given.

    Args:
        rng: Source of all randomness; the same generator state gives the same scene.
        size: Image side in pixels (>= 32).
        **attributes: Any of ``scale`` (a scene class), ``material`` (``concrete``, ``masonry``,
            ``steel``, or the material class ``other`` for concrete or masonry), ``component``
            (object scale), ``collapse`` (structural scale), ``damaged`` (bool), ``damage_level``,
            ``damage_type``, ``spalling`` (bool), ``distractors`` (bool), and the expert overrides
            ``n_cracks`` (main cracks), ``crack_width`` (px, every main crack) and ``n_branches``
            (per main crack). Class-valued attributes take any spelling of a class or its index.
            With ``crack_width`` and no ``damage_level``, the level is the one whose width range
            holds the width.

    Returns:
        The scene, with labels for all eight tasks derived from what was drawn.

    Raises:
        TypeError: For an unknown attribute name.
        ValueError: For a bad size, an unknown class, or attributes that contradict each other
            (for example ``damage_level="undamaged"`` with ``damage_type="shear"``).
    """
    size = _check_size(size)
    spec = _resolve(rng, size, attributes)
    layout = _LAYOUTS[spec.scale](rng, spec)
    image = layout.image
    drawn: list[str] = []
    if spec.distractors and layout.region.any():
        if rng.random() < 0.45:
            image = _joints(rng, image, size, layout)
            drawn.append("joints")
        if rng.random() < 0.4:
            image = _stains(rng, image, size, layout)
            drawn.append("stains")
    spalling_mask = np.zeros((size, size), dtype=bool)
    if spec.spalling:
        image, spalling_mask = _draw_spalling(rng, spec, layout, image)
    layout.image = image
    image, crack_mask, cracks, families = _draw_cracks(rng, spec, layout)
    if spec.distractors:
        if rng.random() < 0.4:
            image = _shadow(rng, image, size)
            drawn.append("shadow")
        if rng.random() < 0.35:
            image = _wires(rng, image, size)
            drawn.append("wires")
    labels = _labels(spec, families, bool(spalling_mask.any()))
    attributes_out: dict[str, object] = {
        "size": size,
        "scale": spec.scale,
        "material": spec.material,
        "component": spec.component,
        "collapse": spec.collapse,
        "damage_level": spec.damage_level,
        "damage_type": spec.damage_type,
        "spalling": spec.spalling,
        "member_axis": round(float(layout.axis), 3),
        "crack_families": families,
        "crack_widths": [int(c.width) for c in cracks],
        "n_main_cracks": len(families),
        "spalling_fraction": round(float(spalling_mask.mean()), 5),
        "distractors": drawn,
        **layout.info,
    }
    return Scene(
        image=_photometric(rng, image),
        crack_mask=crack_mask,
        spalling_mask=spalling_mask,
        cracks=cracks,
        labels=labels,
        attributes=attributes_out,
    )


def _labels(spec: _Spec, families: list[str], spalled: bool) -> dict[str, int]:
    """All eight labels, from what was drawn (crack families, spalling) and the layout."""
    flexural, shear = FLEXURAL in families, SHEAR in families
    kind = COMBINED if flexural and shear else FLEXURAL if flexural else SHEAR if shear else TYPE_UNDAMAGED
    damaged = bool(families) or spalled or spec.collapse != NON_COLLAPSE
    level = spec.damage_level if damaged else LEVEL_UNDAMAGED
    if (level == LEVEL_UNDAMAGED) == damaged or kind != spec.damage_type or spalled != spec.spalling:
        raise RuntimeError(f"drawn damage does not match the resolved attributes: {spec}")
    values = {
        _SCENE: spec.scale,
        _STATE: DAMAGED if damaged else _cls(_STATE, _UNDAMAGED),
        _SPALL: SPALLED if spalled else NON_SPALLED,
        _MATERIAL: STEEL if spec.material == STEEL else MATERIAL_OTHER,
        _COLLAPSE: spec.collapse,
        _COMPONENT: spec.component or COMPONENT_OTHER,
        _LEVEL: level,
        _TYPE: kind,
    }
    return {task.name: task.class_index(value) for task, value in values.items()}


def sample_for_task(rng: np.random.Generator, task: str, label: int, size: int = 224) -> Scene:
    """Render a scene whose label for ``task`` is ``label``; the rest is random but consistent.

    The scale is drawn from :data:`TASK_SCALES` (the scales where the task is meaningful in
    Phi-Net); damage-type scenes at the object scale show a beam or a column.

    Args:
        rng: Source of randomness.
        task: Task name or alias (``damage_type``, ``task8``...).
        label: Class index of ``task``.
        size: Image side in pixels (>= 32).

    Raises:
        ValueError: For an unknown task, a label out of range or a bad size.
    """
    try:
        spec = get_task(task)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    n_classes = spec.num_classes
    if isinstance(label, bool) or not isinstance(label, int | np.integer) or not 0 <= label < n_classes:
        raise ValueError(f"label {label!r} is not a class index of task {spec.name!r} (0..{n_classes - 1})")
    value = spec.classes[int(label)]
    attrs: dict[str, Any] = {}
    attribute = _TASK_ATTRIBUTE[spec.name]
    if spec in (_STATE, _SPALL):  # binary tasks map onto boolean attributes
        attrs[attribute] = value in (DAMAGED, SPALLED)
    else:
        attrs[attribute] = value
    if spec is not _SCENE:
        scales = [s for s in TASK_SCALES[spec.name] if spec is not _COMPONENT or s == OBJECT]
        attrs["scale"] = _pick(rng, scales)
    if spec is _TYPE and attrs["scale"] == OBJECT:
        attrs["component"] = _pick(rng, (BEAM, COLUMN))
    scene = render_scene(rng, size, **attrs)
    if scene.labels[spec.name] != label:
        drawn = scene.labels[spec.name]
        raise RuntimeError(f"sample_for_task({spec.name!r}, {label}) rendered label {drawn}")
    return scene


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------

_SPLITS = ("train", "test")
_CSV_STREAM = len(TASK_NAMES)  # seed stream of the CSV images, distinct from every task index


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
def _mapper(function: Callable[[_J], _R], workers: int) -> Iterator[Callable[[Iterable[_J]], Iterator[_R]]]:
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


def _csv_count(n: int, n_tasks: int) -> int:
    return 0 if n == 0 else max(1, round(n * n_tasks / 3))


def _check_integers(**options: tuple[object, int]) -> None:
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
    _check_integers(n_train=(n_train, 1), n_test=(n_test, 0), seed=(seed, 0), workers=(workers, 1))
    size = _check_size(size)
    try:
        chosen = resolve_tasks(None if tasks is None else [tasks] if isinstance(tasks, str) else list(tasks))
    except ValueError as err:
        raise ValueError(f"tasks: {err}") from None
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    counts = {"train": int(n_train), "test": int(n_test)}
    with _mapper(_run_job, int(workers)) as run:
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
    for split_index, split in enumerate(_SPLITS):
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
    for split_index, split in enumerate(_SPLITS):
        n = _csv_count(counts[split], len(tasks))
        if n == 0:
            continue
        names = [f"{offset + i:06d}.png" for i in range(n)]
        paths = [str(images / name) for name in names]
        jobs = (_Job(seed, _CSV_STREAM, split_index, i, size, None, 0, tasks, p) for i, p in enumerate(paths))
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


# ---------------------------------------------------------------------------------------------
# Crack-mask writer
# ---------------------------------------------------------------------------------------------

MASK_FORMATS: tuple[str, ...] = ("coco", "masks")
"""On-disk formats :func:`write_crack_masks` writes."""

_MASK_LAYERS: dict[str, str] = {normalize_name(CRACK): "crack_mask", normalize_name(SPALLED): "spalling_mask"}
"""Mask class (normalised) -> the :class:`Scene` attribute holding its pixels."""

_MASK_STREAM = _CSV_STREAM + 1  # seed stream of the mask sets, distinct from the Phi-Net writers'
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
    rng = np.random.default_rng([job.seed, _MASK_STREAM, job.scale, job.split, job.index])
    scale = SCALES[job.scale]
    if job.crack_free:
        scene = render_scene(rng, job.size, scale=scale, damaged=False, distractors=True)
    else:
        scene = render_scene(rng, job.size, scale=scale, damage_type=_pick(rng, CRACK_TYPES))
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
    _check_integers(n_train=(n_train, 1), n_test=(n_test, 0), seed=(seed, 0), workers=(workers, 1))
    size = _check_size(size)
    scale_indices = _mask_scales(scales)
    chosen = _mask_classes(classes)
    root = Path(root)
    counts = {"train": int(n_train), "test": int(n_test)}
    with _mapper(_run_mask_job, int(workers)) as run:
        for scale_index in scale_indices:
            for split_index, split in enumerate(_SPLITS):
                n = counts[split]
                if n == 0:
                    continue
                split_dir = root / SCALES[scale_index] / split
                (split_dir / "images").mkdir(parents=True, exist_ok=True)
                if format == "masks":
                    (split_dir / "masks").mkdir(parents=True, exist_ok=True)
                free = np.zeros(n, dtype=bool)
                order = np.random.default_rng([int(seed), _MASK_STREAM, scale_index, split_index]).permutation(n)
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


def _mask_scales(scales: Sequence[str]) -> list[int]:
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


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Concrete-crack writer (the layout of Özgenel's set)
# ---------------------------------------------------------------------------------------------

_CONCRETE_STREAM = _MASK_STREAM + 1  # seed stream of the concrete-crack sets, distinct from the writers above


@dataclass(frozen=True)
class _ConcreteJob:
    """One image of a concrete-crack set: its seed, whether it shows a crack, and its file."""

    seed: int
    folder: int  # index in CONCRETE_CRACK_FOLDERS
    index: int
    size: int
    crack: bool
    path: str


def _run_concrete_job(job: _ConcreteJob) -> None:
    rng = np.random.default_rng([job.seed, _CONCRETE_STREAM, job.folder, job.index])
    if job.crack:
        # A crack type is asked for, and spalling ruled out, because "damaged" alone may draw a
        # spalling-only scene: Özgenel's positives are all cracks.
        attributes: dict[str, Any] = {"damaged": True, "damage_type": _pick(rng, CRACK_TYPES), "spalling": False}
    else:
        attributes = {"damaged": False}
    # Distractors on both sides, so that a joint, wire or stain does not give the class away.
    scene = render_scene(rng, job.size, scale=PIXEL, material=CONCRETE, distractors=True, **attributes)
    Image.fromarray(scene.image).save(job.path, format="JPEG", quality=95)


def write_concrete_cracks(root: str | Path, *, n: int = 40, size: int = 227, seed: int = 0, workers: int = 1) -> Path:
    """Write a synthetic set in the layout of Özgenel's concrete-crack set.

    Writes ``root/Positive/<index:05d>.jpg``, pixel-scale concrete close-ups with cracks (flexural,
    shear or combined, minor or moderate, no spalling), and ``root/Negative/<index:05d>.jpg``,
    undamaged concrete close-ups; both with distractors (joints, stains, shadows, wires), JPEG
    quality 95, the layout :class:`~crackcascade.data.datamodules.ConcreteCrackDataModule` reads.
    Each image has its own seed (``seed``, folder, index), so the files are identical for the
    same arguments whatever ``workers``.

    Args:
        root: Output folder (created if needed; files of the same names are overwritten).
        n: Images per class (>= 1).
        size: Image side in pixels (>= 32; 227 as in the original set).
        seed: Base seed (>= 0).
        workers: Processes rendering in parallel (>= 1).

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: With a one-line message naming the bad option.
    """
    from crackcascade.data.datamodules import CONCRETE_CRACK_FOLDERS

    _check_integers(n=(n, 1), seed=(seed, 0), workers=(workers, 1))
    size = _check_size(size)
    root = Path(root)
    jobs = []
    for folder_index, (folder, crack) in enumerate(CONCRETE_CRACK_FOLDERS):
        (root / folder).mkdir(parents=True, exist_ok=True)
        jobs += [
            _ConcreteJob(int(seed), folder_index, i, size, crack, str(root / folder / f"{i:05d}.jpg"))
            for i in range(int(n))
        ]
    with _mapper(_run_concrete_job, int(workers)) as run:
        for _ in run(jobs):
            pass
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``crackcascade synthesize``: write a synthetic set and say how long it took.

    Without ``--masks`` it writes Phi-Net classification data (:func:`write_phinet`); with
    ``--masks coco`` or ``--masks masks`` it writes crack-mask sets for ``--scales`` and
    ``--classes`` instead (:func:`write_crack_masks`).

    Args:
        argv: Arguments after ``synthesize`` (default: ``sys.argv[1:]``).

    Returns:
        0 on success (bad arguments exit with status 2 and a message, as argparse does).
    """
    parser = argparse.ArgumentParser(
        prog="crackcascade synthesize",
        description="Write procedural Phi-Net-like images (all eight tasks) in a real Phi-Net format.",
    )
    add = parser.add_argument
    add("root", type=Path, help="output folder")
    add("--format", choices=FORMATS, default="arrays", help="on-disk format (default: arrays)")
    add("--n-train", type=int, default=100, metavar="N", help="images per task (default: 100)")
    add("--n-test", type=int, default=20, metavar="N", help="test images per task (default: 20)")
    add("--size", type=int, default=224, metavar="PX", help="image side (default: 224)")
    add("--seed", type=int, default=0, help="base seed (default: 0)")
    every = " ".join(TASK_NAMES)
    add("--tasks", nargs="+", metavar="TASK", help=f"tasks to write (default: {every})")
    add("--workers", type=int, default=1, metavar="N", help="processes (default: 1)")
    add("--masks", choices=MASK_FORMATS, help="write crack-mask sets per scale in this format instead")
    add("--scales", nargs="+", metavar="SCALE", help=f"with --masks: scales (default: {' '.join(SCALES)})")
    add("--classes", nargs="+", metavar="CLASS", help=f"with --masks: mask classes (default: {CRACK})")
    args = parser.parse_args(argv)
    if args.masks is not None:
        return _main_masks(parser, args)
    if args.scales is not None or args.classes is not None:
        parser.error("--scales and --classes apply only with --masks")
    start = time.perf_counter()
    try:
        root = write_phinet(
            args.root,
            format=args.format,
            n_train=args.n_train,
            n_test=args.n_test,
            size=args.size,
            seed=args.seed,
            tasks=args.tasks,
            workers=args.workers,
        )
    except ValueError as err:
        parser.error(str(err))
    elapsed = time.perf_counter() - start
    chosen = resolve_tasks(args.tasks)
    if args.format == "csv":
        n_images = _csv_count(args.n_train, len(chosen)) + _csv_count(args.n_test, len(chosen))
    else:
        n_images = (args.n_train + args.n_test) * len(chosen)
    print(
        f"wrote {n_images} synthetic {args.size}x{args.size} images ({args.format}; tasks: "
        f"{' '.join(chosen)}) to {root} in {elapsed:.1f} s ({n_images / max(elapsed, 1e-9):.0f} images/s)"
    )
    return 0


def _main_masks(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``synthesize --masks``: write crack-mask sets and report them."""
    if args.tasks is not None:
        parser.error("--tasks applies to Phi-Net data; with --masks choose --scales and --classes")
    start = time.perf_counter()
    try:
        root = write_crack_masks(
            args.root,
            format=args.masks,
            scales=args.scales or SCALES,
            n_train=args.n_train,
            n_test=args.n_test,
            size=args.size,
            seed=args.seed,
            classes=args.classes or (CRACK,),
            workers=args.workers,
        )
    except ValueError as err:
        parser.error(str(err))
    elapsed = time.perf_counter() - start
    scales = [SCALES[i] for i in _mask_scales(args.scales or SCALES)]
    n_images = (args.n_train + args.n_test) * len(scales)
    print(
        f"wrote {n_images} synthetic {args.size}x{args.size} crack-mask images ({args.masks}; scales: "
        f"{' '.join(scales)}; classes: {' '.join(args.classes or (CRACK,))}) to {root} in {elapsed:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
