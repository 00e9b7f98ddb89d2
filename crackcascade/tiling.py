"""Sliding-window inference for photos of any size at native resolution.

Cracks are a few pixels wide, so a 4000x3000 photo cannot be shrunk to the network's training
size without losing them; instead the photo is cut into overlapping tiles at full resolution,
the tiles are run in small batches and their outputs are blended back together.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

PAD_MULTIPLE = 32
"""Input sides must be multiples of this for a five-stage U-Net (2**5 down-sampling)."""


def pad_bottom_right(images: Tensor, pad_h: int, pad_w: int) -> Tensor:
    """Pad ``(C, H, W)`` or ``(B, C, H, W)`` images by ``pad_h`` rows and ``pad_w`` columns.

    Padding reflects the image, so the border region looks like image content rather than a flat
    colour the network never saw; sides too short to reflect (no more pixels than the padding,
    which only happens for images under half the pad multiple) repeat the edge pixel instead.
    Reflection commutes with per-pixel operations such as normalization, so padding before or
    after normalizing gives the same network input.
    """
    if pad_h == 0 and pad_w == 0:
        return images
    height, width = images.shape[-2:]
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)


def pad_to_multiple(images: Tensor, multiple: int = PAD_MULTIPLE) -> Tensor:
    """Pad images at the bottom and right so both sides are multiples of ``multiple``.

    See :func:`pad_bottom_right` for the padding (reflection).

    Args:
        images: ``(C, H, W)`` or ``(B, C, H, W)`` images.
        multiple: The size both sides are rounded up to.

    Returns:
        The padded tensor (``images`` itself when no padding is needed).
    """
    height, width = images.shape[-2:]
    return pad_bottom_right(images, -height % multiple, -width % multiple)


def window_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of sliding windows of length ``tile`` covering ``size`` pixels.

    Windows advance by ``tile - overlap``; the last one is moved back to end flush with the
    border, so it may overlap its neighbour by more than ``overlap``. A side no longer than a
    tile gets a single window.

    Args:
        size: Length of the side.
        tile: Window length.
        overlap: Minimum overlap of consecutive windows.
    """
    if size <= tile:
        return [0]
    stride = tile - overlap
    return [*range(0, size - tile, stride), size - tile]


def _ramp(length: int, before: int, after: int) -> Tensor:
    """1-D blending weight of one window: raised-cosine ramps over its overlaps, 1 elsewhere.

    ``before``/``after`` are the overlaps with the previous/next window (0 at the image border,
    so border pixels keep full weight). Consecutive windows' ramps over a shared overlap are
    complementary (they sum to 1), and every value is strictly positive, so the normalizing sum
    of weights is never zero.
    """
    weight = torch.ones(length, dtype=torch.float64)
    if before > 0:
        steps = (torch.arange(before, dtype=torch.float64) + 0.5) / before
        weight[:before] *= 0.5 - 0.5 * torch.cos(math.pi * steps)
    if after > 0:
        steps = (torch.arange(after, dtype=torch.float64) + 0.5) / after
        weight[length - after :] *= 0.5 + 0.5 * torch.cos(math.pi * steps)
    return weight.float()


def _axis_windows(size: int, tile: int, overlap: int) -> list[tuple[int, Tensor]]:
    length = min(size, tile)
    starts = window_starts(size, tile, overlap)
    windows = []
    for i, start in enumerate(starts):
        before = starts[i - 1] + length - start if i > 0 else 0
        after = start + length - starts[i + 1] if i + 1 < len(starts) else 0
        windows.append((start, _ramp(length, before, after)))
    return windows


