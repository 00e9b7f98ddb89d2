"""Surface textures: concrete, masonry and steel (with bolts and welds)."""

from __future__ import annotations

import math

import numpy as np

from crackcascade.synthetic.drawing import (
    blend,
    fractal,
    layer_alpha,
    new_layer,
    normal_noise,
    pixel_grid,
    uniform,
    value_noise,
)
from crackcascade.synthetic.scene import MASONRY, STEEL, Rng


def surface_texture(rng: Rng, material: str, size: int, grain: float, axis: float) -> np.ndarray:
    """A full-frame ``(size, size, 3)`` float texture of ``material``.

    ``grain`` is the apparent feature size relative to a close-up (1.0 for the pixel scale,
    smaller when the surface is seen from further away).
    """
    if material == STEEL:
        return _steel(rng, size, grain, axis)
    if material == MASONRY:
        return _masonry(rng, size, grain)
    return _concrete(rng, size, grain)


def texture_cells(size: int, cells_at_close_up: float, grain: float) -> int:
    """Noise cells across an image of ``size`` px, given how many a 224 px close-up has and the grain."""
    return int(min(size // 2, max(2, round(cells_at_close_up / grain * size / 224.0))))


def _concrete(rng: Rng, size: int, grain: float) -> np.ndarray:
    base = uniform(rng, 0.48, 0.72)
    warmth = uniform(rng, -0.03, 0.04)
    tint = np.array([1.0 + warmth, 1.0, 1.0 - warmth], np.float32) + normal_noise(rng, 0.015, 3)
    mottle = fractal(rng, size, [texture_cells(size, c, grain) for c in (3, 9, 28)], (0.5, 0.3, 0.2))
    lum = base * (0.8 + 0.4 * mottle)
    # Aggregate: coarse sand grains show as dark and light specks about two pixels across.
    grit = value_noise(rng, size, size, *(2 * [texture_cells(size, 95, grain)]))
    lum = lum * np.select([grit > 0.82, grit < 0.16], [np.float32(0.82), np.float32(1.1)], np.float32(1.0))
    lum = lum + (rng.random((size, size), dtype=np.float32) - 0.5) * np.float32(0.05)
    image = lum[..., None] * tint
    if grain > 0.6:
        # Bug holes (air voids) are a close-up cue of cast concrete.
        layer, draw = new_layer(size)
        for _ in range(int(rng.integers(0, 7))):
            r = uniform(rng, 0.004, 0.012) * size * grain
            cx, cy = rng.uniform(0, size, 2)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=200)
        image = image * (1.0 - 0.55 * layer_alpha(layer))[..., None]
    return image


def _masonry(rng: Rng, size: int, grain: float) -> np.ndarray:
    x, y = pixel_grid(size)
    course = max(3.0, grain * size * uniform(rng, 0.11, 0.2))
    brick = course * uniform(rng, 2.0, 2.8)
    mortar = max(1.0, course * uniform(rng, 0.1, 0.16))
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
    brick_colour = brick_colour * uniform(rng, 0.8, 1.15)
    # Each brick gets its own shade; index a small random table by (row, column).
    table = rng.normal(1.0, 0.08, (int(size / course) + 3, int(size / brick) + 4)).astype(np.float32)
    shade = table[row % table.shape[0], col % table.shape[1]]
    texture = fractal(rng, size, [texture_cells(size, c, grain) for c in (6, 40)], (0.6, 0.4))
    fine = rng.random((size, size), dtype=np.float32)
    lum = shade * (0.85 + 0.3 * texture) + (fine - 0.5) * np.float32(0.08)
    image = brick_colour * lum[..., None]
    mortar_colour = uniform(rng, 0.55, 0.78) * np.array([1.02, 1.0, 0.96], np.float32)
    mortar_lum = (0.9 + 0.2 * fine)[..., None]
    return np.where(joint[..., None], mortar_colour * mortar_lum, image)


def _steel(rng: Rng, size: int, grain: float, axis: float) -> np.ndarray:
    x, y = pixel_grid(size)
    colour = np.array([0.5, 0.55, 0.62], np.float32) + rng.normal(0, 0.025, 3).astype(np.float32)
    colour = colour * uniform(rng, 0.85, 1.2)
    phi = uniform(rng, 0, 2 * math.pi)
    g = (x * math.cos(phi) + y * math.sin(phi)) / np.float32(size)
    sheen = 0.82 + 0.28 * (g - g.min()) + 0.18 * np.exp(-(((g - uniform(rng, 0, 1)) / 0.18) ** 2))
    # Brushed streaks run along the member: long in one direction, fine across it.
    along_x = abs(math.cos(math.radians(axis))) >= abs(math.sin(math.radians(axis)))
    fine_cells = min(size // 2, max(8, int(size * 0.45)))
    streak = value_noise(rng, size, size, fine_cells, 3) if along_x else value_noise(rng, size, size, 3, fine_cells)
    fine = rng.random((size, size), dtype=np.float32)
    lum = sheen + (streak - 0.5) * np.float32(0.09) + (fine - 0.5) * np.float32(0.02)
    image = lum[..., None] * colour
    if rng.random() < 0.55:
        image = _bolts(rng, image, size, grain, along_x)
    if rng.random() < 0.4:
        image = _weld(rng, image, size, grain, along_x)
    return image


def _bolts(rng: Rng, image: np.ndarray, size: int, grain: float, along_x: bool) -> np.ndarray:
    body, draw = new_layer(size)
    shine, draw_shine = new_layer(size)
    r = max(1.5, size * uniform(rng, 0.018, 0.03) * grain)
    pitch = r * uniform(rng, 4.0, 7.0)
    rows = int(rng.integers(1, 3))
    start = uniform(rng, 0.15, 0.75) * size
    gap = r * uniform(rng, 3.5, 6.0)
    offset = uniform(rng, 0, pitch)
    for k in range(rows):
        across = start + k * gap
        along = offset
        while along < size + r:
            cx, cy = (along, across) if along_x else (across, along)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
            draw_shine.ellipse((cx - r * 0.6, cy - r * 0.7, cx, cy - r * 0.1), fill=255)
            along += pitch
    base = image.mean(axis=(0, 1)) * 0.75
    image = blend(image, layer_alpha(body), base)
    return blend(image, layer_alpha(shine) * 0.5, np.float32(0.92))


def _weld(rng: Rng, image: np.ndarray, size: int, grain: float, along_x: bool) -> np.ndarray:
    bead, draw = new_layer(size)
    w = max(2, round(size * 0.03 * grain))
    p = uniform(rng, 0.15, 0.85) * size
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
    tone = image.mean(axis=(0, 1)) * np.float32(uniform(rng, 0.7, 1.15))
    return blend(image, layer_alpha(bead) * 0.85, tone)
