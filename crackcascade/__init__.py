"""crackcascade: cascaded networks for structural damage diagnosis and crack localization.

The public classes are importable from here so that configs can say
``class_path: crackcascade.MultiTaskClassifier``.
"""

from crackcascade.callbacks import LargestBatchFinder, SaveBackbone
from crackcascade.data.datamodules import ConcreteCrackDataModule, CrackMaskDataModule, PhiNetDataModule
from crackcascade.data.unlabeled import UnlabeledPhotoDataModule
from crackcascade.models.cascade import CrackCascade
from crackcascade.models.multitask import MultiTaskClassifier
from crackcascade.models.pretrain import SSLPretrainer
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
    "SSLPretrainer",
    "SaveBackbone",
    "SyntheticCrackMaskDataModule",
    "SyntheticPhiNetDataModule",
    "UnlabeledPhotoDataModule",
    "__version__",
]
