"""Distractors that look like damage and are not (joints, stains, shadows, wires), and photometric variation."""

from __future__ import annotations

import math

import numpy as np

from crackcascade.synthetic.drawing import blend, layer_alpha, new_layer, pick, pixel_grid, uniform, value_noise
from crackcascade.synthetic.scene import Layout, Rng


def draw_joints(rng: Rng, image: np.ndarray, size: int, layout: Layout) -> np.ndarray:
    """Formwork, mortar or expansion joints: long perfectly straight lines on the surfaces."""
    layer, draw = new_layer(size)
    for _ in range(int(rng.integers(1, 4))):
        r = rng.random()
        # Often perpendicular to the member, exactly like a flexural crack but straight and long.
        angle = layout.axis + (90.0 if r < 0.4 else 0.0 if r < 0.75 else uniform(rng, 0, 180))
        ux, uy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        px, py = rng.uniform(0.1, 0.9, 2) * size
        width = max(1, round(uniform(rng, 1, 3) * size / 224))
        for offset in (0.0, uniform(rng, 2, 5) * width) if rng.random() < 0.3 else (0.0,):
            qx, qy = px - uy * offset, py + ux * offset
            draw.line(
                [(qx - ux * 2 * size, qy - uy * 2 * size), (qx + ux * 2 * size, qy + uy * 2 * size)],
                fill=255,
                width=width,
            )
    alpha = layer_alpha(layer) * layout.region
    if rng.random() < 0.75:
        return image * (1.0 - uniform(rng, 0.25, 0.6) * alpha)[..., None]
    return blend(image, alpha * 0.5, np.float32(0.85))  # a light sealant joint


def draw_stains(rng: Rng, image: np.ndarray, size: int, layout: Layout) -> np.ndarray:
    """Soft blotches (water, efflorescence) or rust drip streaks."""
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.7:
            blot = value_noise(rng, size, size, 4, 4)
            alpha = np.clip((blot - uniform(rng, 0.55, 0.72)) * 5.0, 0, 1)
        else:
            _, y = pixel_grid(size)
            streaks = value_noise(rng, size, size, 2, max(4, size // 10))
            top = uniform(rng, 0, 0.5) * size
            fade = np.clip(1.0 - (y - top) / np.float32(size * uniform(rng, 0.3, 0.7)), 0, 1) * (y > top)
            alpha = np.clip((streaks - 0.6) * 4.0, 0, 1) * fade
        alpha = alpha * layout.region * uniform(rng, 0.25, 0.6)
        colour = pick(rng, ((0.18, 0.17, 0.15), (0.92, 0.92, 0.9), (0.5, 0.3, 0.15)))
        image = blend(image, alpha, np.asarray(colour, np.float32))
    return image


def draw_shadow(rng: Rng, image: np.ndarray, size: int) -> np.ndarray:
    """A large soft cast shadow: a half-plane with a blurred edge."""
    x, y = pixel_grid(size)
    phi = uniform(rng, 0, 2 * math.pi)
    soft = size * uniform(rng, 0.04, 0.25)
    offset = uniform(rng, -0.3, 0.3) * size
    t = ((x - size / 2) * math.cos(phi) + (y - size / 2) * math.sin(phi) - offset) / soft
    alpha = 0.5 * (1.0 + np.tanh(t))
    return image * (1.0 - uniform(rng, 0.2, 0.55) * alpha)[..., None]


def draw_wires(rng: Rng, image: np.ndarray, size: int) -> np.ndarray:
    """Sagging cables crossing the frame in front of everything: thin, dark, smooth."""
    layer, draw = new_layer(size)
    t = np.linspace(0.0, 1.0, 33)
    rot = math.radians(uniform(rng, -40, 40))
    sag = uniform(rng, 0.02, 0.25) * size
    ya, yb = rng.uniform(-0.1, 0.9, 2) * size
    width = max(1, round(uniform(rng, 1, 3) * size / 224))
    for k in range(int(rng.integers(1, 4))):
        x = -0.3 * size + 1.6 * size * t
        y = ya + (yb - ya) * t + 4 * sag * t * (1 - t) + k * size * uniform(rng, 0.03, 0.08)
        xr = size / 2 + (x - size / 2) * math.cos(rot) - (y - size / 2) * math.sin(rot)
        yr = size / 2 + (x - size / 2) * math.sin(rot) + (y - size / 2) * math.cos(rot)
        draw.line(np.stack([xr, yr], axis=1).ravel().tolist(), fill=255, width=width, joint="curve")
    return blend(image, layer_alpha(layer) * uniform(rng, 0.75, 0.95), np.float32(uniform(rng, 0.03, 0.15)))


def photometric_jitter(rng: Rng, image: np.ndarray) -> np.ndarray:
    """Per-image exposure, contrast, colour cast and sensor noise; returns uint8."""
    mean = image.mean(axis=(0, 1), keepdims=True)
    image = (image - mean) * np.float32(uniform(rng, 0.75, 1.25)) + mean
    cast = (1.0 + rng.normal(0, 0.04, 3)).astype(np.float32) * np.float32(uniform(rng, 0.75, 1.2))
    image = image * cast
    h, w, _ = image.shape
    image = image + rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(uniform(rng, 0.004, 0.02))
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
