"""Crack overlays and thumbnails of photos, and PNG data URIs for HTML."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

LIGHT_BLUE: tuple[int, int, int] = (173, 216, 230)
"""Tint of the photo in overlays (the light-blue background of the paper's figures)."""

CLASS_COLORS: dict[str, tuple[int, int, int]] = {"crack": (255, 0, 0), "spalling": (255, 165, 0)}
"""Overlay colour of each known mask class: cracks pure red, spalling orange."""

_FALLBACK_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 255),
    (0, 160, 0),
    (128, 0, 128),
    (0, 0, 255),
    (255, 255, 0),
)
"""Colours of mask classes not in :data:`CLASS_COLORS`, by their position in ``classes``."""


def class_color(classes: Sequence[str], index: int) -> tuple[int, int, int]:
    """Return the overlay colour of mask class ``classes[index]``.

    Args:
        classes: Mask classes in mask-value order (value ``i + 1`` is ``classes[i]``).
        index: Position of the class in ``classes``.
    """
    name = classes[index]
    return CLASS_COLORS.get(name, _FALLBACK_COLORS[index % len(_FALLBACK_COLORS)])


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    classes: Sequence[str] = ("crack",),
    alpha: float = 0.5,
) -> np.ndarray:
    """Paint a class mask over a photo: the photo tinted light blue, cracks pure red, spalling orange.

    Mask pixels are painted in their class's full colour (no blending, blurring or resizing), so
    even one-pixel-wide cracks stay visible at full resolution.

    Args:
        image: Photo, uint8 array of shape ``(H, W, 3)``.
        mask: Class map of shape ``(H, W)``: 0 is background, ``i + 1`` is ``classes[i]``; a
            boolean mask means ``classes[0]``.
        classes: Mask classes in mask-value order.
        alpha: Strength of the light-blue tint of background pixels, from 0 (photo unchanged)
            to 1 (plain light blue, as in the paper's mask figures).

    Returns:
        The overlay, uint8 array of shape ``(H, W, 3)``.

    Raises:
        ValueError: If the image is not uint8 RGB, the mask's shape differs from the image's,
            a mask value has no class, or ``alpha`` is outside [0, 1].
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"overlay needs a uint8 (H, W, 3) image, got {image.dtype} of shape {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if mask.size and int(mask.max()) > len(classes):
        raise ValueError(
            f"mask value {int(mask.max())} has no class (classes: {', '.join(classes)}); "
            "a 0/255 mask PNG must be divided by 255 first"
        )
    tint = np.asarray(LIGHT_BLUE, dtype=np.float32)
    out = np.rint(image.astype(np.float32) * (1.0 - alpha) + tint * alpha).astype(np.uint8)
    for index in range(len(classes)):
        out[mask == index + 1] = class_color(classes, index)
    return out


def thumbnail(image: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Shrink an image so that its longer side is at most ``max_side``, keeping its aspect ratio.

    Images already small enough are returned unchanged (as a copy); images are never enlarged.

    Args:
        image: uint8 array of shape ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``.
        max_side: Largest allowed height or width in pixels.

    Returns:
        The thumbnail, uint8 array with the input's number of channels.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    image = np.asarray(image)
    height, width = image.shape[:2]
    scale = max_side / max(height, width, 1)
    if scale >= 1.0:
        return image.copy()
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def overlay_thumbnail(
    image: np.ndarray,
    mask: np.ndarray,
    classes: Sequence[str] = ("crack",),
    max_side: int = 256,
    alpha: float = 0.5,
) -> np.ndarray:
    """Return a small overlay in which thin cracks stay visible.

    Shrinking a full-size overlay averages a one-pixel crack away; here the photo is shrunk and
    the mask is shrunk so that a thumbnail pixel shows a class when any pixel it covers has it
    (cracks drawn over spalling).

    Args:
        image: Photo, uint8 array of shape ``(H, W, 3)``.
        mask: Class map of shape ``(H, W)`` as for :func:`overlay`.
        classes: Mask classes in mask-value order.
        max_side: Largest height or width of the thumbnail.
        alpha: Strength of the light-blue tint, as for :func:`overlay`.

    Returns:
        uint8 array of shape ``(h, w, 3)`` with ``max(h, w) <= max_side``.
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    small = thumbnail(image, max_side)
    size = (small.shape[1], small.shape[0])
    small_mask = np.zeros(small.shape[:2], dtype=np.uint8)
    # Crack (class 1) last, so that it wins where classes meet.
    for value in range(len(classes), 0, -1):
        present = Image.fromarray(((mask == value) * 255).astype(np.uint8)).resize(size, Image.Resampling.BOX)
        small_mask[np.asarray(present) > 0] = value
    return overlay(small, small_mask, classes, alpha)


def png_data_uri(array: np.ndarray) -> str:
    """Encode an image as a ``data:image/png;base64,...`` URI for embedding in HTML.

    Args:
        array: uint8 (or boolean) array of shape ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        raise ValueError(f"png_data_uri needs a uint8 image, got {array.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
