"""What a crack mask must be before it is trusted: COCO segmentations checked before pycocotools, mask files decoded.

pycocotools' C code trusts its input: a compressed RLE string that is not its encoding, or whose
runs do not add up to the image, makes it read and write past its buffers (a hang, a crash or a
silently wrong mask), and a polygon coordinate of 1e12 makes it rasterise for ever. So
:func:`check_segmentation` decodes RLE strings in numpy and bounds polygons before pycocotools
sees them.

Mask files of image/mask pairs are read by :func:`decode_mask`, which refuses what it would
otherwise have to guess:

* lossy files (JPEG, lossy WebP), whose compression noise around the crack would read as crack;
* with one class, values other than 0, 1 and 255 in a grayscale mask (anti-aliased edges, noise),
  more than one colour besides black in a colour mask, and palette index 255 (a binary 0/255
  image saved as a palette PNG, or a "void" index); palette indices 2-254 are other classes
  (Phi-Net's 0/1/2 masks read crack only) and read as background;
* with K classes, values above K;
* an alpha channel that varies and marks other pixels than the colours do (a crack drawn as
  transparency on a constant colour).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crackcascade.errors import DataError

BAD_POLYGON = "annotations with a bad polygon (with their images)"
BAD_RLE = "annotations with a bad RLE (with their images)"

POLYGON_MARGIN = 2.0
"""Pixels a polygon point may lie outside the image (annotation tools let a vertex slip over the edge)."""

INDEX_MODES = frozenset({"1", "L", "P", "I", "I;16", "I;16B", "I;16L", "LA", "PA"})
"""Mask modes that hold one value per pixel (besides an alpha channel)."""

BINARY_VALUES = (0, 1, 255, 65535)
"""Values of a one-class grayscale mask: 0 is background; 1, 255 (8 bits) and 65535 (16 bits) crack."""

PALETTE_VOID = 255
"""The palette index a one-class mask may not hold: crack saved as white, or VOC's "void"."""

_RLE_FIRST, _RLE_LAST = 48, 111  # pycocotools writes each 5-bit group plus a flag as chr(48 + 0..63)
_RLE_MAX_GROUPS = 6
"""Characters of one number in an RLE string: 6 hold any run up to 2**29 pixels. pycocotools'
decoder shifts an ``int`` by 5 per character, which overflows past 6."""


# ---------------------------------------------------------------------------------------------
# COCO segmentations
# ---------------------------------------------------------------------------------------------


def rle_string_counts(counts: str | bytes) -> np.ndarray:
    """Decode the run lengths of a COCO compressed RLE string, as pycocotools' ``rleFrString`` does.

    Each number is written in 5-bit groups, least significant first, as ``chr(48 + group)`` with
    bit 0x20 set while more groups follow and bit 0x10 of the last group the sign; from the
    fourth number on, each is the difference to the run two before it.

    Args:
        counts: The ``counts`` string (or its ASCII bytes).

    Returns:
        The ``int64`` run lengths (not yet checked for sign or sum).

    Raises:
        ValueError: If ``counts`` is not in that encoding (the reason, to quote in a message).
    """
    raw = counts.encode("utf-8") if isinstance(counts, str) else bytes(counts)
    if not raw:
        raise ValueError("the counts string is empty")
    codes = np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
    outside = (codes < _RLE_FIRST) | (codes > _RLE_LAST)
    if outside.any():
        if isinstance(counts, str):
            at = next(i for i, ch in enumerate(counts) if not _RLE_FIRST <= ord(ch) <= _RLE_LAST)
            shown = counts[at]
        else:
            at = int(np.flatnonzero(outside)[0])
            shown = chr(raw[at])
        raise ValueError(f"character {shown!r} at position {at} is not in the RLE alphabet '0'..'o'")
    codes -= _RLE_FIRST
    more = (codes & 0x20) != 0
    if more[-1]:
        raise ValueError("the counts string ends inside a number (cut short?)")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _RLE_MAX_GROUPS:
        at = int(starts[int(np.argmax(lengths))])
        raise ValueError(f"the number at position {at} has {int(lengths.max())} characters, more than any run needs")
    shift = 5 * (np.arange(len(codes)) - np.repeat(starts, lengths))
    values = np.add.reduceat((codes & 0x1F) << shift, starts)
    negative = (codes[ends] & 0x10) != 0
    values = np.where(negative, values - (np.int64(1) << (5 * lengths)), values)
    runs = np.empty_like(values)
    runs[:1] = values[:1]
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_rle(segmentation: dict[str, Any], height: int, width: int) -> tuple[str, str] | None:
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if not (isinstance(size, list | tuple) and len(size) == 2 and all(_is_number(s) for s in size)) or counts is None:
        return BAD_RLE, "RLE needs 'size' [height, width] (numbers) and 'counts'; fix the export"
    if [size[0], size[1]] != [height, width]:
        return BAD_RLE, f"RLE size {list(size)} differs from the image's [{height}, {width}]; re-export it"
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            return BAD_RLE, "uncompressed RLE counts must be non-negative integers"
        runs = np.asarray(counts, dtype=object)
    elif isinstance(counts, str | bytes):
        try:
            runs = rle_string_counts(counts)
        except ValueError as err:
            return BAD_RLE, f"compressed RLE counts are not COCO's encoding: {err}; re-export it"
        if (runs < 0).any():
            at = int(np.flatnonzero(runs < 0)[0])
            return (
                BAD_RLE,
                f"compressed RLE counts decode to a negative run ({int(runs[at])} at run {at}); re-export it",
            )
    else:
        return BAD_RLE, "RLE counts must be a string (compressed) or a list of integers"
    total = int(runs.sum()) if len(runs) else 0
    if total != height * width:
        return BAD_RLE, f"RLE counts sum to {total}, not height x width = {height * width}"
    return None


