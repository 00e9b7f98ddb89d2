"""LightningDataModules: Phi-Net multi-task classification, crack masks and the concrete-crack set.

Their synthetic twins, which write a built-in set before reading it, are in :mod:`crackcascade.synthetic`.
"""

from crackcascade.data.datamodules.base import LoaderDataModule, eval_sampler, make_loader
from crackcascade.data.datamodules.concrete import ConcreteCrackDataModule
from crackcascade.data.datamodules.cracks import CrackMaskDataModule
from crackcascade.data.datamodules.phinet import CombinedMode, PhiNetDataModule

__all__ = [
    "CombinedMode",
    "ConcreteCrackDataModule",
    "CrackMaskDataModule",
    "LoaderDataModule",
    "PhiNetDataModule",
    "eval_sampler",
    "make_loader",
]
