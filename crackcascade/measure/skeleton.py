"""Skeleton geometry behind :func:`crackcascade.measure.measure_cracks`: links, spurs, directions, widths."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, sparse
from scipy.spatial import cKDTree

WINDOW_RADIUS = 5
"""Half-side in pixels of the square window of skeleton pixels that gives a pixel's local
direction, and over which the width profile is averaged."""

SMOOTHING_STEPS = 6
"""Neighbour-averaging passes over the skeleton's pixel positions before its links are measured
(enough to straighten the staircase of a digital line, little enough to keep corners)."""

_RAY_STEP = 0.25  # pixels between samples along a ray from a skeleton end to the crack's tip
_RAY_CHUNK = 4096  # rays sampled at once
_RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))  # clockwise from north


def neighbour_ring(skeleton: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(n, 8)`` bool: the 8 neighbours of each point in the skeleton, clockwise from north."""
    padded = np.pad(skeleton, 1)
    rows, cols = points[:, 0] + 1, points[:, 1] + 1
    return np.stack([padded[rows + dy, cols + dx] for dy, dx in _RING], axis=1)


def _links(points: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, sparse.csr_matrix]:
    """Links between 8-neighbouring skeleton points, as index pairs and a symmetric matrix.

    A diagonal pair is linked only if no 4-neighbour of both is a skeleton point, so that the two
    sides and the diagonal of a corner do not all count.
    """
    index = np.full((shape[0] + 2, shape[1] + 2), -1, dtype=np.intp)
    rows, cols = points[:, 0] + 1, points[:, 1] + 1
    index[rows, cols] = np.arange(len(points))
    heads, tails = [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        other = index[rows + dy, cols + dx]
        linked = other >= 0
        if dy and dx:
            linked &= (index[rows, cols + dx] < 0) & (index[rows + dy, cols] < 0)
        heads.append(np.flatnonzero(linked))
        tails.append(other[linked])
    head, tail = np.concatenate(heads), np.concatenate(tails)
    n = len(points)
    matrix = sparse.coo_matrix((np.ones(len(head)), (head, tail)), shape=(n, n)).tocsr()
    return head, tail, (matrix + matrix.T).tocsr()


def prune_spurs(skeleton: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """The skeleton without spurs: end branches that reach no farther than the crack is wide.

    A bump on a crack's edge makes thinning grow a branch from the centre line into the bump. An
    end branch is dropped if, from its branch point, its pixels plus its end's distance to
    background reach no more than twice the branch point's distance to background (the crack's
    width there): it then ends within about half a width of the crack's edge.
    """
    points = np.argwhere(skeleton)
    depth = distance[points[:, 0], points[:, 1]]
    _, _, links = _links(points, skeleton.shape)
    degree = np.diff(links.indptr)
    limit = 2.0 * float(depth.max())
    spurs: list[int] = []
    for end in np.flatnonzero(degree == 1):
        path, previous, current, reach = [int(end)], -1, int(end), float(depth[end])
        while reach <= limit:
            step = [int(k) for k in links.indices[links.indptr[current] : links.indptr[current + 1]] if k != previous]
            reach += float(np.hypot(*(points[step[0]] - points[current])))
            previous, current = current, step[0]
            if degree[current] != 2:
                break
            path.append(current)
        if degree[current] >= 3 and reach <= 2.0 * depth[current]:
            spurs += path
    if not spurs:
        return skeleton
    pruned = skeleton.copy()
    pruned[points[spurs, 0], points[spurs, 1]] = False
    return pruned


def link_lengths(points: np.ndarray, shape: tuple[int, ...], fixed: np.ndarray) -> np.ndarray:
    """Each point's share of the skeleton's length: half of each of its links, after smoothing.

    The positions are averaged with their linked neighbours :data:`SMOOTHING_STEPS` times, ``fixed``
    points staying put, which straightens the staircase of a digital line so that links measure
    the line and not its steps (counting 1 per 4-neighbour link and sqrt(2) per diagonal link on
    the raw pixels overestimates lines near 22.5 degrees by up to 8 %).
    """
    head, tail, links = _links(points, shape)
    neighbours = np.diff(links.indptr)
    position = points.astype(np.float64)
    for _ in range(SMOOTHING_STEPS):
        averaged = (position + links @ position) / (1.0 + neighbours)[:, None]
        position = np.where(fixed[:, None], position, averaged)
    half = np.hypot(*(position[head] - position[tail]).T) / 2.0
    n = len(points)
    return np.bincount(head, half, minlength=n) + np.bincount(tail, half, minlength=n)


def local_direction(skeleton: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Direction of the skeleton around each point, and on which side of the point it lies.

    The direction is the principal axis (radians, image convention) of the skeleton pixels in the
    square window of half-side :data:`WINDOW_RADIUS` centred on the point; the side is the sign
    (+1 or -1) of their mean offset along that axis, which points into the skeleton from an end.
    """
    r = WINDOW_RADIUS
    padded = np.pad(skeleton, r)
    rows, cols = points[:, 0] + r, points[:, 1] + r
    n, sx, sy, sxx, syy, sxy = (np.zeros(len(points)) for _ in range(6))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            hit = padded[rows + dy, cols + dx]
            n += hit
            sx += hit * dx
            sy += hit * dy
            sxx += hit * (dx * dx)
            syy += hit * (dy * dy)
            sxy += hit * (dx * dy)
    mx, my = sx / n, sy / n
    cxx, cyy, cxy = sxx / n - mx * mx, syy / n - my * my, sxy / n - mx * my
    theta = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
    return theta, np.where(mx * np.cos(theta) + my * np.sin(theta) >= 0.0, 1.0, -1.0)


def window_sums(shape: tuple[int, ...], points: np.ndarray, values: list[np.ndarray]) -> list[np.ndarray]:
    """For each point, the sums of the per-point ``values`` over the points in its window."""
    r = WINDOW_RADIUS
    rows, cols = points[:, 0] + r, points[:, 1] + r
    images = []
    for value in values:
        image = np.zeros((shape[0] + 2 * r, shape[1] + 2 * r))
        image[rows, cols] = value
        images.append(image)
    sums = [np.zeros(len(points)) for _ in values]
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            for total, image in zip(sums, images, strict=True):
                total += image[rows + dy, cols + dx]
    return sums


def cell_areas(filled: np.ndarray, skeleton: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Number of component pixels nearest to each skeleton point (its Voronoi cell in the crack)."""
    nearest = ndimage.distance_transform_edt(~skeleton, return_distances=False, return_indices=True)
    index = np.zeros(skeleton.shape, dtype=np.intp)
    index[points[:, 0], points[:, 1]] = np.arange(len(points))
    owners = index[nearest[0][filled], nearest[1][filled]]
    return np.bincount(owners, minlength=len(points)).astype(np.float64)


def ray_exits(filled: np.ndarray, points: np.ndarray, angle: np.ndarray, reach: float) -> np.ndarray:
    """Distance from each point's pixel centre along ``angle`` (radians) to the edge of ``filled``.

    The ray is sampled every :data:`_RAY_STEP` pixels (nearest pixel); the edge is placed midway
    between the last sample inside and the first outside, and at ``reach`` if none is outside.
    """
    steps = (np.arange(math.ceil(reach / _RAY_STEP)) + 0.5) * _RAY_STEP
    out = np.empty(len(points))
    for start in range(0, len(points), _RAY_CHUNK):
        chunk = slice(start, start + _RAY_CHUNK)
        rows = np.floor(points[chunk, :1] + 0.5 + np.sin(angle[chunk])[:, None] * steps).astype(np.intp)
        cols = np.floor(points[chunk, 1:] + 0.5 + np.cos(angle[chunk])[:, None] * steps).astype(np.intp)
        inside = (rows >= 0) & (rows < filled.shape[0]) & (cols >= 0) & (cols < filled.shape[1])
        inside[inside] = filled[rows[inside], cols[inside]]
        out[chunk] = np.where(inside.all(axis=1), len(steps), np.argmin(inside, axis=1)) * _RAY_STEP
    return out


def dt_widths(distance: np.ndarray, points: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Width at skeleton ``points`` (local directions ``theta``) from the distance transform.

    The distance to background peaks on a crack's centre line and falls with slope 1 towards both
    edges, so its value at the point plus the larger value one pixel to either side across the
    crack (interpolated) places the peak to sub-pixel precision: exact for an axis-aligned bar of
    either parity (``2 * distance - 1`` is 1 px short for even widths), and up to about 0.6 px
    short across oblique edges, whose nearest background pixel centres lie closer than half a pixel
    beyond the edge. Hence only its variation along the crack is used.
    """
    rows, cols = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    across_rows, across_cols = np.cos(theta), -np.sin(theta)
    side_a = ndimage.map_coordinates(distance, [rows + across_rows, cols + across_cols], order=1, mode="constant")
    side_b = ndimage.map_coordinates(distance, [rows - across_rows, cols - across_cols], order=1, mode="constant")
    return distance[points[:, 0], points[:, 1]] + np.maximum(side_a, side_b)


def near_special_points(points: np.ndarray, special: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Points closer to a special point (an end or a branch point) than its distance to background."""
    if not special.any():
        return np.zeros(len(points), dtype=bool)
    distance, nearest = cKDTree(points[special]).query(points)
    return distance < depth[special][nearest]
