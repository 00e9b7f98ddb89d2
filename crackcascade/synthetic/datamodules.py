"""Data modules over built-in synthetic sets, written to their root on first use and then read as real data."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from crackcascade.data.datamodules import CrackMaskDataModule, PhiNetDataModule
from crackcascade.errors import DataError
from crackcascade.labels import TASK_NAMES
from crackcascade.synthetic.masks import write_crack_masks
from crackcascade.synthetic.writers import write_phinet


class SyntheticPhiNetDataModule(PhiNetDataModule):
    """:class:`PhiNetDataModule` over built-in synthetic scenes, written to ``root`` on first use.

    The scenes are procedural (see :mod:`crackcascade.synthetic`) and written in a real
    Phi-Net format, so the same readers load them; a fresh machine can train with no download.
    The folder is regenerated only when the generation settings change.

    Args:
        root: Folder to write the synthetic set to (created if needed).
        n_train: Training images per task.
        n_test: Test images per task.
        synthetic_size: Side of the generated images.
        synthetic_seed: Seed of the generator.
        write_format: On-disk format to write (``arrays``, ``folders`` or ``csv``).
        write_workers: Processes rendering the set (the files are identical for any number);
            None uses up to 4 CPU cores.
        **kwargs: Any :class:`PhiNetDataModule` argument.
    """

    def __init__(
        self,
        root: str = "data/synthetic",
        n_train: int = 300,
        n_test: int = 60,
        synthetic_size: int = 224,
        synthetic_seed: int = 0,
        write_format: Literal["arrays", "folders", "csv"] = "arrays",
        write_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("format", write_format)
        super().__init__(root=root, **kwargs)
        self.write_workers = write_workers
        self.spec: dict[str, Any] = {
            "format": write_format,
            "n_train": n_train,
            "n_test": n_test,
            "size": synthetic_size,
            "seed": synthetic_seed,
            "tasks": list(self._requested_tasks or TASK_NAMES),
        }

    def prepare_data(self) -> None:
        """Write the synthetic set unless ``root`` already holds one made with the same settings."""
        prepare_synthetic(self.root, self.spec, write_phinet, self.write_workers)


SYNTHETIC_MARKER = ".crackcascade-synthetic.json"
"""File in a synthetic set's root recording the settings it was written with."""


def prepare_synthetic(root: Path, spec: dict[str, Any], write: Callable[..., Path], workers: int | None) -> None:
    """Write a synthetic set to ``root`` unless it already holds one made with the same settings.

    Args:
        root: Folder of the set.
        spec: Keyword arguments of ``write`` that determine the files (recorded in a marker).
        write: The writer, e.g. :func:`~crackcascade.synthetic.writers.write_phinet`.
        workers: Processes for the writer (the files are identical for any number); None uses
            up to 4 CPU cores.

    Raises:
        DataError: If ``root`` holds files that are not a crackcascade synthetic set.
    """
    marker = root / SYNTHETIC_MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) == spec:
            return
        # Our own set made with other settings: replace it whole, so no stale folder or split of
        # the old set is read with the new one.
        shutil.rmtree(root)
    elif root.exists() and any(root.iterdir()):
        raise DataError(
            f"data.root '{root}' holds files that are not crackcascade synthetic data; "
            "choose an empty or new folder for the synthetic set"
        )
    write(root, workers=workers or min(4, os.cpu_count() or 1), **spec)
    marker.write_text(json.dumps(spec))


class SyntheticCrackMaskDataModule(CrackMaskDataModule):
    """:class:`CrackMaskDataModule` over built-in synthetic crack masks, written on first use.

    Scenes at each chosen scale with cracks of known width (about a third crack-free, with
    distractors), written as image/mask pairs or a COCO export under ``root/<scale>/train`` and
    ``root/<scale>/test``; regenerated only when the generation settings change.

    Args:
        root: Folder to write the synthetic set to (created if needed).
        n_train: Training images per scale.
        n_test: Test images per scale.
        synthetic_size: Side of the generated images.
        synthetic_seed: Seed of the generator.
        write_format: ``masks`` (image/mask pairs) or ``coco``.
        write_workers: Processes rendering the set; None uses up to 4 CPU cores.
        **kwargs: Any :class:`CrackMaskDataModule` argument.
    """

    def __init__(
        self,
        root: str = "data/synthetic_cracks",
        n_train: int = 40,
        n_test: int = 10,
        synthetic_size: int = 256,
        synthetic_seed: int = 0,
        write_format: Literal["masks", "coco"] = "masks",
        write_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("format", write_format)
        super().__init__(root=root, **kwargs)
        self.write_workers = write_workers
        self.spec: dict[str, Any] = {
            "format": write_format,
            "scales": list(self.scales),
            "classes": list(self.classes),
            "n_train": n_train,
            "n_test": n_test,
            "size": synthetic_size,
            "seed": synthetic_seed,
        }

    def prepare_data(self) -> None:
        """Write the synthetic masks unless ``root`` already holds a set made with the same settings."""
        prepare_synthetic(self.root, self.spec, write_crack_masks, self.write_workers)
