"""Crack measurement from segmentation masks: length, width, orientation and area per crack.

:func:`measure_cracks` splits a binary mask into connected components (one per crack or network
of branching cracks) and measures each one from its skeleton and Euclidean distance transforms.
The skeleton is Lee's thinning (which, unlike Zhang's, grows no spurs into the corners of a
crack's flat ends) without the spurs that bumps on a crack's edge grow: end branches reaching no
farther from their branch point than twice its distance to background.

* **Length** is the length of the skeleton, its pixels linked to their 8-neighbours and their
  positions first smoothed along the links (:data:`SMOOTHING_STEPS` passes), which straightens the
  staircase of a digital line (counting 1 per 4-neighbour link and sqrt(2) per diagonal link on
  the raw pixels overestimates lines near 22.5 degrees by up to 8 %). Thinning stops about half a
  width short of each tip, so the crack beyond each skeleton end is added by following the local
  direction out of the end to the component's edge (adding the distance transform at the end
  instead is up to 1 px short per end).
* **Mean width** is area over length on the component's core: the crack pixels nearest to each
  skeleton pixel (a distance transform of the skeleton) form its cell, and the mean width is the
  cells' total area over the skeleton's length, both over core pixels only: those farther from
  every skeleton end and branch point than that point's distance to background (so that tips and
  junctions do not count). Area over length is the mask's actual mean thickness at any angle;
  distance-transform formulas such as ``2 * dt - 1`` read even widths 1 px thin and oblique
  cracks up to about 1 px thin (the nearest background pixel centre lies closer than half a pixel
  beyond an oblique edge).
* **Max width** is the :data:`MAX_WIDTH_PERCENTILE` th percentile of the width profile along the
  core: the distance transform at each skeleton pixel plus the larger value one pixel to either
  side across the crack, averaged over the window and shifted so that its mean is the mean width.
  A percentile rather than the maximum, so that one odd pixel does not set it.
* **Orientation** is the length-weighted axial mean (doubled angles) of the local skeleton
  directions (principal axes of the skeleton pixels within :data:`WINDOW_RADIUS`), in degrees in
  ``[0, 180)``: 0 is the image x axis and angles grow clockwise on screen because ``y`` points
  down, as :attr:`crackcascade.synthetic.CrackInfo.angle`.
* **Area** is the number of mask pixels of the component.

Pinholes in a component (enclosed background regions smaller than ``min_area`` pixels, which the
generator's rasterized strokes and predicted masks both have) are filled before measuring so that
they do not turn the skeleton into loops; the area still counts the mask's pixels as given. A blob
whose skeleton has no core (every pixel near an end) gets area over length for both widths.

Checked against the synthetic generator (:mod:`crackcascade.synthetic`), which knows each
crack's drawn width and length: on single cracks drawn 2 to 20 px wide, lengths are within 2 % of
the polylines' and mean and max widths within 1 px of the drawn width (most of the remaining
width error is the rasterizer's: its oblique strokes are up to 0.7 px thinner or 0.5 px thicker
than asked for). On axis-aligned bars every measure is exact; a one-pixel 8-connected diagonal
line measures 0.71 px wide, its area per unit length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from skimage.morphology import skeletonize

from crackcascade.measure.skeleton import (
    SMOOTHING_STEPS,
    WINDOW_RADIUS,
    cell_areas,
    dt_widths,
    link_lengths,
    local_direction,
    near_special_points,
    neighbour_ring,
    prune_spurs,
    ray_exits,
    window_sums,
)

__all__ = [
    "MAX_WIDTH_PERCENTILE",
    "SMOOTHING_STEPS",
    "WINDOW_RADIUS",
    "CrackComponent",
    "CrackMeasurements",
    "measure_cracks",
]


MAX_WIDTH_PERCENTILE = 95.0
"""The max width is this percentile of the local widths along a component (robust to one-pixel
bulges: the width that 5 % of the component's core is wider than)."""

_PX_DECIMALS = 3
_MM_DECIMALS = 4
_ANGLE_DECIMALS = 2


def _mm(value_px: float, px_per_mm: float, power: int = 1) -> float:
    return round(value_px / px_per_mm**power, _MM_DECIMALS)


@dataclass(frozen=True)
class CrackComponent:
    """Measurements of one connected crack component (a crack or a network of branching cracks).

    Attributes:
        index: 1-based number of the component, in raster order of its first pixel.
        length_px: Length along the skeleton, branches included, out to the crack's tips (pixels).
        mean_width_px: Length-weighted mean width away from skeleton ends and branch points (pixels).
        max_width_px: :data:`MAX_WIDTH_PERCENTILE` th percentile of the widths the mean is taken
            over (pixels).
        orientation_deg: Length-weighted mean direction in degrees in ``[0, 180)``; 0 is the image
            x axis and angles grow clockwise on screen (``y`` points down).
        area_px: Number of mask pixels (holes not filled).
        bbox: ``(x0, y0, x1, y1)`` pixel bounds, ends exclusive.
    """

    index: int
    length_px: float
    mean_width_px: float
    max_width_px: float
    orientation_deg: float
    area_px: int
    bbox: tuple[int, int, int, int]

    def to_dict(self, px_per_mm: float | None = None) -> dict[str, Any]:
        """Return the measurements as JSON-serializable values, rounded, with mm values if scaled.

        Args:
            px_per_mm: Image scale in pixels per millimetre; when given, ``length_mm``,
                ``mean_width_mm``, ``max_width_mm`` and ``area_mm2`` are added.

        Returns:
            A dict of plain Python numbers (and the bbox as a list).

        Raises:
            ValueError: If ``px_per_mm`` is not a positive finite number.
        """
        out: dict[str, Any] = {
            "index": self.index,
            "length_px": round(self.length_px, _PX_DECIMALS),
            "mean_width_px": round(self.mean_width_px, _PX_DECIMALS),
            "max_width_px": round(self.max_width_px, _PX_DECIMALS),
            "orientation_deg": round(self.orientation_deg, _ANGLE_DECIMALS),
            "area_px": self.area_px,
            "bbox": list(self.bbox),
        }
        scale = _check_scale(px_per_mm)
        if scale is not None:
            out["length_mm"] = _mm(self.length_px, scale)
            out["mean_width_mm"] = _mm(self.mean_width_px, scale)
            out["max_width_mm"] = _mm(self.max_width_px, scale)
            out["area_mm2"] = _mm(self.area_px, scale, power=2)
        return out


@dataclass(frozen=True)
class CrackMeasurements:
    """Measurements of every crack component of a mask, and totals over them.

    Attributes:
        components: Per-component measurements, components under ``min_area`` left out.
        count: Number of components.
        total_length_px: Sum of the component lengths (pixels).
        max_width_px: Largest component max width (pixels; 0 without components).
        mean_width_px: Mean of the component mean widths weighted by their lengths (pixels).
        total_area_px: Sum of the component areas (pixels).
        px_per_mm: Image scale the mm values of :meth:`to_dict` use, or None for pixels only.
    """

    components: tuple[CrackComponent, ...]
    count: int
    total_length_px: float
    max_width_px: float
    mean_width_px: float
    total_area_px: int
    px_per_mm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return totals and components as JSON-serializable values, with mm values if scaled.

        Returns:
            A dict with the totals, ``px_per_mm`` and a ``components`` list of
            :meth:`CrackComponent.to_dict` dicts; with a scale, ``total_length_mm``,
            ``max_width_mm``, ``mean_width_mm`` and ``total_area_mm2`` are added too.
        """
        out: dict[str, Any] = {
            "count": self.count,
            "total_length_px": round(self.total_length_px, _PX_DECIMALS),
            "max_width_px": round(self.max_width_px, _PX_DECIMALS),
            "mean_width_px": round(self.mean_width_px, _PX_DECIMALS),
            "total_area_px": self.total_area_px,
            "px_per_mm": self.px_per_mm,
        }
        if self.px_per_mm is not None:
            out["total_length_mm"] = _mm(self.total_length_px, self.px_per_mm)
            out["max_width_mm"] = _mm(self.max_width_px, self.px_per_mm)
            out["mean_width_mm"] = _mm(self.mean_width_px, self.px_per_mm)
            out["total_area_mm2"] = _mm(self.total_area_px, self.px_per_mm, power=2)
        out["components"] = [c.to_dict(self.px_per_mm) for c in self.components]
        return out


def measure_cracks(
    mask: np.ndarray | torch.Tensor,
    px_per_mm: float | None = None,
    min_area: int = 10,
    connectivity: int = 2,
) -> CrackMeasurements:
    """Measure every crack component of a binary mask (see the module docstring for the method).

    Args:
        mask: ``(H, W)`` numpy array or torch tensor; non-zero pixels are crack.
        px_per_mm: Image scale in pixels per millimetre, for mm values in ``to_dict``; None for
            pixels only.
        min_area: Components with fewer pixels are dropped as noise, and enclosed background holes
            with fewer pixels are filled before thinning (0 keeps everything).
        connectivity: 1 for 4-connected components, 2 for 8-connected ones (diagonal touches join).

    Returns:
        The per-component measurements and the totals; an empty mask gives no components and
        zero totals.

    Raises:
        ValueError: If ``mask`` is not 2-D, ``px_per_mm`` is not a positive finite number,
            ``min_area`` is negative or ``connectivity`` is not 1 or 2.
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) array, got shape {tuple(array.shape)}")
    scale = _check_scale(px_per_mm)
    if isinstance(min_area, bool) or not isinstance(min_area, int | np.integer) or min_area < 0:
        raise ValueError(f"min_area must be an integer >= 0, got {min_area!r}")
    if connectivity not in (1, 2) or isinstance(connectivity, bool):
        raise ValueError(f"connectivity must be 1 (4-connected) or 2 (8-connected), got {connectivity!r}")

    labels, _ = ndimage.label(array != 0, ndimage.generate_binary_structure(2, connectivity))
    areas = np.bincount(labels.ravel())
    components: list[CrackComponent] = []
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        area = int(areas[label])
        if box is None or area < min_area:
            continue
        length, mean_width, max_width, orientation = _measure_component(
            labels[box] == label, int(min_area), connectivity
        )
        rows, cols = box
        components.append(
            CrackComponent(
                index=len(components) + 1,
                length_px=length,
                mean_width_px=mean_width,
                max_width_px=max_width,
                orientation_deg=orientation,
                area_px=area,
                bbox=(int(cols.start), int(rows.start), int(cols.stop), int(rows.stop)),
            )
        )

    total_length = float(sum(c.length_px for c in components))
    weighted = sum(c.mean_width_px * c.length_px for c in components)
    return CrackMeasurements(
        components=tuple(components),
        count=len(components),
        total_length_px=total_length,
        max_width_px=max((c.max_width_px for c in components), default=0.0),
        mean_width_px=float(weighted / total_length) if total_length > 0 else 0.0,
        total_area_px=int(sum(c.area_px for c in components)),
        px_per_mm=scale,
    )


