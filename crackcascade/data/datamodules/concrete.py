"""The concrete-crack data module (Özgenel 2018), labelled for the Phi-Net classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from torch.utils.data import DataLoader, Dataset

from crackcascade.data.concrete import ConcreteCrackDataset, class_folder, read_concrete_crack
from crackcascade.data.datamodules.base import (
    LoaderDataModule,
    carve_splits,
    check_batch_options,
    check_fractions,
    eval_sampler,
    predict_photos,
    warn_bad_files,
)
from crackcascade.data.io import BadFiles
from crackcascade.data.phinet import ImageFileDataset
from crackcascade.data.transforms import classification_transform
from crackcascade.data.types import Sample
from crackcascade.errors import ConfigError, DataError
from crackcascade.labels import get_task


class ConcreteCrackDataModule(LoaderDataModule):
    """The concrete-crack set of Özgenel (2018): ``root/Positive/*`` (crack) and ``root/Negative/*`` (none).

    Images (227 x 227 in the original) are resized to ``image_size`` and labelled in the Phi-Net
    format for the ``damage_state`` task (Positive is damaged, Negative undamaged; every other task
    unlabelled), so :class:`~crackcascade.models.multitask.MultiTaskClassifier` fine-tunes on them
    unchanged. Each sample also carries ``"crack"`` (1 or 0): a classifier with a ``damage_type``
    head then also logs whether that head finds the cracks (the paper's cross-dataset Table 2),
    which is how a Phi-Net-trained checkpoint is evaluated on this set.

    The set has no splits of its own: test and validation are carved per class (stratified, so
    each split keeps the class balance), seeded, test first, so a change of ``val_fraction`` leaves
    the test images unchanged. Folder names match case-insensitively.

    Args:
        root: Folder holding ``Positive/`` and ``Negative/``.
        image_size: Side of the square images fed to the model (224 in the paper).
        batch_size: Training images per step.
        eval_batch_size: Batch size for validation, test and predict; defaults to ``batch_size``.
        val_fraction: Fraction of each class held out for validation (0: no validation).
        test_fraction: Fraction of each class held out for test (0: no test split).
        seed: Seed of the splits.
        augment: Apply training augmentation (flips and colour jitter).
        predict_root: Folder of photos for ``predict`` (searched recursively).
        jpeg_draft: Decode JPEGs at least twice ``image_size`` at 1/2, 1/4 or 1/8 scale (no
            smaller than ``image_size``; libjpeg's DCT-domain scaling, several times faster than a
            full decode). The pixels then differ a little from a full decode resized (benchmarks/README.md's
            input-pipeline table measures how much); False always decodes at full size.
        test_on: ``split`` (the carved test split) or ``all``: ``test`` scores every image of both
            folders, as the paper classified all 40,000 images with a classifier trained on
            Phi-Net (its Table 2). ``all`` is for models trained elsewhere: ``fit`` refuses it.
        **loader_options: ``num_workers`` (per loader), ``pin_memory``, ``prefetch_factor`` and
            ``on_error`` of :class:`LoaderDataModule`.
    """

    def __init__(
        self,
        root: str = "data/concrete_crack",
        image_size: int = 224,
        batch_size: int = 40,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        augment: bool = True,
        predict_root: str | None = None,
        jpeg_draft: bool = True,
        test_on: Literal["split", "all"] = "split",
        **loader_options: Any,
    ) -> None:
        super().__init__(**loader_options)
        check_batch_options(image_size, batch_size=batch_size, eval_batch_size=eval_batch_size or 1)
        check_fractions(val_fraction=val_fraction, test_fraction=test_fraction)
        self.save_hyperparameters()
        self.root = Path(root)
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.augment = augment
        self.predict_root = predict_root
        if test_on not in ("split", "all"):
            raise ConfigError(f"data.test_on must be 'split' or 'all', got {test_on!r}")
        self.test_on = test_on
        # Side below which no JPEG is decoded, when draft decoding is on (the transform resizes to it).
        self.decode_size: int | None = image_size if jpeg_draft else None
        self._splits: dict[str, tuple[list[Path], list[bool]]] | None = None
        self.datasets: dict[str, Dataset[Sample]] = {}

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks this data provides labels for: the damage state only."""
        return (get_task("damage_state").name,)

    def class_folder(self, name: str) -> Path:
        """The class folder ``root/<name>``, matched case-insensitively, holding at least one image."""
        return class_folder(self.root, name)

    def splits(self) -> dict[str, tuple[list[Path], list[bool]]]:
        """Read (once) both class folders and split them; split -> (paths, crack flags)."""
        if self._splits is None:
            splits: dict[str, tuple[list[Path], list[bool]]] = {s: ([], []) for s in ("train", "val", "test")}
            bad = BadFiles(self.on_error)
            for stream, (paths, crack) in enumerate(read_concrete_crack(self.root, bad)):
                carved = carve_splits(paths, {"test": self.test_fraction, "val": self.val_fraction}, self.seed, stream)
                for split, (chosen, cracks) in splits.items():
                    taken = carved.get(split, [])
                    chosen.extend(taken)
                    cracks.extend([crack] * len(taken))
            warn_bad_files(self.root, bad)
            self._splits = splits
        return self._splits

    def setup(self, stage: str) -> None:
        """Build the datasets a stage needs (``fit``, ``validate``, ``test`` or ``predict``)."""
        if stage == "predict":
            paths = predict_photos(self.predict_root)
            self.datasets["predict"] = ImageFileDataset(
                paths, transform=self._transform(train=False), min_size=self.decode_size
            )
            return
        if self.test_on == "all":
            if stage == "fit":
                raise ConfigError(
                    "data.test_on all tests on every image, training images included: use it with "
                    "`crackcascade test` on a model trained elsewhere, or set data.test_on split to fit"
                )
            if stage == "test":
                bad = BadFiles(self.on_error)
                pairs = [(p, crack) for paths, crack in read_concrete_crack(self.root, bad) for p in paths]
                warn_bad_files(self.root, bad)
                paths, cracks = [p for p, _ in pairs], [c for _, c in pairs]
                self.datasets["test"] = ConcreteCrackDataset(paths, cracks, self._transform(False), self.decode_size)
                return
        splits = self.splits()
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}[stage]
        for split in needed:
            paths, cracks = splits[split]
            if split == "val" and stage == "fit" and self.val_fraction == 0:
                self.datasets.pop("val", None)  # no validation asked for: train only
                continue
            if not paths:
                # Carving always leaves training images, so only a held-out split can be empty here.
                hint = f"set data.{split}_fraction > 0 (each class needs 2+ images)"
                raise DataError(f"data.root '{self.root}': no {split} images; {hint}")
            transform = self._transform(train=split == "train")
            self.datasets[split] = ConcreteCrackDataset(paths, cracks, transform, self.decode_size)

    def _transform(self, train: bool) -> Any:
        return classification_transform(self.image_size, train=train, augment=self.augment)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        sampler = eval_sampler(self, dataset, f"{split} split") if split in ("val", "test") else None
        return self.loader(dataset, batch_size, shuffle, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training images of both classes."""
        return self._loader("train", self.batch_size, True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Validation images; empty (no validation) when ``val_fraction`` is 0."""
        return self._loader("val", self.eval_batch_size, False) if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        """Test images of both classes."""
        return self._loader("test", self.eval_batch_size, False)

    def predict_dataloader(self) -> DataLoader:
        """Photos under ``predict_root``, unlabelled."""
        return self._loader("predict", self.eval_batch_size, False)
