"""Image file reading shared by every dataset: one decoder, one error message."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from crackcascade.data.types import OnError
from crackcascade.errors import ConfigError, DataError, first_line

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
"""File suffixes (lower case) treated as images when scanning folders."""

MAX_PIXELS_ENV = "CRACKCASCADE_MAX_IMAGE_PIXELS"
"""Environment variable that sets the largest image (width x height) read; 0 lifts the limit."""

FOLLOW_SYMLINKS_ENV = "CRACKCASCADE_FOLLOW_SYMLINKS"
"""Environment variable that, set to 1, allows symlinks from a dataset folder to files outside it."""


def is_image_file(path: str | Path) -> bool:
    """Return True for a visible file whose suffix is an image suffix."""
    name = os.path.basename(path)
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(root: Path, recursive: bool) -> Iterator[tuple[Path, list[str]]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        yield Path(dirpath), filenames


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """List image files under ``folder`` in sorted order, skipping hidden files and folders.

    Args:
        folder: Folder to scan.
        recursive: Whether to descend into sub-folders.

    Returns:
        Sorted paths, so datasets built from them are reproducible across file systems.
    """
    walk = _walk(Path(folder), recursive)
    return sorted(dirpath / name for dirpath, filenames in walk for name in filenames if is_image_file(name))


@dataclass
class FolderScan:
    """What scanning a dataset folder found.

    Attributes:
        images: Image files to use, sorted.
        others: Visible files that are not images (by suffix): ignored, and reported once.
        escaping: Image files that are symlinks resolving outside the dataset root, with their targets.
    """

    images: list[Path] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)
    escaping: list[tuple[Path, Path]] = field(default_factory=list)


def scan_images(folder: str | Path, boundary: str | Path, recursive: bool = True) -> FolderScan:
    """Scan ``folder`` for images as :func:`list_images` does, sorting out what a dataset must not use.

    Hidden files and folders are skipped silently (``.DS_Store``, ``._photo.jpg``, ``.git``);
    other files that are not images are collected so a reader can say it ignored them; image
    files that resolve outside ``boundary`` (a symlink leaving the dataset root) are collected
    apart, unless :data:`FOLLOW_SYMLINKS_ENV` is set to 1.

    Args:
        folder: Folder to scan.
        boundary: The dataset root that every image must resolve inside.
        recursive: Whether to descend into sub-folders (symlinked folders are not followed).
    """
    scan = FolderScan()
    follow = os.environ.get(FOLLOW_SYMLINKS_ENV, "") == "1"
    inside = Path(boundary).resolve()
    for dirpath, filenames in _walk(Path(folder), recursive):
        for name in filenames:
            path = dirpath / name
            if name.startswith("."):
                continue
            if not is_image_file(name):
                scan.others.append(path)
                continue
            target = path.resolve()
            if not follow and not target.is_relative_to(inside):
                scan.escaping.append((path, target))
                continue
            scan.images.append(path)
    scan.images.sort()
    scan.others.sort()
    return scan


def escape_message(path: Path, target: Path, boundary: Path) -> str:
    """The one-line error for an image that resolves outside its dataset root."""
    return (
        f"{path}: resolves to {target}, outside the dataset root {boundary}; copy the file in, point the root "
        f"at a folder holding both, or set {FOLLOW_SYMLINKS_ENV}=1 to allow links out of the root"
    )


def max_image_pixels() -> int | None:
    """The largest image (width x height) crackcascade decodes, or None for no limit.

    PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89.5 MP by default) unless
    :data:`MAX_PIXELS_ENV` sets another (``0``: no limit). PIL itself only warns between its
    limit and twice that; here an image above the limit is always an error naming the file.

    Raises:
        ConfigError: If the environment variable is not a whole number.
    """
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return Image.MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{MAX_PIXELS_ENV}={text!r} must be a whole number of pixels (0: no limit)") from None
    return value if value > 0 else None


@contextlib.contextmanager
def _open(path: str | Path) -> Iterator[Image.Image]:
    """``Image.open`` with the pixel limit checked by :func:`check_size` instead of by PIL.

    PIL's own check raises only above twice its limit and warns below; switching it off while a
    file is opened lets one rule with one message apply. DataLoader workers are processes, so
    the module global is not shared with another thread reading at the same time.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    with img:
        yield img


def check_size(path: str | Path, width: int, height: int) -> None:
    """Fail with one line if an image is larger than :func:`max_image_pixels`."""
    limit = max_image_pixels()
    if limit is not None and width * height > limit:
        raise DataError(
            f"{path}: {width}x{height} image ({width * height:,} pixels) exceeds the decompression-bomb limit of "
            f"{limit:,} pixels; if the photo is genuine, raise it with {MAX_PIXELS_ENV}=<pixels> (0: no limit)"
        )


