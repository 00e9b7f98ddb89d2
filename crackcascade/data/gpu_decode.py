"""JPEG decoding on the GPU (``data.decode_on: gpu``): workers read file bytes, the model's device decodes them.

A CPU DataLoader worker decodes and resizes a few hundred Phi-Net JPEGs per second, so a GPU that
trains at thousands of images per second would need more cores than the machine has. With
``decode_on="gpu"`` the image datasets (folders, CSV manifests) return each file's bytes instead
(:class:`ImageBytesDataset`); :func:`collate_encoded` keeps them apart in an
:class:`EncodedImages` batch, which Lightning's transfer to the device leaves on the host (it is
neither a tensor nor a collection), and after the transfer :class:`BatchDecoder` decodes the
whole batch with nvJPEG (``torchvision.io.decode_jpeg`` on the CUDA device), resizes it with the
CPU path's ``v2.Resize`` and flips and jitters it (:mod:`crackcascade.data.batch_augment`), on
the GPU.

Each sample's flip and jitter parameters are drawn in the worker, under the replayable
per-sample seed of :class:`~crackcascade.data.sampling.LoaderDataset` and exactly as the CPU
path's transform draws them, so a sample is augmented alike on both paths and a resumed run
replays. Files that are not JPEGs (PNG, TIFF...) and JPEGs with an EXIF turn (which nvJPEG
ignores) are decoded on the CPU in the worker as before and resized and augmented on the GPU with
the rest. Draft decoding (``data.jpeg_draft``) is a CPU decoder feature and does not apply: JPEGs
decode at full size.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2

from crackcascade.data.batch_augment import BatchAugment, apply_params
from crackcascade.data.io import read_image
from crackcascade.data.phinet.datasets import label_matrix
from crackcascade.data.transforms import classification_transform
from crackcascade.data.types import Sample
from crackcascade.errors import ConfigError, DataError, first_line

DecodeOn = Literal["cpu", "gpu"]

JPEG_MAGIC = b"\xff\xd8\xff"
"""First bytes of every JPEG file (SOI marker, then the next marker)."""

_ORIENTATION = 0x0112  # the EXIF orientation tag


def resolve_decode_on(decode_on: str) -> DecodeOn:
    """Check ``data.decode_on`` and return where decoding will run: ``gpu`` only where CUDA is available.

    Raises:
        ConfigError: If the value is neither ``cpu`` nor ``gpu``.
    """
    if decode_on not in ("cpu", "gpu"):
        raise ConfigError(f"data.decode_on must be 'cpu' or 'gpu', got {decode_on!r}")
    if decode_on == "gpu" and not torch.cuda.is_available():
        rank_zero_warn("data.decode_on gpu: CUDA is not available, so JPEGs are decoded on the CPU by the workers")
        return "cpu"
    return "gpu" if decode_on == "gpu" else "cpu"


def is_jpeg(data: torch.Tensor) -> bool:
    """Whether file bytes (a 1-D ``uint8`` tensor) start like a JPEG file."""
    return data.ndim == 1 and bytes(data[: len(JPEG_MAGIC)].tolist()) == JPEG_MAGIC


def exif_turned(path: Path) -> bool:
    """Whether a JPEG's EXIF orientation asks for a turn or a flip (reads the header only).

    nvJPEG ignores EXIF orientation (``decode_jpeg`` on CUDA does not apply it), so such photos
    are decoded on the CPU, upright as :func:`~crackcascade.data.io.read_image` makes them.
    """
    try:
        with Image.open(path) as image:
            return image.getexif().get(_ORIENTATION, 1) != 1
    except Exception:  # the decoder names the file if it cannot be read
        return False


class EncodedImage:
    """One sample's image as the worker leaves it: JPEG bytes, or decoded pixels for other formats.

    Attributes:
        data: 1-D ``uint8`` file bytes (JPEG) or a ``uint8`` ``(3, H, W)`` image (other formats).
        params: The sample's augmentation parameters (:meth:`BatchAugment.draw`), None for none.
    """

    __slots__ = ("data", "params")

    def __init__(self, data: torch.Tensor, params: torch.Tensor | None) -> None:
        self.data, self.params = data, params


class EncodedImages:
    """A batch's images before decoding, with the paths to name in errors.

    A plain object (no ``to`` method, not a collection), so Lightning's transfer to the device and
    the DataLoader's pinning pass it through unchanged: nvJPEG reads the bytes from host memory.
    """

    __slots__ = ("images", "paths")

    def __init__(self, images: list[EncodedImage], paths: list[str]) -> None:
        self.images, self.paths = images, paths

    def __len__(self) -> int:
        return len(self.images)


class ImageBytesDataset(Dataset[Sample]):
    """:class:`~crackcascade.data.phinet.ImageFileDataset`'s samples with the image left encoded.

    ``image`` is an :class:`EncodedImage`: the file's bytes for a JPEG, the decoded image for any
    other format and for JPEGs with an EXIF turn (read as :func:`~crackcascade.data.io.read_image`
    does), with the augmentation parameters of the transform's random steps drawn here, under the
    sample's seed as the CPU path draws them.

    Args:
        paths: Image files.
        labels: ``(N, len(TASK_NAMES))`` label matrix, ``-1`` where unknown; None for unlabelled.
        transform: The CPU path's :func:`~crackcascade.data.transforms.classification_transform`;
            its resize is done by :class:`BatchDecoder`, its random steps by :class:`BatchAugment`.
    """

    def __init__(self, paths: Sequence[Path], labels: np.ndarray | None = None, transform: Any = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = label_matrix(len(self.paths), labels)
        steps = split_resize(transform)[1] if transform is not None else []
        self.augment = BatchAugment(steps) if steps else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        path = self.paths[index]
        try:
            data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
        except OSError as err:
            reason = first_line(err)
            raise DataError(f"{path}: cannot read image ({reason}); check the path or the dataset root") from None
        if not is_jpeg(data) or exif_turned(path):
            data = read_image(path)
        params = self.augment.draw() if self.augment is not None else None
        return {"image": EncodedImage(data, params), "labels": self.labels[index].clone(), "path": str(path)}


def collate_encoded(samples: list[Sample]) -> dict[str, Any]:
    """Collate :class:`ImageBytesDataset` samples: images into :class:`EncodedImages`, the rest as torch does."""
    if not samples or not isinstance(samples[0]["image"], EncodedImage):
        return default_collate(samples)  # an arrays task: already decoded
    batch = default_collate([{k: v for k, v in s.items() if k != "image"} for s in samples])
    batch["image"] = EncodedImages([s["image"] for s in samples], list(batch["path"]))
    return batch


class BatchDecoder:
    """Decode :class:`EncodedImages` batches on a device, then resize and augment them there.

    Images of one shape are resized together (the CPU path's ``v2.Resize``), then the batch is
    flipped and jittered by each sample's parameters (:func:`apply_params`).

    Args:
        image_size: Side of the square images fed to the model.
    """

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size
        self.resize = split_resize(classification_transform(image_size, train=False))[0]

    def __call__(self, batch: Any, device: torch.device | None = None) -> Any:
        """Decode every :class:`EncodedImages` in a batch (a task's batch or a ``{task: batch}`` dict).

        Args:
            batch: The batch after the transfer to the device.
            device: Where to decode; None: where the batch's labels are.
        """
        if not isinstance(batch, dict):
            return batch
        if "image" not in batch:  # {task: batch} from a CombinedLoader, or only skipped samples
            return {key: self(value, device) for key, value in batch.items()}
        images = batch["image"]
        if not isinstance(images, EncodedImages):  # decoded already (arrays, photos to predict)
            return batch
        target = device if device is not None else batch["labels"].device
        return {**batch, "image": self.decode(images, target)}

    def decode(self, encoded: EncodedImages, device: torch.device) -> torch.Tensor:
        """A ``uint8`` ``(B, 3, S, S)`` batch on ``device`` from the encoded images."""
        decoded = _decode_all(encoded, device)
        out: list[torch.Tensor] = [torch.empty(0)] * len(decoded)
        for shape in {tuple(image.shape) for image in decoded}:
            members = [i for i, image in enumerate(decoded) if tuple(image.shape) == shape]
            resized = self.resize(torch.stack([decoded[i] for i in members]))
            for i, image in zip(members, resized, strict=True):
                out[i] = image
        batch = torch.stack(out)
        params = [item.params for item in encoded.images]
        if all(p is not None for p in params):
            batch = apply_params(batch, torch.stack(params))  # type: ignore[arg-type]
        return batch


def split_resize(transform: Any) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
    """The resize that starts a classification transform, and the steps after it."""
    steps = list(transform.transforms)
    if not steps or not isinstance(steps[0], v2.Resize):
        raise TypeError("classification_transform must start with v2.Resize for GPU decoding")
    return steps[0], steps[1:]


def _decode_all(encoded: EncodedImages, device: torch.device) -> list[torch.Tensor]:
    """Every image of the batch decoded on ``device``: JPEGs in one nvJPEG call, the others moved there."""
    jpegs = [i for i, item in enumerate(encoded.images) if item.data.ndim == 1]
    out = [item.data.to(device, non_blocking=True) if item.data.ndim == 3 else item.data for item in encoded.images]
    if jpegs:
        data = [encoded.images[i].data for i in jpegs]
        try:
            decoded = _decode_jpeg(data, device)
        except RuntimeError:
            # One at a time: a JPEG nvJPEG refuses (e.g. CMYK) is decoded on the CPU and moved; one
            # no decoder reads is named (the batch call names none).
            decoded = [_decode_one(encoded.images[i].data, encoded.paths[i], device) for i in jpegs]
        for i, image in zip(jpegs, decoded, strict=True):
            out[i] = image
    return out


def _decode_one(data: torch.Tensor, path: str, device: torch.device) -> torch.Tensor:
    try:
        return _decode_jpeg([data], device)[0]
    except RuntimeError:
        pass
    try:
        return _decode_jpeg([data], torch.device("cpu"))[0].to(device)
    except RuntimeError as err:
        raise DataError(
            f"{path}: cannot decode JPEG ({first_line(err)}); replace the file or set data.decode_on cpu"
        ) from None


def _decode_jpeg(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    # torchvision 0.29 deprecates its decoders (TorchCodec supersedes them); this is still its batched nvJPEG call.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The image decoding and encoding capabilities", DeprecationWarning)
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True))
