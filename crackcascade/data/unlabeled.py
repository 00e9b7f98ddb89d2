"""Unlabeled photos for self-supervised pretraining: any folder of images, two augmented views per photo.

The views are lightly's BYOL views (:class:`lightly.transforms.BYOLTransform`: random resized
crop, flips, 90-degree turns, colour jitter, grey scale, blur, solarization), taken from

* ``views="crop"`` (default): a random ``image_size`` square of the photo at native resolution.
  A crack 1-3 px wide stays 1-3 px wide; the view crops zoom in (up to ``1 / sqrt(min_scale)``)
  but never shrink the photo;
* ``views="resize"``: the whole photo, as lightly and ImageNet pretraining do. A 4000 px photo
  becomes 224 px, 18 times smaller, and hairline cracks vanish before the network sees them.

``benchmarks/pretraining.py`` measures the two. Blur is milder than lightly's default (sigma up
to 1 px instead of 2) for the same reason: a view blurred by 2 px has lost a hairline crack, and
learning to ignore what blur removes would teach the backbone to ignore cracks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from crackcascade.data.datamodules.base import LoaderDataModule, check_batch_options, warn_bad_files
from crackcascade.data.io import BadFiles, escape_message, read_image, scan_images
from crackcascade.errors import ConfigError, DataError

ViewSource = Literal["crop", "resize"]
BLUR_SIGMAS: tuple[float, float] = (0.1, 1.0)
"""Gaussian blur range of the views (lightly's default reaches 2 px, enough to erase a hairline crack)."""


def byol_views(image_size: int, min_scale: float) -> BYOLTransform:
    """The two asymmetric BYOL views of a PIL image, as normalized ``(3, image_size, image_size)`` floats.

    Cracks have no up or down, so vertical flips and 90-degree turns are added to lightly's defaults.
    """
    options: dict[str, Any] = {
        "input_size": image_size,
        "min_scale": min_scale,
        "vf_prob": 0.5,
        "rr_prob": 0.5,
        "sigmas": BLUR_SIGMAS,
    }
    return BYOLTransform(BYOLView1Transform(**options), BYOLView2Transform(**options))


@contextlib.contextmanager
def numpy_seeded_from_torch() -> Iterator[None]:
    """Seed numpy's global RNG from torch's for the duration, then restore it.

    lightly's blur, solarization and turns draw from numpy, torchvision's crops and flips from
    torch; crackcascade's loaders seed torch per sample (:mod:`crackcascade.data.sampling`), so
    this makes every random choice of a view a function of that seed, replayed on resume.
    """
    state = np.random.get_state()
    np.random.seed(int(torch.randint(0, 2**32 - 1, ())))
    try:
        yield
    finally:
        np.random.set_state(state)


def native_crop(image: Tensor, size: int) -> Tensor:
    """A random ``size`` x ``size`` window of a ``(3, H, W)`` image (the whole side where it is shorter)."""
    height, width = image.shape[-2:]
    top = int(torch.randint(0, max(height - size, 0) + 1, ()))
    left = int(torch.randint(0, max(width - size, 0) + 1, ()))
    return image[:, top : top + size, left : left + size]


class UnlabeledPhotoDataset(Dataset[dict[str, Any]]):
    """Photos as ``{"image": (2, 3, S, S) float views, "path": str}`` samples.

    Args:
        paths: Image files.
        image_size: Side ``S`` of the views (and of the native crop with ``views="crop"``).
        views: ``crop`` (native resolution) or ``resize`` (the whole photo), see the module docstring.
        min_scale: Smallest area of a view, as a fraction of what it is cropped from.
    """

    def __init__(self, paths: list[Path], image_size: int, views: ViewSource = "crop", min_scale: float = 0.25):
        self.paths = paths
        self.image_size = image_size
        self.views = views
        self.transform = byol_views(image_size, min_scale)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        if self.views == "crop":
            image = native_crop(read_image(path), self.image_size)
        else:
            # A JPEG many times the view size decodes at 1/2-1/8 scale (it is shrunk anyway).
            image = read_image(path, min_size=self.image_size)
        photo = Image.fromarray(image.permute(1, 2, 0).numpy())
        with numpy_seeded_from_torch():
            views = cast(list[Tensor], self.transform(photo))
        return {"image": torch.stack(views), "path": str(path)}


class UnlabeledPhotoDataModule(LoaderDataModule):
    """Every image under a folder, recursively, without labels: the data of :class:`~crackcascade.SSLPretrainer`.

    Hidden files are skipped; other non-image files are ignored with one warning. Each header
    is checked once at setup (about 40 microseconds a file): a bad file fails with one line, or
    with ``on_error: skip`` is left out and counted in one warning; a file that only fails to
    decode mid-epoch is skipped from its batch and reported at the end of the epoch.

    Args:
        root: Folder of photos (searched recursively).
        image_size: Side of the square views.
        views: ``crop``: random windows at native resolution; ``resize``: the whole photo.
        min_scale: Smallest view area as a fraction of its source (lightly's random resized crop).
        batch_size: Photos per batch (two views each); SSL needs at least 2.
        loader_options: ``num_workers``, ``pin_memory``, ``prefetch_factor`` and ``on_error``
            (``raise`` on a bad image file, or ``skip`` it), as every crackcascade data module
            (:class:`~crackcascade.data.datamodules.base.LoaderDataModule`).
    """

    def __init__(
        self,
        root: str = "data/photos",
        image_size: int = 224,
        views: ViewSource = "crop",
        min_scale: float = 0.25,
        batch_size: int = 32,
        **loader_options: Any,
    ) -> None:
        super().__init__(**loader_options)
        check_batch_options(image_size, batch_size=batch_size)
        self.save_hyperparameters()
        if batch_size < 2:
            raise ConfigError(f"data.batch_size must be >= 2 for self-supervised pretraining, got {batch_size}")
        if views not in ("crop", "resize"):
            raise ConfigError(f"data.views must be crop or resize, got {views!r}")
        if not 0.0 < min_scale <= 1.0:
            raise ConfigError(f"data.min_scale must be in (0, 1], got {min_scale}")
        self.root = root
        self.image_size = image_size
        self.views: ViewSource = views
        self.min_scale = min_scale
        self.batch_size = batch_size
        self.dataset: UnlabeledPhotoDataset | None = None

    @property
    def num_images(self) -> int | None:
        """Photos used (after setup; bad ones skipped), or None before."""
        return len(self.dataset) if self.dataset is not None else None

    def photos(self) -> list[Path]:
        """The usable photos under ``root``: checked headers, bad files raised or skipped (``on_error``).

        Raises:
            DataError: One line naming the folder if it is missing or holds no image, or (``on_error:
                raise``) naming the first bad file.
        """
        root = Path(self.root)
        if not root.is_dir():
            raise DataError(
                f"data.root '{root}' does not exist or is not a folder; pass --data.root <folder of photos>"
            )
        scan = scan_images(root, root)
        bad = BadFiles(self.on_error)
        bad.ignored = scan.others
        for path, target in scan.escaping:
            bad.report("links out of the root", escape_message(path, target, root))
        paths = [path for path in scan.images if bad.check(path)]
        warn_bad_files(root, bad)
        if not paths:
            raise DataError(f"data.root '{root}': no readable images found (jpg, png, tif, bmp, webp), recursively")
        return paths

    def setup(self, stage: str) -> None:
        """Scan the folder once (training only: there is nothing to validate or test)."""
        if stage != "fit":
            raise ConfigError(f"UnlabeledPhotoDataModule has no labels to {stage}; use it with fit only")
        if self.dataset is None:
            self.dataset = UnlabeledPhotoDataset(self.photos(), self.image_size, self.views, self.min_scale)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of view pairs; the last incomplete batch is kept."""
        assert self.dataset is not None, "setup('fit') first"
        return self.loader(self.dataset, self.batch_size, shuffle=True)