def check_image(path: str | Path) -> tuple[int, int]:
    """Read an image's header only and return its ``(width, height)`` as stored.

    Catches at index time, for about 40 microseconds a file, what a full decode would find only
    mid-epoch: empty files, files that are not images, unknown formats, images over the pixel
    limit. A file cut short after its header is found when it is decoded.

    Raises:
        DataError: One line naming the file.
    """
    try:
        with _open(path) as img:
            width, height = img.size
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; check the path or the dataset root") from None
    except Exception as err:
        raise _failure(path, err, "read image") from None
    check_size(path, width, height)
    return width, height


def _failure(path: str | Path, err: BaseException, what: str) -> DataError:
    """The one-line error for a file PIL cannot open or decode (an empty file says so)."""
    try:
        empty = os.path.getsize(path) == 0
    except OSError:
        empty = False
    # PIL repeats the file name ("cannot identify image file '<path>'"); the message names it once.
    reason = "empty file, 0 bytes" if empty else first_line(err).replace(f" '{path}'", "")
    return DataError(f"{path}: cannot {what} ({reason}); replace or remove the file")


def _to_rgb(img: Image.Image, path: str | Path) -> np.ndarray:
    """Convert a decoded image of any mode to ``uint8 (H, W, 3)``."""
    if img.mode.startswith("I;16") or img.mode == "I":
        # PIL's RGB conversion clips wide integers at 255; keep the top 8 of 16 bits instead.
        wide = np.asarray(img).astype(np.int64)
        if wide.size and (wide.min() < 0 or wide.max() > 65535):
            raise DataError(
                f"{path}: {img.mode} pixels span [{wide.min()}, {wide.max()}], outside 16 bits; "
                "rescale the image to 8 or 16 bits"
            )
        gray = (wide >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise DataError(f"{path}: float image has {bad} NaN or infinite pixels; fix or remove the file")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low < 0 or high > 255:
            raise DataError(
                f"{path}: float pixels span [{low:g}, {high:g}], neither 0..1 nor 0..255; rescale the image"
            )
        scaled = values * 255 if high <= 1 else values
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_image(path: str | Path, min_size: int | None = None) -> torch.Tensor:
    """Decode an image file to an RGB ``uint8`` tensor of shape ``(3, H, W)``.

    PIL reads every common format (JPEG, PNG, TIFF, BMP, WebP). Palette, grayscale, RGBA
    (alpha dropped) and CMYK images are converted to RGB; 16-bit images keep their top 8 bits;
    32-bit float images (TIFF) are taken as 0..1 or 0..255 and must hold finite values. EXIF
    orientation is honoured, so a phone photo taken upright is upright here too. torchvision's
    decoders are deprecated from 0.29, so PIL is the one path.

    Args:
        path: Image file.
        min_size: For images that are resized to a smaller size anyway: a JPEG at least twice
            this size on both sides is decoded at 1/2, 1/4 or 1/8 scale, the smallest that keeps
            both sides >= ``min_size`` (libjpeg scales in the DCT domain, several times faster
            than a full decode; PIL's draft mode). Other formats and smaller JPEGs decode at full
            size. None always decodes at full size.

    Raises:
        DataError: One line naming the file, if it is missing, cannot be decoded (empty,
            truncated, not an image), is larger than :func:`max_image_pixels`, or holds NaN or
            infinite values.
    """
    try:
        with _open(path) as opened:
            check_size(path, *opened.size)
            if min_size is not None and opened.format == "JPEG":
                # Square request: the scale is the same whichever way EXIF turns the photo.
                opened.draft("RGB", (min_size, min_size))
            array = _to_rgb(ImageOps.exif_transpose(opened), path)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; check the path or the dataset root") from None
    except DataError:
        raise
    except Exception as err:
        raise _failure(path, err, "decode image") from None
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


class BadFiles:
    """Raise each bad file as a one-line :class:`DataError`, or count it under its kind (``on_error="skip"``).

    Also collects the non-image files a folder scan passed over (:attr:`ignored`), which are
    never an error: a class folder may hold notes or thumbnails.

    Args:
        on_error: ``raise`` or ``skip``.
        option: The option that chose ``on_error``, named if its value is wrong.
    """

    def __init__(self, on_error: OnError = "raise", option: str = "data.on_error") -> None:
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"{option} must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}
        self.ignored: list[Path] = []

    def report(self, kind: str, message: str) -> None:
        """Raise ``message``, or count it as one more file of ``kind``."""
        if self.on_error == "raise":
            raise DataError(message)
        self.counts[kind] += 1
        self.first.setdefault(kind, message)

    def check(self, path: Path, kind: str = "missing or unreadable images") -> bool:
        """Check an image header (:func:`check_image`); return False for a skipped bad file."""
        try:
            check_image(path)
        except DataError as err:
            self.report(kind, str(err))
            return False
        return True

    @property
    def total(self) -> int:
        """Files skipped so far."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """``"2 unreadable images; 1 ..."`` with the first message of the most frequent kind."""
        kinds = "; ".join(f"{count} {kind}" for kind, count in sorted(self.counts.items()))
        top = self.counts.most_common(1)[0][0]
        return f"{kinds}; e.g. {self.first[top]}"