def predict_tiled(
    forward: Callable[[Tensor], Tensor],
    image: Tensor,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    multiple: int = PAD_MULTIPLE,
) -> Tensor:
    """Run a dense model over one image of any size in overlapping tiles and blend the outputs.

    The image is covered by ``tile_size`` windows at native resolution (the last window in each
    direction flush with the border); tiles go through ``forward`` ``batch_size`` at a time and
    each output is weighted by a raised-cosine ramp over the parts it shares with neighbouring
    windows (weight 1 elsewhere, never 0), then the sum is divided by the summed weights, so the
    blend is a partition of unity. Sides shorter than a tile are padded by reflection (see
    :func:`pad_bottom_right`) to a multiple of ``multiple`` and the output is cropped back.

    An image that fits in one tile gets a single window with weights of exactly 1, so the result
    is bit for bit ``forward(image[None])[0]`` when ``forward`` takes any size itself
    (``multiple=1``, as for :class:`~crackcascade.models.segmenter.CrackSegmenter`, whose forward
    pads the same way), and ``forward(pad_to_multiple(image[None]))`` cropped otherwise. (Passing
    the identical tensor matters: PyTorch's vectorized element-wise kernels may round the last bit
    differently for a padded-then-cropped tensor.)

    Outputs are accumulated on the CPU in float32, so the memory needed is about
    ``(C + 1) * H * W * 4`` bytes plus one batch of tiles on ``device``. Runs without gradients.

    Args:
        forward: Maps a ``(N, 3, h, w)`` float batch (0-255 when ``image`` is ``uint8``) to
            ``(N, C, h, w)`` outputs, e.g. probabilities.
        image: ``(3, H, W)`` image, ``uint8`` or float.
        tile_size: Window side; a multiple of ``multiple``.
        overlap: Minimum overlap of neighbouring windows, ``0 <= overlap < tile_size``.
        batch_size: Tiles per call of ``forward``.
        device: Where tiles are sent for ``forward`` (default: the image's device).
        multiple: Side multiple that ``forward`` needs (1 if it pads by itself).

    Returns:
        ``(C, H, W)`` float32 CPU tensor of blended outputs.

    Raises:
        ValueError: For an image that is not ``(channels, H, W)``, bad tile options, or a
            ``forward`` whose output does not match its input's size.
    """
    if image.dim() != 3:
        raise ValueError(f"predict_tiled expects one (channels, H, W) image, got shape {tuple(image.shape)}")
    if multiple < 1 or tile_size <= 0 or tile_size % multiple:
        raise ValueError(f"tile_size must be a positive multiple of {multiple}, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size), got {overlap} for tile_size {tile_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    target = torch.device(device) if device is not None else image.device
    height, width = image.shape[-2:]
    # Only sides shorter than a tile need padding: longer sides are covered by whole tiles.
    short = pad_bottom_right(
        image,
        -height % multiple if height < tile_size else 0,
        -width % multiple if width < tile_size else 0,
    )
    full_h, full_w = short.shape[-2:]
    rows = _axis_windows(full_h, tile_size, overlap)
    cols = _axis_windows(full_w, tile_size, overlap)
    windows = [(y, wy, x, wx) for y, wy in rows for x, wx in cols]
    tile_h, tile_w = len(rows[0][1]), len(cols[0][1])

    output: Tensor | None = None
    weight_sum = torch.zeros(full_h, full_w, dtype=torch.float32)
    with torch.no_grad():
        for first in range(0, len(windows), batch_size):
            chunk = windows[first : first + batch_size]
            tiles = torch.stack([short[:, y : y + tile_h, x : x + tile_w] for y, _, x, _ in chunk])
            result = forward(tiles.to(target).float())
            if result.dim() != 4 or result.shape[0] != len(chunk) or result.shape[-2:] != (tile_h, tile_w):
                raise ValueError(
                    f"forward returned shape {tuple(result.shape)} for tiles of shape {tuple(tiles.shape)}; "
                    "it must keep the batch size and the spatial size"
                )
            result = result.detach().float().cpu()
            if output is None:
                output = torch.zeros(result.shape[1], full_h, full_w, dtype=torch.float32)
            for tile, (y, wy, x, wx) in zip(result, chunk, strict=True):
                weight = wy[:, None] * wx[None, :]
                output[:, y : y + tile_h, x : x + tile_w] += tile * weight
                weight_sum[y : y + tile_h, x : x + tile_w] += weight
    assert output is not None  # at least one window always exists
    output /= weight_sum
    return output[:, :height, :width].contiguous()
