"""Scene layouts at the three scales: a surface close-up, a member in its surroundings, a facade."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from crackcascade.synthetic.drawing import (
    band_coordinate,
    band_corners,
    blend,
    fractal,
    from_pil,
    layer_alpha,
    new_layer,
    pick,
    pixel_grid,
    polygon_mask,
    rgb,
    star_polygon,
    to_pil,
    uniform,
    value_noise,
)
from crackcascade.synthetic.scene import (
    BEAM,
    COLUMN,
    CONCRETE,
    GLOBAL_COLLAPSE,
    MASONRY,
    OBJECT,
    PARTIAL_COLLAPSE,
    PIXEL,
    STEEL,
    STRUCTURAL,
    WALL,
    Array,
    Layout,
    Point,
    Rng,
    Spec,
)
from crackcascade.synthetic.textures import surface_texture


def _background(rng: Rng, size: int, horizon: Point, dim_surfaces: bool) -> tuple[np.ndarray, int]:
    """Sky over ground, optionally with dim out-of-focus surfaces; returns (image, horizon row)."""
    _, y = pixel_grid(size)
    t = (y / np.float32(size))[..., None]
    if rng.random() < 0.6:
        top = np.array([0.42, 0.58, 0.85], np.float32) + rng.normal(0, 0.04, 3).astype(np.float32)
        bottom = np.array([0.78, 0.85, 0.93], np.float32)
    else:  # overcast
        grey = uniform(rng, 0.6, 0.85)
        top = np.full(3, grey, np.float32) * np.array([0.97, 0.99, 1.03], np.float32)
        bottom = np.full(3, min(1.0, grey * 1.1), np.float32)
    sky = top + (bottom - top) * t
    if rng.random() < 0.5:
        clouds = np.clip((value_noise(rng, size, size, 4, 6) - 0.5) * 2.5, 0, 1)
        sky = blend(sky, clouds * 0.6, np.float32(0.95))
    row = int(size * uniform(rng, *horizon))
    palette = (
        np.array([0.33, 0.42, 0.24], np.float32),  # grass
        np.array([0.45, 0.38, 0.3], np.float32),  # dirt
        np.array([0.42, 0.42, 0.43], np.float32),  # pavement
    )
    ground = pick(rng, palette) * (0.8 + 0.4 * fractal(rng, size, (6, 30), (0.6, 0.4)))[..., None]
    image = np.where((y >= row)[..., None], ground, sky)
    if dim_surfaces:
        for _ in range(int(rng.integers(0, 3))):
            # Out-of-focus neighbouring walls/slabs: dim, low-contrast, straight-edged.
            x0, x1 = np.sort(rng.uniform(-0.2, 1.2, 2)) * size
            y0, y1 = np.sort(rng.uniform(-0.2, 1.2, 2)) * size
            if x1 - x0 < size * 0.15 or y1 - y0 < size * 0.15:
                continue
            tone = np.array([1.0, 0.99, 0.97], np.float32) * uniform(rng, 0.25, 0.5)
            patch = (0.85 + 0.3 * value_noise(rng, size, size, 5, 5))[..., None] * tone
            inside = polygon_mask(size, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
            image = np.where(inside[..., None], patch, image)
    return image.astype(np.float32), row


def _layout_pixel(rng: Rng, spec: Spec) -> Layout:
    grain = uniform(rng, 0.8, 1.25)
    image = surface_texture(rng, spec.material, spec.size, grain, 0.0)
    region = np.ones((spec.size, spec.size), dtype=bool)
    return Layout(image, region, 0.0, grain)


def _layout_object(rng: Rng, spec: Spec) -> Layout:
    size = spec.size
    image, _ = _background(rng, size, (0.45, 0.9), dim_surfaces=True)
    grain = uniform(rng, 0.35, 0.55)
    info: dict[str, object] = {}
    component = spec.component
    shade: Array = np.ones((size, size), np.float32)
    if component in (BEAM, COLUMN):
        axis = (0.0 if component == BEAM else 90.0) + uniform(rng, -4, 4)
        depth = size * uniform(rng, 0.28, 0.45)
        centre = (size * uniform(rng, 0.38, 0.62), size * uniform(rng, 0.38, 0.62))
        member = polygon_mask(size, band_corners(centre, axis, depth, size * 3))
        v = band_coordinate(size, centre, axis, depth)
        shade = 1.0 + np.float32(uniform(rng, -0.15, 0.15)) * v - 0.08 * v * v
        if spec.material == STEEL:
            # An I-section seen from the side: bright flanges, a shadow line at each web fillet.
            shade = np.where(np.abs(v) > 0.8, shade * 1.12, shade)
            shade = np.where((np.abs(v) > 0.74) & (np.abs(v) <= 0.8), shade * 0.55, shade)
        elif rng.random() < 0.5:
            # The slab on top of a beam / the floor at a column foot: a dim adjacent surface.
            side = 1.0 if component == COLUMN else -1.0
            slab = (v * side > 1.0) & (v * side < 1.0 + uniform(rng, 0.3, 0.8))
            image = np.where(slab[..., None], image * np.float32(0.45), image)
        info["variant"] = "band"
    elif component == WALL:
        axis = 0.0
        x0, y0 = rng.uniform(-0.05, 0.12, 2) * size
        x1, y1 = size - rng.uniform(-0.05, 0.12, 2) * size
        member = polygon_mask(size, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
        x, _ = pixel_grid(size)
        if spec.material == STEEL:
            # Profiled cladding / steel plate wall: periodic ribs.
            period = size * uniform(rng, 0.06, 0.12)
            shade = 1.0 + 0.12 * np.sign(np.sin(x * np.float32(2 * math.pi / period)))
        opening = rng.random() < 0.5
        info["variant"] = "opening" if opening else "panel"
        if opening:
            w, h = size * uniform(rng, 0.15, 0.3), size * uniform(rng, 0.2, 0.45)
            ox = uniform(rng, x0 + 0.1 * size, x1 - w - 0.1 * size)
            oy = uniform(rng, y0 + 0.08 * size, y1 - h)
            hole = polygon_mask(size, [(ox, oy), (ox + w, oy), (ox + w, oy + h), (ox, oy + h)])
            image = np.where(hole[..., None], image * np.float32(uniform(rng, 0.15, 0.4)), image)
            member &= ~hole
    else:
        image, member, axis, shade, variant = _other_member(rng, size, image)
        info["variant"] = variant
    texture = surface_texture(rng, spec.material, size, grain, axis)
    if spec.material == CONCRETE and component == WALL and rng.random() < 0.5:
        texture = _tie_holes(rng, texture, size)
    image = np.where(member[..., None], texture * shade[..., None], image)
    return Layout(image.astype(np.float32), member, axis, grain, info)


def _other_member(rng: Rng, size: int, image: Array) -> tuple[Array, Array, float, Array, str]:
    """A member that is neither beam, column nor wall: a diagonal brace or a slab edge."""
    if rng.random() < 0.5:
        axis = uniform(rng, 30, 60) * pick(rng, (1.0, -1.0)) % 180.0
        depth = size * uniform(rng, 0.14, 0.24)
        centre = (size * uniform(rng, 0.4, 0.6), size * uniform(rng, 0.4, 0.6))
        member = polygon_mask(size, band_corners(centre, axis, depth, size * 3))
        v = band_coordinate(size, centre, axis, depth)
        shade = 1.0 - 0.12 * v * v
        # Gusset plate where the brace meets the frame corner.
        gx, gy = pick(rng, ((0.0, 0.0), (size, 0.0), (0.0, size), (size, size)))
        plate = polygon_mask(size, star_polygon(rng, (gx, gy), size * 0.22, 0.1))
        image = np.where(plate[..., None], image * np.float32(0.6) + np.float32(0.15), image)
        return image, member, axis, shade, "brace"
    # A floor slab seen from below at an angle: lit top face, thin edge face, its shadow below.
    tilt = uniform(rng, 8, 25) * pick(rng, (1.0, -1.0))
    slope = math.tan(math.radians(tilt))
    y_edge = size * uniform(rng, 0.45, 0.7)
    thickness = size * uniform(rng, 0.07, 0.13)
    depth = size * uniform(rng, 0.25, 0.4)
    xs = (-0.3 * size, 1.3 * size)

    def edge_y(x: float, offset: float, factor: float = 1.0) -> float:
        return y_edge + offset + slope * factor * (x - size / 2)

    top = [(x, edge_y(x, 0.0)) for x in xs] + [(x, edge_y(x, -depth, 0.5)) for x in xs[::-1]]
    edge = [(x, edge_y(x, 0.0)) for x in xs] + [(x, edge_y(x, thickness)) for x in xs[::-1]]
    shadow = thickness + size * 0.25
    under = [(x, edge_y(x, thickness)) for x in xs] + [(x, edge_y(x, shadow)) for x in xs[::-1]]
    top_mask, edge_mask = polygon_mask(size, top), polygon_mask(size, edge)
    image = np.where(polygon_mask(size, under)[..., None], image * np.float32(0.55), image)
    shade = np.where(edge_mask, np.float32(0.78), np.float32(1.08))
    return image, top_mask | edge_mask, tilt % 180.0, shade, "slab_edge"


def _tie_holes(rng: Rng, texture: np.ndarray, size: int) -> np.ndarray:
    """Formwork tie holes: a regular grid of small dark dots on a cast concrete wall."""
    layer, draw = new_layer(size)
    pitch = size * uniform(rng, 0.18, 0.3)
    r = max(1.0, size * 0.008)
    ox, oy = rng.uniform(0, pitch, 2)
    for gx in np.arange(ox, size, pitch):
        for gy in np.arange(oy, size, pitch):
            draw.ellipse((gx - r, gy - r, gx + r, gy + r), fill=255)
    return texture * (1.0 - 0.6 * layer_alpha(layer))[..., None]


def _layout_structural(rng: Rng, spec: Spec) -> Layout:
    size = spec.size
    background, ground_row = _background(rng, size, (0.8, 0.95), dim_surfaces=False)
    if spec.collapse == GLOBAL_COLLAPSE:
        return _layout_global_collapse(rng, spec, background, ground_row)
    grain = uniform(rng, 0.1, 0.18)
    x0 = size * uniform(rng, -0.05, 0.12)
    x1 = size - size * uniform(rng, -0.05, 0.12)
    y0 = size * uniform(rng, 0.06, 0.3)
    y1 = float(ground_row)
    storeys, bays = int(rng.integers(3, 8)), int(rng.integers(3, 8))
    facade = polygon_mask(size, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    texture = surface_texture(rng, spec.material, size, grain, 0.0)
    _, y = pixel_grid(size)
    light = 1.0 + np.float32(uniform(rng, -0.12, 0.12)) * (y / np.float32(size) - 0.5)
    image = np.where(facade[..., None], texture * light[..., None], background)
    storey_h, bay_w = (y1 - y0) / storeys, (x1 - x0) / bays
    win_w, win_h = bay_w * uniform(rng, 0.4, 0.65), storey_h * uniform(rng, 0.42, 0.62)
    sill = storey_h * uniform(rng, 0.18, 0.32)
    glass_layer, glass = new_layer(size)
    slab_layer, slab = new_layer(size)
    slab_t = max(1.0, storey_h * uniform(rng, 0.06, 0.14))
    for s in range(storeys):
        top = y0 + s * storey_h
        slab.rectangle((x0, top, x1, top + slab_t), fill=255)
        for b in range(bays):
            left = x0 + b * bay_w + (bay_w - win_w) / 2
            wy = top + storey_h - sill - win_h
            glass.rectangle((left, wy, left + win_w, wy + win_h), fill=255)
    windows = np.asarray(glass_layer) > 0
    tone = uniform(rng, 0.8, 1.25)
    image = blend(image, layer_alpha(slab_layer) * np.float32(0.6), image.mean(axis=(0, 1)) * np.float32(tone))
    glass_colour = np.array([0.18, 0.24, 0.32], np.float32) * uniform(rng, 0.6, 1.6)
    reflection = (0.75 + 0.5 * value_noise(rng, size, size, 3, 3))[..., None]
    image = np.where(windows[..., None], glass_colour * reflection, image)
    region = facade & ~windows
    info: dict[str, object] = {"storeys": storeys, "bays": bays}
    if spec.collapse == PARTIAL_COLLAPSE:
        image = _partial_collapse(rng, spec, image, background, (x0, y0, x1, y1), info)
        region = np.zeros_like(region)
    return Layout(image.astype(np.float32), region, 0.0, grain, info)


def _partial_collapse(
    rng: Rng,
    spec: Spec,
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
    span, drop = (x1 - x0) * uniform(rng, 0.35, 0.7), (y1 - y0) * uniform(rng, 0.4, 0.8)
    a = np.array([side_x + inward * span, y0 - 2.0])
    b = np.array([side_x, y0 + drop])
    t = np.linspace(0, 1, 8)[1:-1, None]
    normal = np.array([b[1] - a[1], a[0] - b[0]]) / np.hypot(*(b - a))
    jag = a + t * (b - a) + normal * rng.normal(0, 0.035 * size, (6, 1))
    cut = [(side_x, y0 - 3.0), tuple(a), *map(tuple, jag), tuple(b)]
    image = np.where(polygon_mask(size, cut)[..., None], background, image)
    # Sampled from the intact ground storey, so fragments and rubble match the building.
    strip = image[int(y1) - 3 : int(y1) - 1, int(max(x0, 0)) : int(min(x1, size))]
    facade_colour = np.median(strip, axis=(0, 1))
    canvas = to_pil(image)
    before = np.asarray(canvas)
    draw = ImageDraw.Draw(canvas)
    # A floor slab torn at the break hangs down outwards.
    pivot = a + uniform(rng, 0.5, 0.9) * (b - a)
    angle = (90.0 - inward * uniform(rng, 20, 60)) % 360.0
    length, thick = size * uniform(rng, 0.15, 0.3), size * uniform(rng, 0.035, 0.07)
    end = pivot + length / 2 * np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
    fragment = band_corners((float(end[0]), float(end[1])), angle, thick, length)
    draw.polygon(fragment, fill=rgb(facade_colour * 0.85), outline=rgb(facade_colour * 0.4))
    tip = pivot + length * np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
    for _ in range(int(rng.integers(1, 4))):
        bend = tip + rng.normal(0, 0.04 * size, 2)
        draw.line([tuple(tip), tuple(bend)], fill=(70, 45, 35), width=max(1, size // 160))
    heap_centre = side_x + inward * span * uniform(rng, 0.2, 0.6)
    heap_half = span * uniform(rng, 0.5, 0.8) + 0.05 * size
    _draw_rubble(
        rng,
        draw,
        size,
        (heap_centre - heap_half, heap_centre + heap_half),
        y1 + size * 0.02,
        size * uniform(rng, 0.12, 0.28),
        _rubble_palette(spec.material, facade_colour),
        density=0.7,
    )
    return _roughen(rng, canvas, before)


def _layout_global_collapse(rng: Rng, spec: Spec, background: np.ndarray, ground_row: int) -> Layout:
    size = spec.size
    canvas = to_pil(background)
    before = np.asarray(canvas)
    draw = ImageDraw.Draw(canvas)
    palette = _rubble_palette(spec.material, None)
    if rng.random() < 0.4:
        # A leaning remnant of a column or wall above the pile.
        lean = 90.0 + uniform(rng, -25, 25)
        base_x = size * uniform(rng, 0.15, 0.85)
        stub = band_corners((base_x, ground_row - size * 0.3), lean, size * uniform(rng, 0.06, 0.12), size * 0.6)
        draw.polygon(stub, fill=rgb(palette[0] * 0.8), outline=rgb(palette[0] * 0.4))
    height = size * uniform(rng, 0.35, 0.65)
    span = (-0.15 * size, 1.15 * size)
    _draw_rubble(rng, draw, size, span, ground_row + size * 0.05, height, palette, density=1.0)
    image = _roughen(rng, canvas, before)
    # Dust haze over the pile.
    _, y = pixel_grid(size)
    haze = np.clip(1.0 - np.abs(y - (ground_row - height)) / np.float32(size * 0.3), 0, 1)
    haze = haze * uniform(rng, 0, 0.3)
    image = blend(image, haze, np.float32(0.75))
    return Layout(image, np.zeros((size, size), bool), 0.0, 0.15, {"variant": "rubble_pile"})


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
        outline = star_polygon(rng, (float(px[i]), float(py[i])), float(radii[i]), 0.3)
        pts = outline[: int(rng.integers(4, 8))]  # a truncated star: an angular chunk
        colour = palette[int(kinds[i])] * tones[i]
        draw.polygon(pts, fill=rgb(colour), outline=rgb(colour * 0.45))
    for _ in range(int(rng.integers(2, 6))):
        cx = uniform(rng, xa + 0.1 * (xb - xa), xb - 0.1 * (xb - xa))
        cy = base_y - float(np.interp(cx, xs, profile)) * uniform(rng, 0.3, 1.0)
        angle, length = uniform(rng, 0, 180), size * uniform(rng, 0.15, 0.4)
        slab = band_corners((cx, cy), angle, size * uniform(rng, 0.03, 0.06), length)
        colour = palette[0] * uniform(rng, 0.7, 1.1)
        draw.polygon(slab, fill=rgb(colour), outline=rgb(colour * 0.4))
        end = np.array(slab[0])
        for _ in range(int(rng.integers(0, 3))):
            bent = end + rng.normal(0, 0.05 * size, 2)
            draw.line([tuple(end), tuple(bent)], fill=(75, 50, 38), width=max(1, size // 180))


def _roughen(rng: Rng, canvas: Image.Image, before: Array) -> Array:
    """The canvas as floats, with a gritty texture on what was drawn since ``before`` (debris only)."""
    image = from_pil(canvas)
    drawn = np.any(np.asarray(canvas) != before, axis=2)
    grit = fractal(rng, image.shape[0], (image.shape[0] // 8, image.shape[0] // 3), (0.5, 0.5))
    return np.where(drawn[..., None], image * (0.82 + 0.36 * grit)[..., None], image)


LAYOUTS: dict[str, Callable[[np.random.Generator, Spec], Layout]] = {
    PIXEL: _layout_pixel,
    OBJECT: _layout_object,
    STRUCTURAL: _layout_structural,
}
