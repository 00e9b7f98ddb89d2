"""torchvision.transforms.v2 pipelines; images stay ``uint8`` until the model normalizes them.

Classification transforms map an image alone; segmentation transforms map an image and its
class mask together, so both always see the same crop, flip and rotation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


def classification_transform(
    image_size: int, train: bool, augment: bool = True
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Build the per-sample transform for Phi-Net classification images.

    Horizontal flips and mild colour jitter keep every Phi-Net label valid. Vertical flips and
    90-degree rotations are left out on purpose: they would turn beams into columns and
    flexural cracks into shear-like patterns, i.e. change the component and damage-type labels.

    Args:
        image_size: Side of the square image the model sees.
        train: Whether this is the training pipeline (augmentation applies only then).
        augment: Set False to train without augmentation.

    Returns:
        A callable mapping a ``uint8`` ``(3, H, W)`` tensor to a ``uint8`` ``(3, S, S)`` tensor.
    """
    steps: list[torch.nn.Module] = [v2.Resize((image_size, image_size), antialias=True)]
    if train and augment:
        steps += [
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1),
        ]
    return v2.Compose(steps)


JointTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""Maps an image ``uint8 (3, H, W)`` and its class mask ``int64 (H, W)`` to a transformed pair."""


class RandomScaledCrop:
    """Crop a random window around the output size and resize it to ``size`` x ``size``.

    Like :class:`~torchvision.transforms.v2.RandomResizedCrop`, but the window's area is a
    fraction of the *output* area (``size**2``), not of the whole image: the image is zoomed by
    ``1 / sqrt(scale)`` whatever its resolution. A 4000 px photo is therefore cropped near native
    resolution instead of being shrunk whole into the crop, which would erase 1-3 px cracks.
    A window larger than the image is padded with zeros (background in the mask) at a random
    offset, so small images are not blown up either.

    Args:
        size: Side of the square output.
        scale: Range of window area over output area; values above 1 zoom out.
        ratio: Range of window aspect ratios (width / height), sampled log-uniformly.
    """

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.size = size
        self.scale = scale
        self.ratio = ratio

    def __call__(self, image: tv_tensors.Image, mask: tv_tensors.Mask) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """Return the cropped (and resized) image and mask."""
        # torch's generator, not numpy's: DataLoader seeds torch differently in every worker.
        area = self.size * self.size * _uniform(*self.scale)
        log_ratio = _uniform(math.log(self.ratio[0]), math.log(self.ratio[1]))
        width = max(1, round(math.sqrt(area * math.exp(log_ratio))))
        height = max(1, round(math.sqrt(area / math.exp(log_ratio))))
        img_h, img_w = v2.query_size([image])
        pad_h, pad_w = max(0, height - img_h), max(0, width - img_w)
        if pad_h or pad_w:
            top, left = _randint(pad_h), _randint(pad_w)
            padding = [left, top, pad_w - left, pad_h - top]
            image, mask = v2.functional.pad(image, padding, fill=0), v2.functional.pad(mask, padding, fill=0)
            img_h, img_w = img_h + pad_h, img_w + pad_w
        top, left = _randint(img_h - height), _randint(img_w - width)
        image = v2.functional.crop(image, top, left, height, width)
        mask = v2.functional.crop(mask, top, left, height, width)
        if (height, width) != (self.size, self.size):
            # A tv_tensors.Mask is only ever resized nearest-neighbour, so class values are never
            # blended. NEAREST_EXACT samples pixel centres as the image's resize does; plain NEAREST
            # would shift the mask up to half a pixel against the image.
            image = v2.functional.resize(image, [self.size, self.size], antialias=True)
            nearest = v2.InterpolationMode.NEAREST_EXACT
            mask = v2.functional.resize(mask, [self.size, self.size], interpolation=nearest)
        return image, mask


class RandomRotation90:
    """Rotate by a random multiple of 90 degrees: exact pixel moves, no interpolation."""

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Rotate every input by the same random number of quarter turns."""
        turns = _randint(3)
        return tuple(tv_tensors.wrap(torch.rot90(x, turns, dims=(-2, -1)), like=x) for x in inputs)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _randint(high: int) -> int:
    """Uniform integer in ``[0, high]``."""
    return int(torch.randint(high + 1, ()))


def segmentation_transform(
    image_size: int,
    train: bool,
    augment: bool = True,
    scale_range: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    resize: int | None = None,
) -> JointTransform:
    """Build the joint image/mask transform for crack segmentation.

    Image and mask go through the same geometric steps as ``tv_tensors.Image`` and
    ``tv_tensors.Mask``, so the mask is only ever moved, cropped, padded (with 0, background) or
    resized nearest-neighbour: its values stay class indices. Colour jitter touches the image only.

    Training crops ``image_size`` squares (:class:`RandomScaledCrop` over ``scale_range``), then
    flips both ways and rotates by multiples of 90 degrees: unlike the Phi-Net labels, a crack
    mask stays valid under any of these. With ``augment=False`` training still takes random
    ``image_size`` crops at native scale (batches need one size) but nothing else. Evaluation
    returns the full image and mask unchanged; the loaders pad batches (see
    :func:`crackcascade.data.cracks.pad_collate`).

    Args:
        image_size: Side of the square training crop.
        train: Whether this is the training pipeline.
        augment: Set False to train on plain crops.
        scale_range: Range of crop-window area over ``image_size**2`` (zoom ``1 / sqrt(s)``).
        ratio: Range of crop-window aspect ratios.
        resize: Resize image and mask to ``resize`` x ``resize`` (the mask nearest-neighbour)
            instead of cropping in training or keeping native size in evaluation, as Bai et al.
            fed their U-Net 256 x 256 inputs; training then still flips, turns and jitters.

    Returns:
        A callable mapping ``(uint8 (3, H, W), int64 (H, W))`` to the transformed pair.
    """
    sized: list[Callable[..., Any]] = [v2.Resize((resize, resize), antialias=True)] if resize else []
    if not train:
        return _compose(sized) if sized else _identity
    steps: list[Callable[..., Any]]
    if sized:
        turns = [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), RandomRotation90(), _JITTER]
        steps = sized + (turns if augment else [])
    elif augment:
        steps = [
            RandomScaledCrop(image_size, scale_range, ratio),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            RandomRotation90(),
            _JITTER,
        ]
    else:
        steps = [RandomScaledCrop(image_size, (1.0, 1.0), (1.0, 1.0))]
    return _compose(steps)


_JITTER = v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1)


def _compose(steps: list[Callable[..., Any]]) -> JointTransform:
    pipeline = v2.Compose(steps)

    def transform(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_image, out_mask = pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor)

    return transform


def _identity(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return image, mask
