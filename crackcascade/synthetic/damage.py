"""Damage with known geometry: cracks (branching random walks of known width) and spalling."""

from __future__ import annotations

import math

import numpy as np

from crackcascade.synthetic.drawing import blend, erode, fractal, layer_alpha, new_layer, pick, star_polygon, uniform
from crackcascade.synthetic.scene import (
    CONCRETE,
    FAMILY_CENTRES,
    FAMILY_TOLERANCE,
    MASONRY,
    PIXEL,
    STEEL,
    Array,
    CrackInfo,
    Layout,
    Rng,
    Spec,
)
from crackcascade.synthetic.textures import texture_cells

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
    for family, centres in FAMILY_CENTRES.items():
        if min(abs(rel - c) for c in centres) <= FAMILY_TOLERANCE[family] - 1.0:
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
            eroded = erode(self.region, margin)
            flat = np.flatnonzero(eroded)
            if flat.size == 0:  # a sliver narrower than the crack: keep it on the member at least
                eroded, flat = self.region, np.flatnonzero(self.region)
            self._cache[margin] = (eroded, flat)
        return self._cache[margin]


def _main_crack(rng: Rng, family: str, width: int, regions: _Regions, axis: float, size: int) -> CrackInfo:
    region, flat = regions.get(width)
    tolerance = FAMILY_TOLERANCE[family]
    step = max(1.5, size / 45.0)
    best: CrackInfo | None = None
    start = np.zeros(2)
    direction = axis + 90.0
    for _ in range(10):
        direction = axis + pick(rng, FAMILY_CENTRES[family]) + uniform(rng, -0.35, 0.35) * tolerance
        index = int(flat[int(rng.integers(flat.size))])
        start = np.array([index % size + 0.5, index // size + 0.5])
        length = size * uniform(rng, 0.35, 0.9)
        share = uniform(rng, 0.3, 0.7)
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
    width = max(1, round(main.width * uniform(rng, 0.35, 0.65)))
    region, _ = regions.get(width)
    start = main.points[int(rng.integers(k // 4, max(k // 4 + 1, 3 * k // 4)))]
    rel = (main.angle - axis) % 180.0
    centre = min(FAMILY_CENTRES[family], key=lambda c: abs(rel - c))
    tolerance = FAMILY_TOLERANCE[family]
    for _ in range(3):
        # Diverge from the main crack but stay in its family so the damage type stays true.
        direction = axis + centre + pick(rng, (-1.0, 1.0)) * uniform(rng, 0.4, 0.7) * tolerance
        direction += pick(rng, (0.0, 180.0))
        length = main.length * uniform(rng, 0.25, 0.55)
        points = _walk(rng, start, direction, length, max(1.5, size / 45.0), region)
        if len(points) < 3:
            continue
        info = _crack_info(points, width)
        if _family_of(info.angle, axis) == family:
            return info
    return None


def draw_cracks(rng: Rng, spec: Spec, layout: Layout) -> tuple[Array, Array, list[CrackInfo], list[str]]:
    """Draw the spec's cracks; returns (image, crack mask, cracks, family of each main crack)."""
    size = spec.size
    layer, draw = new_layer(size)
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
    alpha = layer_alpha(layer)
    darkness = np.float32(uniform(rng, 0.72, 0.9))
    image = layout.image * (1.0 - darkness * alpha)[..., None]
    return image, alpha > 0, cracks, list(spec.families)


def draw_spalling(rng: Rng, spec: Spec, layout: Layout, image: Array) -> tuple[Array, Array]:
    """Draw one spalling patch; returns (image, spalling mask)."""
    size = spec.size
    region = layout.region
    radius = max(2.0, math.sqrt(spec.spalling_area * float(region.sum()) / math.pi))
    # Keep the centre away from the member's edges, so the patch keeps about its intended area.
    flat = np.flatnonzero(region)
    for margin in (int(0.7 * radius), int(0.35 * radius), 2):
        inner = np.flatnonzero(erode(region, margin))
        if inner.size:
            flat = inner
            break
    index = int(flat[int(rng.integers(flat.size))])
    cx, cy = index % size, index // size
    polygon = star_polygon(rng, (cx + 0.5, cy + 0.5), radius)
    # Rescale the irregular outline about its centre to the intended area (pi r^2).
    px, py = (np.array(polygon) - (cx + 0.5, cy + 0.5)).T
    area = 0.5 * abs(float(np.dot(px, np.roll(py, 1)) - np.dot(py, np.roll(px, 1))))
    stretch = math.sqrt(math.pi * radius * radius / max(area, 1e-6))
    polygon = [(cx + 0.5 + x * stretch, cy + 0.5 + y * stretch) for x, y in zip(px, py, strict=True)]
    layer, draw = new_layer(size)
    draw.polygon(polygon, fill=255)
    mask = (np.asarray(layer) > 0) & region
    mask[cy, cx] = True  # the centre is on the member by construction; never an empty patch
    local = image[mask].mean(axis=0)
    cells = [texture_cells(size, c, layout.grain) for c in (20, 70)]
    rough = fractal(rng, size, cells, (0.5, 0.5))
    pits = rng.random((size, size), dtype=np.float32)
    if spec.material == STEEL:
        # Steel does not spall; its counterpart is flaking coating over rust.
        base = np.array([0.5, 0.28, 0.14], np.float32) * uniform(rng, 0.7, 1.1)
    elif spec.material == MASONRY:
        base = local * np.array([1.05, 0.85, 0.8], np.float32) * uniform(rng, 0.7, 1.15)
    else:
        base = local * np.array([1.03, 1.0, 0.94], np.float32) * pick(rng, (0.72, 0.82, 1.12))
    lum = 0.62 + 0.75 * rough + (pits - 0.5) * np.float32(0.25)
    patch = base * lum[..., None]
    image = np.where(mask[..., None], patch, image)
    rim_layer, rim = new_layer(size)
    rim.polygon(polygon, outline=255, width=max(1, round(size / 150)))
    image = image * (1.0 - 0.45 * (layer_alpha(rim_layer) * mask))[..., None]
    if spec.material == CONCRETE and rng.random() < 0.6:
        bars, bar = new_layer(size)
        across = layout.axis + (90.0 if rng.random() < 0.3 else 0.0)
        ux, uy = math.cos(math.radians(across)), math.sin(math.radians(across))
        bar_w = max(2, round(size * uniform(rng, 0.02, 0.035) * (1.0 if spec.scale == PIXEL else 0.6)))
        for _ in range(int(rng.integers(1, 3))):
            off = uniform(rng, -0.5, 0.5) * radius
            bx, by = cx + 0.5 - uy * off, cy + 0.5 + ux * off
            bar.line(
                [(bx - ux * 2 * radius, by - uy * 2 * radius), (bx + ux * 2 * radius, by + uy * 2 * radius)],
                fill=255,
                width=bar_w,
            )
        rust = np.array([0.36, 0.21, 0.13], np.float32) * uniform(rng, 0.8, 1.3)
        image = blend(image, layer_alpha(bars) * mask, rust)
    return image, mask
