"""Small drawing helpers: random draws, value noise, layers and blending, polygons."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from crackcascade.synthetic.scene import Array, Point, Rng


def pick(rng: Rng, options: Sequence[Any]) -> Any:
    """Uniform choice that returns the element itself (plain Python types stay plain)."""
    return options[int(rng.integers(len(options)))]


def uniform(rng: Rng, low: float, high: float) -> float:
    """Uniform float in ``[low, high)``."""
    return float(rng.uniform(low, high))


def uniform_int(rng: Rng, low: int, high: int) -> int:
    """Uniform integer in ``[low, high]``, both ends included."""
    return int(rng.integers(low, high + 1))


def normal_noise(rng: Rng, sigma: float, n: int) -> np.ndarray:
    """``n`` float32 draws of zero-mean normal noise with deviation ``sigma``."""
    return rng.normal(0.0, sigma, n).astype(np.float32)


@lru_cache(maxsize=8)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)`` as float32 arrays, shared and read-only."""
    coords = np.arange(size, dtype=np.float32) + 0.5
    x = np.broadcast_to(coords[None, :], (size, size))
    y = np.broadcast_to(coords[:, None], (size, size))
    return x, y


def value_noise(rng: Rng, height: int, width: int, cells_y: int, cells_x: int) -> np.ndarray:
    """Smooth value noise in about [0, 1]: a small random array upsampled bicubically."""
    small = rng.random((max(2, cells_y), max(2, cells_x)), dtype=np.float32)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def fractal(rng: Rng, size: int, cells: Sequence[int], weights: Sequence[float]) -> np.ndarray:
    """Sum of noise octaves (coarse to fine), normalised to mean about 0.5."""
    out = np.zeros((size, size), dtype=np.float32)
    for c, w in zip(cells, weights, strict=True):
        c = int(min(max(c, 2), size // 2))
        out += np.float32(w) * value_noise(rng, size, size, c, c)
    return out / np.float32(sum(weights))


def new_layer(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A black ``size`` x ``size`` grayscale layer and a pen on it, to draw a shape's coverage."""
    layer = Image.new("L", (size, size), 0)
    return layer, ImageDraw.Draw(layer)


def layer_alpha(layer: Image.Image) -> np.ndarray:
    """A layer's coverage as float32 in ``[0, 1]``."""
    return np.asarray(layer, dtype=np.float32) * np.float32(1.0 / 255.0)


def blend(image: Array, alpha: Array, colour: Array | float | np.floating) -> Array:
    """``image`` over-painted with ``colour`` at per-pixel opacity ``alpha``."""
    a = alpha[..., None]
    return image * (1.0 - a) + np.asarray(colour, dtype=np.float32) * a


def to_pil(image: np.ndarray) -> Image.Image:
    """An RGB float image in ``[0, 1]`` as an 8-bit PIL image."""
    return Image.fromarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def from_pil(image: Image.Image) -> np.ndarray:
    """A PIL image as float32 in ``[0, 1]``."""
    return np.asarray(image, dtype=np.float32) * np.float32(1.0 / 255.0)


def rgb(colour: np.ndarray) -> tuple[int, int, int]:
    """A float colour in ``[0, 1]`` as 8-bit ``(r, g, b)``."""
    c = np.clip(np.asarray(colour) * 255.0 + 0.5, 0, 255).astype(int)
    return int(c[0]), int(c[1]), int(c[2])


def band_corners(centre: tuple[float, float], angle: float, width: float, length: float) -> list[Point]:
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


def band_coordinate(size: int, centre: tuple[float, float], angle: float, width: float) -> np.ndarray:
    """Signed distance across a band, scaled to [-1, 1] between its long edges."""
    x, y = pixel_grid(size)
    s, c = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    return ((x - centre[0]) * -s + (y - centre[1]) * c) * np.float32(2.0 / width)


def polygon_mask(size: int, points: Sequence[tuple[float, float]]) -> np.ndarray:
    """Boolean ``size`` x ``size`` mask of the filled polygon through ``points``."""
    layer, draw = new_layer(size)
    draw.polygon(points, fill=255)
    return np.asarray(layer) > 0


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
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


def star_polygon(
    rng: Rng, centre: tuple[float, float], radius: float, roughness: float = 0.35
) -> list[tuple[float, float]]:
    """An irregular closed polygon around ``centre`` (star-shaped, so it always contains it)."""
    n = int(rng.integers(10, 18))
    start = uniform(rng, 0, 2 * math.pi)
    angles = start + (np.arange(n) + rng.uniform(-0.35, 0.35, n)) * (2.0 * math.pi / n)
    # Neighbouring radii are correlated so the outline is lumpy rather than spiky.
    raw = rng.standard_normal(n)
    lumps = (raw + 0.6 * (np.roll(raw, 1) + np.roll(raw, -1))) / math.sqrt(1.72)
    radii = radius * np.clip(1.0 + roughness * lumps, 0.45, 1.6)
    aspect = uniform(rng, 0.65, 1.5)
    tilt = uniform(rng, 0.0, math.pi)
    px = radii * np.cos(angles) * aspect
    py = radii * np.sin(angles) / aspect
    x = centre[0] + px * math.cos(tilt) - py * math.sin(tilt)
    y = centre[1] + px * math.sin(tilt) + py * math.cos(tilt)
    return list(zip(x.tolist(), y.tolist(), strict=True))
