"""Image file reading shared by every dataset: one decoder, one error message."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from crackcascade.errors import DataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
"""File suffixes (lower case) treated as images when scanning folders."""


def is_image_file(path: str | Path) -> bool:
    """Return True for a visible file whose suffix is an image suffix."""
    name = os.path.basename(path)
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """List image files under ``folder`` in sorted order, skipping hidden files and folders.

    Args:
        folder: Folder to scan.
        recursive: Whether to descend into sub-folders.

    Returns:
        Sorted paths, so datasets built from them are reproducible across file systems.
    """
    root = Path(folder)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        found.extend(Path(dirpath) / f for f in filenames if is_image_file(f))
    return sorted(found)


def read_image(path: str | Path) -> torch.Tensor:
    """Decode an image file to an RGB ``uint8`` tensor of shape ``(3, H, W)``.

    torchvision's native decoder handles JPEG/PNG/WebP/GIF quickly and honours EXIF
    orientation; other formats (TIFF, BMP) and 16-bit or palette files go through PIL.

    Args:
        path: Image file.

    Raises:
        DataError: One line naming the file, if it is missing or cannot be decoded.
    """
    try:
        return decode_image(str(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; check the path or the dataset root") from None
    except (RuntimeError, ValueError, OSError):
        pass
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; check the path or the dataset root") from None
    except Exception as err:
        raise DataError(f"{path}: cannot decode image ({err}); replace or remove the file") from None


def check_files_exist(paths: Iterable[Path], source: str) -> None:
    """Fail with one line if any listed image is missing on disk.

    Args:
        paths: Files a manifest or annotation file refers to.
        source: The file that lists them, named in the message.
    """
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"{source}: image {missing[0]} not found{more}; fix the paths or the root")