def _check_polygons(segmentation: list[Any], height: int, width: int) -> tuple[str, str] | None:
    for polygon in segmentation:
        if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
            return BAD_POLYGON, "a polygon must be a flat list of x, y numbers; fix the export"
        if len(polygon) % 2 or len(polygon) < 6:
            return (
                BAD_POLYGON,
                f"polygon with {len(polygon)} coordinates (needs an even count and at least 3 points); redraw it",
            )
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(points).all():
            return BAD_POLYGON, "polygon has a NaN or infinite coordinate; redraw it"
        limits = np.array([width, height], dtype=np.float64) + POLYGON_MARGIN
        outside = ((points < -POLYGON_MARGIN) | (points > limits)).any(axis=1)
        if outside.any():
            x, y = points[int(np.flatnonzero(outside)[0])]
            return (
                BAD_POLYGON,
                f"polygon point ({x:g}, {y:g}) lies outside the {width}x{height} image (x must be in "
                f"{-POLYGON_MARGIN:g}..{width + POLYGON_MARGIN:g}, "
                f"y in {-POLYGON_MARGIN:g}..{height + POLYGON_MARGIN:g}); redraw it",
            )
    return None


def check_segmentation(segmentation: Any, height: int, width: int) -> tuple[str, str] | None:
    """Return ``(kind, message)`` for a segmentation pycocotools cannot rasterise correctly, else None.

    Polygons need at least 3 finite points within :data:`POLYGON_MARGIN` pixels of the image;
    RLE needs the image's size and runs of non-negative lengths that cover it exactly, a
    compressed string in COCO's encoding (:func:`rle_string_counts`).
    """
    if isinstance(segmentation, dict):
        return _check_rle(segmentation, height, width)
    if not isinstance(segmentation, list) or not segmentation:
        return BAD_POLYGON, "segmentation is neither polygons nor RLE (empty or wrong type); redraw it"
    return _check_polygons(segmentation, height, width)


# ---------------------------------------------------------------------------------------------
# Mask files
# ---------------------------------------------------------------------------------------------


def _webp_is_lossy(path: Path) -> bool:
    """Whether a WebP file holds VP8 (lossy) rather than VP8L (lossless) image data."""
    with open(path, "rb") as handle:
        head = handle.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
            return False
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return False
            fourcc, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if fourcc in (b"VP8 ", b"VP8L"):
                return fourcc == b"VP8 "
            if fourcc == b"ANMF":  # an animation frame: 16 bytes of frame header, then its image chunks
                handle.seek(16, 1)
                continue
            handle.seek(size + (size & 1), 1)


def lossy_format(img: Image.Image, path: Path) -> str | None:
    """The name of a lossy format ``img`` is stored in (``JPEG``, ``lossy WebP``), or None."""
    if img.format in ("JPEG", "MPO"):
        return "JPEG"
    if img.format == "WEBP" and _webp_is_lossy(path):
        return "lossy WebP"
    return None


def lossy_message(path: Path, name: str) -> str:
    """The one-line error for a mask stored in a lossy format."""
    return (
        f"{path}: {name} mask: lossy compression adds noise values around the crack that would read as "
        "crack; export the masks as PNG"
    )


