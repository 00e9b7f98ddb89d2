"""crackcascade: cascaded networks for structural damage diagnosis and crack localization.

The public classes are importable from here so that configs can say
``class_path: crackcascade.MultiTaskClassifier``.
"""

from crackcascade.callbacks import LargestBatchFinder
from crackcascade.data.datamodules import ConcreteCrackDataModule, CrackMaskDataModule, PhiNetDataModule
from crackcascade.models.cascade import CrackCascade
from crackcascade.models.multitask import MultiTaskClassifier
from crackcascade.models.segmenter import CrackSegmenter
from crackcascade.synthetic import SyntheticCrackMaskDataModule, SyntheticPhiNetDataModule

__version__ = "0.1.0"

__all__ = [
    "ConcreteCrackDataModule",
    "CrackCascade",
    "CrackMaskDataModule",
    "CrackSegmenter",
    "LargestBatchFinder",
    "MultiTaskClassifier",
    "PhiNetDataModule",
    "SyntheticCrackMaskDataModule",
    "SyntheticPhiNetDataModule",
    "__version__",
]
