"""crackcascade: cascaded networks for structural damage diagnosis and crack localization.

The public classes are importable from here so that configs can say
``class_path: crackcascade.MultiTaskClassifier``.
"""

from crackcascade.data.datamodules import PhiNetDataModule, SyntheticPhiNetDataModule
from crackcascade.models.multitask import MultiTaskClassifier

__version__ = "0.1.0"

__all__ = ["MultiTaskClassifier", "PhiNetDataModule", "SyntheticPhiNetDataModule", "__version__"]
