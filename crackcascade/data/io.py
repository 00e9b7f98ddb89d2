"""Image file reading shared by every dataset: one decoder, one error message."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

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


def read_image(path: str | Path, min_size: int | None = None) -> torch.Tensor:
    """Decode an image file to an RGB ``uint8`` tensor of shape ``(3, H, W)``.

    PIL reads every common format (JPEG, PNG, TIFF, BMP, WebP; palette, grayscale, 16-bit and
    RGBA are converted to RGB) and EXIF orientation is honoured, so a phone photo taken upright
    is upright here too. torchvision's decoders are deprecated from 0.29, so PIL is the one path.

    Args:
        path: Image file.
        min_size: For images that are resized to a smaller size anyway: a JPEG at least twice
            this size on both sides is decoded at 1/2, 1/4 or 1/8 scale, the smallest that keeps
            both sides >= ``min_size`` (libjpeg scales in the DCT domain, several times faster
            than a full decode; PIL's draft mode). Other formats and smaller JPEGs decode at full
            size. None always decodes at full size.

    Raises:
        DataError: One line naming the file, if it is missing or cannot be decoded.
    """
    try:
        with Image.open(path) as opened:
            if min_size is not None and opened.format == "JPEG":
                # Square request: the scale is the same whichever way EXIF turns the photo.
                opened.draft("RGB", (min_size, min_size))
            img = ImageOps.exif_transpose(opened)
            if img.mode.startswith("I;16"):
                # PIL's RGB conversion clips 16-bit values at 255; keep the top 8 bits instead.
                gray = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
                array = np.repeat(gray[..., None], 3, axis=2)
            else:
                array = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; check the path or the dataset root") from None
    except Exception as err:
        raise DataError(f"{path}: cannot decode image ({err}); replace or remove the file") from None
    return torch.from_numpy(array).permute(2, 0, 1)


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