def _one_class(path: Path, mode: str, values: np.ndarray) -> np.ndarray:
    """The 0/1 crack mask of a one-class mask file (without its alpha channel)."""
    if mode in ("P", "PA"):
        if (values == PALETTE_VOID).any():
            raise DataError(
                f"{path}: palette index {PALETTE_VOID} is outside the class indices 0..1 (0 background, 1 crack; "
                "2-254 other classes); if it marks crack, save the mask as a grayscale PNG of 0 and 255 "
                "or put crack at palette index 1"
            )
        return (values == 1).astype(np.int64)
    if values.ndim == 3:  # colour: black background, one crack colour
        colour = np.asarray(values.any(axis=2))
        if colour.any():
            first = values[np.unravel_index(int(np.argmax(colour)), colour.shape)]
            other = colour & (values != first).any(axis=2)
            if other.any():
                second = tuple(int(v) for v in values[np.unravel_index(int(np.argmax(other)), other.shape)])
                raise DataError(
                    f"{path}: one-class colour mask holds more than one colour besides black (e.g. "
                    f"{tuple(int(v) for v in first)} and {second}: anti-aliased edges or noise?); "
                    "save it as a grayscale PNG of 0 (background) and 255 (crack)"
                )
        return colour.astype(np.int64)
    if values.dtype == np.bool_:  # a 1-bit mask
        return values.astype(np.int64)
    stray = values != 0
    for allowed in BINARY_VALUES[1:]:  # plain comparisons: 20 times faster than np.isin or a bincount
        if values.dtype.kind == "f" or allowed <= np.iinfo(values.dtype).max:
            stray &= values != allowed
    if stray.any():
        odd, count = np.unique(values[stray]), int(stray.sum())
        shown = ", ".join(f"{v:g}" for v in odd[:3].tolist()) + (", ..." if len(odd) > 3 else "")
        raise DataError(
            f"{path}: one-class mask holds values other than 0, 1 and 255 ({shown} in {count} pixels: anti-aliased "
            "edges or noise?); save it with only 0 (background) and 255 (crack)"
        )
    return (values != 0).astype(np.int64)


def _classes(path: Path, mode: str, values: np.ndarray, num_classes: int) -> np.ndarray:
    """The class-index mask of a K-class mask file (without its alpha channel)."""
    if values.ndim == 3:
        raise DataError(f"{path}: {mode} mask, but with {num_classes} classes masks must hold class indices")
    out = values.astype(np.int64)
    top, low = int(out.max(initial=0)), int(out.min(initial=0))
    if top > num_classes or low < 0:
        what = "palette index" if mode in ("P", "PA") else "mask value"
        bad = top if top > num_classes else low
        raise DataError(
            f"{path}: {what} {bad} but only {num_classes} classes (1..{num_classes}; allowed values 0..{num_classes}); "
            "list a class for every mask value in data.classes"
        )
    return out


def _check_alpha(path: Path, values: np.ndarray, alpha: np.ndarray) -> None:
    """Refuse an alpha channel that varies and disagrees with the colours about which pixels are marked."""
    if alpha.min() == alpha.max():
        return  # all opaque (or all transparent): it says nothing
    marked = values != 0 if values.ndim == 2 else values.any(axis=2)
    if np.array_equal(marked, alpha != 0):
        return  # e.g. red crack on transparent black: both say the same
    if (values == values[0, 0]).all():
        raise DataError(
            f"{path}: the mask's colour is the same everywhere and only its alpha (transparency) varies: the "
            "crack is drawn as transparency; save the alpha channel as a grayscale PNG of 0 and 255, e.g. "
            "Image.open(path).getchannel('A').save(path)"
        )
    raise DataError(
        f"{path}: the mask's alpha (transparency) marks other pixels than its colours do; save it without "
        "alpha as a grayscale PNG of 0 (background) and 255 (crack)"
    )


def decode_mask(path: Path, num_classes: int) -> np.ndarray:
    """Read a mask file of an image/mask pair into an ``int64 (H, W)`` class mask (0 background, 1..K).

    With one class, any non-zero value of a grayscale or colour mask is crack and a palette mask
    keeps only index 1; with several, the (single-channel) mask holds class indices. What this
    refuses is in the module docstring.

    Raises:
        DataError: One line naming the file, what is wrong and how to fix it.
    """
    try:
        with Image.open(path) as img:
            lossy = lossy_format(img, path)
            mode = img.mode
            values = np.asarray(img)
    except Exception as err:
        raise DataError(f"{path}: cannot decode mask ({err}); replace or remove it") from None
    if lossy is not None:
        raise DataError(lossy_message(path, lossy))
    if mode in ("LA", "PA", "RGBA"):
        values, alpha = values[..., :-1], values[..., -1]
        if values.shape[2] == 1:
            values = values[..., 0]
        _check_alpha(path, values, alpha)
    if num_classes == 1:
        return _one_class(path, mode, values)
    return _classes(path, mode, values, num_classes)
