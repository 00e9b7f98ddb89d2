"""JPEG decoding on the GPU (``data.decode_on: gpu``): workers read file bytes, the model's device decodes them.

A CPU DataLoader worker decodes and resizes a few hundred Phi-Net JPEGs per second, so a GPU that
trains at thousands of images per second would need more cores than the machine has. With
``decode_on="gpu"`` the image datasets (folders, CSV manifests) return each file's bytes instead
(:class:`ImageBytesDataset`); :class:`EncodedCollate` keeps them apart in an
:class:`EncodedImages` batch, which Lightning's transfer to the device leaves on the host (it is
neither a tensor nor a collection), and after the transfer :class:`BatchDecoder` decodes the
whole batch with nvJPEG (``torchvision.io.decode_jpeg`` on the CUDA device), resizes it and
augments each image with the same torchvision v2 transforms as the CPU path
(:func:`~crackcascade.data.transforms.classification_transform`), on the GPU.

Files that are not JPEGs (PNG, TIFF...) are decoded on the CPU in the worker as before and
resized on the GPU with the rest. Each sample carries a seed drawn in the worker, under the
replayable per-sample seed of :class:`~crackcascade.data.sampling.LoaderDataset`, and its
augmentation runs under it: a resumed run replays the same flips and jitter. Draft decoding
(``data.jpeg_draft``) is a CPU decoder feature and does not apply; JPEGs decode at full size.
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

from crackcascade.data.datasets import Sample
from crackcascade.data.io import read_image
from crackcascade.data.transforms import classification_transform
from crackcascade.errors import ConfigError, DataError, first_line
from crackcascade.labels import IGNORE_INDEX, TASK_NAMES

DecodeOn = Literal["cpu", "gpu"]

JPEG_MAGIC = b"\xff\xd8\xff"
"""First bytes of every JPEG file (SOI marker, then the next marker)."""

_SEED_RANGE = 1 << 62
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
        seed: Seed of this sample's augmentation.
    """

    __slots__ = ("data", "seed")

    def __init__(self, data: torch.Tensor, seed: int) -> None:
        self.data, self.seed = data, seed


class EncodedImages:
    """A batch's images before decoding, with the paths to name in errors and whether to augment.

    A plain object (no ``to`` method, not a collection), so Lightning's transfer to the device and
    the DataLoader's pinning pass it through unchanged: nvJPEG reads the bytes from host memory.
    """

    __slots__ = ("images", "paths", "train")

    def __init__(self, images: list[EncodedImage], paths: list[str], train: bool) -> None:
        self.images, self.paths, self.train = images, paths, train

    def __len__(self) -> int:
        return len(self.images)


class ImageBytesDataset(Dataset[Sample]):
    """:class:`~crackcascade.data.datasets.ImageFileDataset`'s samples with the image left encoded.

    ``image`` is an :class:`EncodedImage`: the file's bytes for a JPEG, the decoded image for any
    other format and for JPEGs with an EXIF turn (read as :func:`~crackcascade.data.io.read_image` does).

    Args:
        paths: Image files.
        labels: ``(N, len(TASK_NAMES))`` label matrix, ``-1`` where unknown; None for unlabelled.
    """

    def __init__(self, paths: Sequence[Path], labels: np.ndarray | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        if labels is None:
            labels = np.full((len(self.paths), len(TASK_NAMES)), IGNORE_INDEX, dtype=np.int64)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        if self.labels.shape != (len(self.paths), len(TASK_NAMES)):
            raise ValueError(f"labels must have shape ({len(self.paths)}, {len(TASK_NAMES)})")

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
        # Drawn under LoaderDataset's per-sample seed when there is one, so augmentation replays.
        seed = int(torch.randint(0, _SEED_RANGE, ()))
        return {"image": EncodedImage(data, seed), "labels": self.labels[index].clone(), "path": str(path)}


class EncodedCollate:
    """Collate :class:`ImageBytesDataset` samples: images into :class:`EncodedImages`, the rest as torch does.

    Args:
        train: Whether the loader is a training loader (its images are augmented after decoding).
    """

    def __init__(self, train: bool) -> None:
        self.train = train

    def __call__(self, samples: list[Sample]) -> dict[str, Any]:
        """Return the batch with ``image`` an :class:`EncodedImages`."""
        if not samples or not isinstance(samples[0]["image"], EncodedImage):
            return default_collate(samples)  # an arrays task: already decoded
        images = [s["image"] for s in samples]
        batch = default_collate([{k: v for k, v in s.items() if k != "image"} for s in samples])
        batch["image"] = EncodedImages(images, list(batch["path"]), self.train)
        return batch


class BatchDecoder:
    """Decode :class:`EncodedImages` batches on a device, then resize and augment them there.

    The CPU path's transform is split at its resize: images of one shape are resized together,
    then each image gets the random steps (flip, colour jitter) under its own seed, so the same
    sample draws the same random parameters on any device.

    Args:
        image_size: Side of the square images fed to the model.
        augment: Augment training batches (``data.augment``).
    """

    def __init__(self, image_size: int, augment: bool = True) -> None:
        self.image_size = image_size
        self.resize, self.train_steps = _split_resize(classification_transform(image_size, train=True, augment=augment))
        _, self.eval_steps = _split_resize(classification_transform(image_size, train=False))

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
        steps = self.train_steps if encoded.train else self.eval_steps
        if steps is not None:
            for i, item in enumerate(encoded.images):
                # The transforms draw from torch's CPU generator: fork it so that only this image sees the seed.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(item.seed)
                    out[i] = steps(out[i])
        return torch.stack(out)


def _split_resize(transform: Any) -> tuple[torch.nn.Module, v2.Compose | None]:
    """The resize that starts a classification transform, and the steps after it (None if none)."""
    steps = list(transform.transforms)
    if not steps or not isinstance(steps[0], v2.Resize):
        raise TypeError("classification_transform must start with v2.Resize for GPU decoding")
    return steps[0], v2.Compose(steps[1:]) if steps[1:] else None


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


__all__ = [
    "BatchDecoder",
    "DecodeOn",
    "EncodedCollate",
    "EncodedImage",
    "EncodedImages",
    "ImageBytesDataset",
    "exif_turned",
    "is_jpeg",
    "resolve_decode_on",
]
