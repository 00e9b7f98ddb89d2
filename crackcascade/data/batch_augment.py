"""The classification transform's random steps, drawn per sample and applied to a whole batch at once.

For ``data.decode_on gpu`` (:mod:`crackcascade.data.gpu_decode`): looping torchvision's v2
transforms over the images of a batch on the GPU would launch some twenty kernels per image from
Python, a few hundred microseconds of CPU time each image, enough to make the main process the
new ceiling. Instead each sample's parameters are drawn in the DataLoader worker exactly as the
transform itself draws them (:meth:`BatchAugment.draw`: the flip's ``torch.rand(1)``, then
:meth:`~torchvision.transforms.v2.ColorJitter.make_params`), under the per-sample seed the CPU path
uses too, so a sample gets the same flip and jitter on either path; and :func:`apply_params`
applies them to the batch with the arithmetic of torchvision's ``uint8`` kernels
(``adjust_brightness``, ``adjust_contrast``, ``adjust_saturation``; results within one grey level).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

PARAMS = 8
"""Columns of a sample's parameters: flipped (0/1), the four jitter steps' order, brightness, contrast, saturation."""

_BRIGHTNESS, _CONTRAST, _SATURATION = 0, 1, 2  # ColorJitter's fn_idx values (3 is hue)


class BatchAugment:
    """Draw per-sample parameters for the random steps of a classification transform.

    Args:
        steps: The steps after the resize: any of ``v2.RandomHorizontalFlip`` and
            ``v2.ColorJitter`` (without hue), in that order, as
            :func:`~crackcascade.data.transforms.classification_transform` builds them.

    Raises:
        TypeError: For another step, which this batched path cannot apply.
    """

    def __init__(self, steps: Sequence[torch.nn.Module]) -> None:
        self.flip: v2.RandomHorizontalFlip | None = None
        self.jitter: v2.ColorJitter | None = None
        for step in steps:
            if isinstance(step, v2.RandomHorizontalFlip) and self.flip is None and self.jitter is None:
                self.flip = step
            elif isinstance(step, v2.ColorJitter) and step.hue is None and self.jitter is None:
                self.jitter = step
            else:
                raise TypeError(f"batched GPU augmentation cannot apply {step!r}; use data.decode_on cpu")

    def draw(self) -> torch.Tensor:
        """One sample's ``float64`` parameters (:data:`PARAMS`), drawn from torch's RNG as the steps draw them."""
        params = torch.full((PARAMS,), float("nan"), dtype=torch.float64)
        params[0] = 0.0
        # RandomHorizontalFlip.forward skips the image when rand(1) >= p, and draws nothing more.
        if self.flip is not None and bool(torch.rand(1) < self.flip.p):
            params[0] = 1.0
        if self.jitter is not None:
            drawn = self.jitter.make_params([])
            params[1:5] = drawn["fn_idx"].to(torch.float64)
            for column, key in ((5, "brightness_factor"), (6, "contrast_factor"), (7, "saturation_factor")):
                if drawn[key] is not None:
                    params[column] = drawn[key]
        return params


def apply_params(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Flip and jitter a ``uint8`` ``(B, 3, H, W)`` batch by each sample's parameters (``(B, PARAMS)``).

    The jitter steps run in each sample's own order; a step whose factor is NaN is not applied.
    Every step is computed for the whole batch and selected per sample, so nothing waits on the
    device (no data-dependent indexing).
    """
    jitter = not bool(torch.isnan(params[:, 1:5].cpu()).all())  # params come from the host: no device sync
    params = params.to(images.device, non_blocking=True)
    flipped = params[:, 0].bool().view(-1, 1, 1, 1)
    out = torch.where(flipped, images.flip(-1), images)
    if not jitter:
        return out
    order, factors = params[:, 1:5], params[:, 5:8]
    for position in range(4):
        step = order[:, position]
        adjusted = out
        for fn, factor in ((_BRIGHTNESS, factors[:, 0]), (_CONTRAST, factors[:, 1]), (_SATURATION, factors[:, 2])):
            chosen = ((step == fn) & ~torch.isnan(factor)).view(-1, 1, 1, 1)
            adjusted = torch.where(chosen, _adjust(out, fn, torch.nan_to_num(factor, nan=1.0)), adjusted)
        out = adjusted
    return out


def _adjust(images: torch.Tensor, fn: int, factor: torch.Tensor) -> torch.Tensor:
    """The uint8 brightness, contrast or saturation kernel of torchvision, one factor per image."""
    ratio = factor.to(torch.float32).view(-1, 1, 1, 1)
    if fn == _BRIGHTNESS:
        return images.mul(ratio).clamp_(0, 255).to(torch.uint8)
    red, green, blue = images.unbind(dim=-3)
    gray = red.mul(0.2989).add_(green, alpha=0.587).add_(blue, alpha=0.114).unsqueeze(dim=-3).floor_()
    other = gray.mean(dim=(-3, -2, -1), keepdim=True) if fn == _CONTRAST else gray
    alpha = (1.0 - factor).to(torch.float32).view(-1, 1, 1, 1)
    return torch.addcmul(images.mul(ratio), other, alpha).clamp_(0, 255).to(torch.uint8)