def _check_scale(px_per_mm: float | None) -> float | None:
    if px_per_mm is None:
        return None
    if isinstance(px_per_mm, bool) or not isinstance(px_per_mm, int | float | np.integer | np.floating):
        raise ValueError(f"px_per_mm must be a positive number or None, got {px_per_mm!r}")
    if not math.isfinite(px_per_mm) or px_per_mm <= 0:
        raise ValueError(f"px_per_mm must be a positive finite number, got {px_per_mm!r}")
    return float(px_per_mm)


def _fill_small_holes(pixels: np.ndarray, max_area: int, connectivity: int) -> np.ndarray:
    """Fill enclosed background regions of fewer than ``max_area`` pixels (``pixels`` is padded)."""
    if max_area <= 1:
        return pixels
    # The background of a 8-connected component is 4-connected and vice versa.
    holes, n = ndimage.label(~pixels, ndimage.generate_binary_structure(2, 3 - connectivity))
    if n <= 1:
        return pixels
    sizes = np.bincount(holes.ravel())
    small = sizes < max_area
    small[0] = False
    small[holes[0, 0]] = False  # the outside, which the padding makes one region
    return pixels | small[holes]


def _measure_component(pixels: np.ndarray, min_area: int, connectivity: int) -> tuple[float, float, float, float]:
    """Length, mean width, max width and orientation of one component (a cropped bool mask)."""
    # One pixel of padding so that the image border counts as background.
    filled = _fill_small_holes(np.pad(pixels, 1), min_area, connectivity)
    distance = ndimage.distance_transform_edt(filled)
    skeleton = skeletonize(filled, method="lee").astype(bool)
    if not skeleton.any():  # not seen in practice: keep the deepest pixel so that nothing is empty
        skeleton[np.unravel_index(np.argmax(distance), distance.shape)] = True
    skeleton = prune_spurs(skeleton, distance)
    points = np.argwhere(skeleton)  # (n, 2) row, col
    depth = distance[points[:, 0], points[:, 1]]

    ring = neighbour_ring(skeleton, points)
    crossings = np.count_nonzero(~ring & np.roll(ring, -1, axis=1), axis=1)
    ends = crossings == 1  # one run of neighbours
    isolated = ~ring.any(axis=1)  # a blob's single skeleton pixel, which has two ends
    share = link_lengths(points, skeleton.shape, fixed=ends | isolated)
    theta, inward = local_direction(skeleton, points)

    # Thinning stops about half a width short of each tip: follow the local direction out of each
    # end (away from the skeleton) to the edge; never farther than the widest part is wide.
    reach = 2.0 * float(depth.max()) + 2.0
    tips = [(points[ends], theta[ends] + np.where(inward[ends] > 0, math.pi, 0.0))]
    tips += [(points[isolated], theta[isolated] + side) for side in (0.0, math.pi)]
    length = float(share.sum()) + sum(float(ray_exits(filled, at, out, reach).sum()) for at, out in tips)

    cells = cell_areas(filled, skeleton, points)
    core = ~near_special_points(points, ends | isolated | (crossings >= 3), depth)
    if core.any():
        mean_width = float(cells[core].sum() / share[core].sum())
        # The width profile along the core from the distance transform, averaged over the window
        # and shifted so that its mean is the mean width.
        profile = np.zeros(len(points))
        profile[core] = dt_widths(distance, points[core], theta[core]) * share[core]
        total, run = window_sums(skeleton.shape, points, [profile, share * core])
        local = total[core] / run[core]
        local += mean_width - float(np.average(local, weights=share[core]))
        max_width = float(np.percentile(local, MAX_WIDTH_PERCENTILE))
    else:  # a blob: every skeleton pixel lies within its depth of an end
        mean_width = max_width = float(cells.sum() / length)

    doubled = 2.0 * theta
    sin_sum, cos_sum = float(share @ np.sin(doubled)), float(share @ np.cos(doubled))
    return length, mean_width, max_width, (math.degrees(math.atan2(sin_sum, cos_sum)) / 2.0) % 180.0
