"""torchvision.transforms.v2 pipelines; images stay ``uint8`` until the model normalizes them."""

from __future__ import annotations

from collections.abc import Callable

import torch
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
