"""crackcascade: cascaded networks for structural damage diagnosis and crack localization."""

__version__ = "0.1.0"
