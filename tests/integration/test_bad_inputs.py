"""Bad inputs, one case each: a one-line error naming the file, or (on_error=skip) a counted skip; never a wrong label.

Every case builds a small clean dataset of one kind, spoils it in one way and loads it through the
public data module of that kind, reading every sample of every loader, once with
``on_error="raise"`` and once with ``on_error="skip"``:

* ``Fails``: ``raise`` gives a :class:`DataError` of one line that names the bad file; ``skip``
  loads the others and reports the bad one, at set-up or in the batches (end-of-epoch report),
  unless the problem is a label, an array or a manifest, which raises in both modes;
* ``Loads``: the file is read correctly (values checked: pixels, labels, or every mask pixel) or
  left out on purpose (not an image, hidden), with the warning that says so where there is one.
  Currently valid formats next to a refused one (0/1 masks, Phi-Net palette masks, a lossless
  WebP) are ``Loads`` cases, so a check that refuses too much fails too.

COCO segmentations that pycocotools hangs on or crashes the process with (``guard`` cases) are
first read in one child process with a time limit, so that a regression fails those cases
instead of stalling the run. :data:`REQUIRED` names the kinds of bad input that must have a case,
and of which outcome; each runs as ``test_bad_input[<kind>]``, and a missing one is a failing
test of that name. The properties at the end check the readers and the RLE decoder on generated
inputs.

docs/reliability.md describes these cases by kind, without counting them.
"""

from __future__ import annotations

import copy
import csv
import json
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils

from crackcascade.data.cracks import load_mask, read_coco
from crackcascade.data.datamodules import ConcreteCrackDataModule, CrackMaskDataModule, PhiNetDataModule
from crackcascade.data.maskcheck import check_segmentation, rle_string_counts
from crackcascade.data.phinet import read_manifest
from crackcascade.errors import DataError
from crackcascade.labels import IGNORE_INDEX, TASK_NAMES, get_task, task_index

SIDE = 16
SPALLING = get_task("spalling")


# ---------------------------------------------------------------------------------------------
# Clean datasets of each kind (16x16 images, every pixel of image i has value 10 * i + 5)
# ---------------------------------------------------------------------------------------------


def _image(path: Path, value: int, size: tuple[int, int] = (SIDE, SIDE)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


def folders(root: Path) -> None:
    """Phi-Net image folders: spalling/train/<class>/ with 3 images per class."""
    for c, name in enumerate(SPALLING.classes):
        for i in range(3):
            _image(root / "spalling" / "train" / name / f"{c}{i}.png", 10 * (3 * c + i) + 5)


def manifest(root: Path) -> None:
    """A CSV manifest of 4 images with scene and spalling labels."""
    lines = ["path,scene,spalling"]
    for i in range(4):
        _image(root / "images" / f"{i}.png", 10 * i + 5)
        lines.append(f"images/{i}.png,{['pixel', 'object'][i % 2]},{i % 2}")
    (root / "train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


BASES: dict[str, Callable[[Path], None]] = {}


def arrays(root: Path) -> None:
    """PHI arrays of the spalling task: 6 images of 16x16 and integer labels."""
    (root / "spalling").mkdir(parents=True)
    np.save(root / "spalling" / "X_train.npy", np.zeros((6, SIDE, SIDE, 3), dtype=np.uint8))
    np.save(root / "spalling" / "y_train.npy", np.array([0, 1, 0, 1, 0, 1]))


def concrete(root: Path) -> None:
    """Özgenel concrete cracks: Positive/ and Negative/ with 3 images each."""
    for c, name in enumerate(("Positive", "Negative")):
        for i in range(3):
            _image(root / name / f"{name[0]}{i}.jpg", 10 * (3 * c + i) + 5)


def pairs(root: Path) -> None:
    """Crack image/mask pairs: 3 images with a crack in the top row."""
    for i in range(3):
        _image(root / "images" / f"{i}.png", 10 * i + 5)
        mask = np.zeros((SIDE, SIDE), dtype=np.uint8)
        mask[0] = 255
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")


COCO_BASE: dict[str, Any] = {
    "images": [{"id": i, "file_name": f"{i}.png", "height": SIDE, "width": SIDE} for i in (1, 2, 3)],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 9, 1, 9, 5, 1, 5]]},
        {"id": 2, "image_id": 2, "category_id": 1, "segmentation": {"size": [SIDE, SIDE], "counts": [20, 4, 232]}},
        {"id": 3, "image_id": 3, "category_id": 1, "segmentation": [[2, 2, 6, 2, 6, 6]]},
    ],
    "categories": [{"id": 1, "name": "crack"}],
}


def coco(root: Path) -> None:
    """A COCO export of 3 images (polygon, RLE, polygon)."""
    for i in (1, 2, 3):
        _image(root / "images" / f"{i}.png", 10 * i + 5)
    (root / "annotations.json").write_text(json.dumps(COCO_BASE))


def _coco_edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        data = copy.deepcopy(COCO_BASE)
        change(data)
        (root / "annotations.json").write_text(json.dumps(data))
        return root / "annotations.json"

    return make


def photos(root: Path) -> None:
    """Photos to predict: 3 images in a folder."""
    for i in range(3):
        _image(root / f"photo{i}.jpg", 10 * i + 5)


BASES.update(folders=folders, csv=manifest, arrays=arrays, concrete=concrete, pairs=pairs, coco=coco, predict=photos)


# ---------------------------------------------------------------------------------------------
# Loading every sample the way training and prediction do
# ---------------------------------------------------------------------------------------------


@dataclass
class Loaded:
    """What loading a dataset gave: every sample, how many were reported skipped, the warnings."""

    samples: list[dict[str, Any]]
    skipped: int
    messages: list[str]
    warnings: list[str]


def _batches(loader: Any) -> list[dict[str, Any]]:
    return list(loader)


def load(kind: str, root: Path, on_error: str) -> Loaded:
    """Set up the data module of ``kind`` on ``root`` and read all its loaders."""
    common = {"num_workers": 0, "on_error": on_error}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if kind == "predict":
            dm: Any = PhiNetDataModule(root=str(root / "unused"), predict_root=str(root), image_size=SIDE, **common)
            dm.setup("predict")
            loaders = [dm.predict_dataloader()]
        elif kind in ("folders", "csv", "arrays"):
            dm = PhiNetDataModule(root=str(root), image_size=SIDE, val_fraction=0, augment=False, **common)
            dm.setup("fit")
            loaders = [dm.train_dataloader()]
        elif kind == "concrete":
            dm = ConcreteCrackDataModule(
                root=str(root), image_size=SIDE, val_fraction=0, test_fraction=0, augment=False, **common
            )
            dm.setup("fit")
            loaders = [dm.train_dataloader()]
        else:
            dm = CrackMaskDataModule(root=str(root), image_size=SIDE, val_fraction=0, augment=False, **common)
            dm.setup("fit")
            loaders = [dm.train_dataloader()]
        batches = [batch for loader in loaders for batch in _batches(loader)]
    samples: list[dict[str, Any]] = []
    messages: list[str] = []
    for item in batches:
        batch = item[0] if isinstance(item, tuple) else item  # CombinedLoader yields (batch, idx, loader idx)
        parts = batch.values() if "image" not in batch and "skipped" not in batch else [batch]
        for part in parts:
            if part is None:
                continue
            messages += part.get("skipped", [])
            for i in range(len(part.get("image", []))):
                samples.append({k: v[i] for k, v in part.items() if k != "skipped"})
    texts = [str(w.message) for w in caught]
    at_setup = sum(int(m.group(1)) for t in texts for m in [re.search(r"skipped (\d+) bad (images|entries)", t)] if m)
    return Loaded(samples, at_setup + len(messages), messages, texts)


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fails:
    """A one-line DataError naming the file; with ``skippable``, on_error=skip reports ``skips`` problems and
    loads all but ``lost`` samples."""

    text: str
    skippable: bool = True
    skips: int = 1
    lost: int = 1


@dataclass(frozen=True)
class Loads:
    """Loads; ``check`` holds for the samples, and ``warning`` (if any) is among the warnings."""

    count: int
    check: Callable[[list[dict[str, Any]]], bool] | None = None
    warning: str | None = None


@dataclass(frozen=True)
class Case:
    """A bad input: its data kind, how to spoil a clean dataset (returns the file to name), the outcome.

    ``guard`` (COCO only): read the spoilt file in a subprocess first, since without the check that
    refuses it pycocotools hangs or crashes the process on it, where a test would stall CI.
    """

    name: str
    kind: str
    make: Callable[[Path], Path]
    expect: Fails | Loads
    env: dict[str, str] = field(default_factory=dict)
    guard: bool = False


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _noisy(path: Path, suffix: str, side: int = 64) -> Path:
    """Replace ``path`` by a noisy image (large enough that half a JPEG still holds its whole header)."""
    rng = np.random.default_rng(0)
    target = path.with_suffix(suffix)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(target)
    if target != path:
        path.unlink()
    return target


def _replace(path: Path, image: Image.Image, **save: Any) -> Path:
    image.save(path, **save)
    return path


def _float_tiff(root: Path, bad: float) -> Path:
    values = np.full((SIDE, SIDE), 0.5, dtype=np.float32)
    values[3, 4] = bad
    target = root / "spalling" / "train" / "spalling" / "10.tif"
    (root / "spalling" / "train" / "spalling" / "10.png").unlink()
    Image.fromarray(values).save(target)
    return target


def _symlink_out(root: Path, victim: Path) -> Path:
    outside = root.parent / f"{root.name}-outside" / victim.name
    outside.parent.mkdir()
    victim.rename(outside)
    victim.symlink_to(outside)
    return victim


def _edit_csv(root: Path, old: str, new: str) -> Path:
    text = (root / "train.csv").read_text(encoding="utf-8")
    (root / "train.csv").write_text(text.replace(old, new), encoding="utf-8")
    return root / "train.csv"


def _y(root: Path, y: Any) -> Path:
    np.save(root / "spalling" / "y_train.npy", np.asarray(y))
    return root / "spalling" / "y_train.npy"


def _x(root: Path, x: np.ndarray) -> Path:
    np.save(root / "spalling" / "X_train.npy", x)
    return root / "spalling" / "X_train.npy"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _rename(path: Path, name: str) -> Path:
    return path.rename(path.with_name(name))


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _unlink(path: Path) -> Path:
    path.unlink()
    return path


SP = "spalling/train/spalling"


def _exif_pair(root: Path) -> Path:
    """A landscape photo stored 24x16 with EXIF orientation 6 (shown 16x24, white on top) and its mask."""
    stored = np.zeros((SIDE, 24, 3), dtype=np.uint8)
    stored[:, :12] = 255  # left half as stored: the top half once turned upright
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(root / "images" / "1.png", exif=exif)
    mask = np.zeros((24, SIDE), dtype=np.uint8)
    mask[:12] = 255
    Image.fromarray(mask).save(root / "masks" / "1.png")
    return root / "images" / "1.png"


def _white_where_crack(samples: list[dict[str, Any]]) -> bool:
    rotated = [s for s in samples if s["path"].endswith("1.png")]
    if len(rotated) != 1:
        return False
    # The batch is padded to a multiple of 32 with mask -1; the 16 x 16 crop is the rest.
    image, mask = rotated[0]["image"].float().mean(0), rotated[0]["mask"]
    crack, background = mask == 1, mask == 0
    return bool(crack.any() and background.any() and image[crack].min() > 200 and image[background].max() < 60)


def _value_of(name: str, expected: tuple[int, int, int]) -> Callable[[list[dict[str, Any]]], bool]:
    def check(samples: list[dict[str, Any]]) -> bool:
        found = [s for s in samples if Path(s["path"]).name == name]
        return len(found) == 1 and found[0]["image"][:, 3, 3].tolist() == list(expected)

    return check


def _labels_intact(samples: list[dict[str, Any]]) -> bool:
    # Image i of class folder c has value 10 * (3c + i) + 5: its label must be c.
    for sample in samples:
        value = int(sample["image"][0, 0, 0])
        if value % 10 == 5 and int(sample["labels"][task_index("spalling")]) != (value // 10) // 3:
            return False
    return True


def _dup_category(data: dict[str, Any]) -> None:
    # Category 2 is "spalling" or "crack": image 3's annotation could mean either.
    data["categories"] += [{"id": 2, "name": "spalling"}, {"id": 2, "name": "crack"}]
    data["annotations"][2]["category_id"] = 2


def _rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE of any run lengths (as pycocotools' rleToString writes it), even wrong ones."""
    out = []
    for i, value in enumerate(counts):
        value -= counts[i - 2] if i > 2 else 0
        more = True
        while more:
            group, value = value & 0x1F, value >> 5
            more = value != -1 if group & 0x10 else value != 0
            out.append(chr(48 + (group | (0x20 if more else 0))))
    return "".join(out)


def _rle(counts: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["annotations"][1]["segmentation"].update(counts=counts)


def _crack_at(where: Any, name: str = "1.png") -> Callable[[list[dict[str, Any]]], bool]:
    """The mask of image ``name`` is crack at ``where`` (an index such as ``np.s_[:1]``), background elsewhere."""
    expected = np.zeros((SIDE, SIDE), dtype=np.int64)
    expected[where] = 1

    def check(samples: list[dict[str, Any]]) -> bool:
        # Batches are padded to a multiple of 32 with mask -1; the 16 x 16 crop is the mask.
        found = [s["mask"][:SIDE, :SIDE].numpy() for s in samples if Path(s["path"]).name == name]
        return len(found) == 1 and np.array_equal(found[0], expected)

    return check


def _mask(root: Path, values: np.ndarray, name: str = "1.png", **save: Any) -> Path:
    """Replace pair 1's mask by ``values`` (mode from the array; ``mode="P"`` etc. in ``save``)."""
    mode = save.pop("mode", None)
    image = Image.fromarray(values) if mode is None else Image.fromarray(values, mode=mode)
    if "palette" in save:
        image.putpalette(save.pop("palette"))
    (root / "masks/1.png").unlink()
    target = root / "masks" / name
    image.save(target, **save)
    return target


def _rows(top: int, second: int | None = None, dtype: Any = np.uint8, channels: tuple[int, ...] = ()) -> np.ndarray:
    """A 16x16 mask holding ``top`` in row 0 (and ``second`` in row 1), 0 elsewhere."""
    values = np.zeros((SIDE, SIDE, *((len(channels),) if channels else ())), dtype=dtype)
    values[0] = channels if channels else top
    if second is not None:
        values[1] = second
    return values


def _rgba(colour: tuple[int, int, int], background: tuple[int, int, int, int]) -> np.ndarray:
    values = np.empty((SIDE, SIDE, 4), dtype=np.uint8)
    values[:] = background
    values[0] = (*colour, 255)
    return values


def _latin1_manifest(root: Path) -> Path:
    _rename(root / "images/1.png", "fissuré.png")
    text = (root / "train.csv").read_text(encoding="utf-8").replace("images/1.png", "images/fissuré.png")
    (root / "train.csv").write_bytes(text.encode("latin-1"))
    return root / "train.csv"


def _encode_manifest(root: Path, encoding: str) -> Path:
    text = (root / "train.csv").read_text(encoding="utf-8")
    (root / "train.csv").write_bytes(text.encode(encoding))
    return root / "train.csv"


def _named_labels(root: Path) -> Path:
    """Row i has pixel value 10 * i + 5 and label i % 2 written as a class name, in several spellings."""
    x = np.repeat(np.arange(6, dtype=np.uint8) * 10 + 5, SIDE * SIDE * 3).reshape(6, SIDE, SIDE, 3)
    _x(root, x)
    return _y(root, ["non_spalling", "Spalling", "Non-Spalling", "spalling ", "non spalling", "1"])


def _labels_by_row(samples: list[dict[str, Any]]) -> bool:
    got = {(int(s["image"][0, 0, 0]) - 5) // 10: int(s["labels"][task_index("spalling")]) for s in samples}
    return got == {i: i % 2 for i in range(6)}


CASES: list[Case] = [
    # -- image files ---------------------------------------------------------------------------
    Case("truncated_jpeg", "folders", lambda r: _truncate(_noisy(r / SP / "11.png", ".jpg")),
         Fails("cannot decode image (image file is truncated")),
    Case("truncated_png", "csv", lambda r: _truncate(_noisy(r / "images/2.png", ".png")),
         Fails("cannot decode image (image file is truncated")),
    Case("corrupt_file", "folders", lambda r: _write(r / SP / "12.png", b"\x89PNG garbage"),
         Fails("cannot read image (cannot identify image file)")),
    Case("zero_byte_file", "concrete", lambda r: _write(r / "Negative/N1.jpg", b""),
         Fails("cannot read image (empty file, 0 bytes)")),
    Case("zero_byte_photo", "predict", lambda r: _write(r / "photo1.jpg", b""),
         Fails("cannot decode image (empty file, 0 bytes)")),
    Case("grayscale", "folders", lambda r: _replace(r / SP / "10.png", Image.new("L", (SIDE, SIDE), 77)),
         Loads(6, _value_of("10.png", (77, 77, 77)))),
    Case("rgba", "csv", lambda r: _replace(r / "images/1.png", Image.new("RGBA", (SIDE, SIDE), (200, 100, 50, 0))),
         Loads(4, _value_of("1.png", (200, 100, 50)))),
    Case("sixteen_bit", "folders",
         lambda r: _replace(r / SP / "10.png", Image.fromarray(np.full((SIDE, SIDE), 51200, dtype=np.uint16))),
         Loads(6, _value_of("10.png", (200, 200, 200)))),
    Case("cmyk", "concrete",
         lambda r: _replace(r / "Positive/P1.jpg", Image.new("CMYK", (SIDE, SIDE), (0, 255, 255, 0)), quality=100),
         Loads(6, _value_of("P1.jpg", (255, 0, 0)))),
    Case("exif_rotated", "pairs", _exif_pair, Loads(3, _white_where_crack)),
    Case("decompression_bomb", "folders", lambda r: _replace(r / SP / "10.png", Image.new("RGB", (64, 64))),
         Fails("exceeds the decompression-bomb limit of 1,024 pixels"), env={"CRACKCASCADE_MAX_IMAGE_PIXELS": "1024"}),
    Case("non_image_in_class_folder", "folders", lambda r: _write(r / SP / "notes.txt", b"x"),
         Loads(6, _labels_intact, warning="ignored 1 non-image files")),
    Case("hidden_files", "folders",
         lambda r: (_write(r / SP / "._10.png", b"\0\5\x16\7"), _write(r / "spalling/train/.DS_Store", b"\0"))[1],
         Loads(6, _labels_intact)),
    Case("unicode_and_spaces_in_paths", "folders", lambda r: _rename(r / SP / "10.png", "fissuré 写真 1.png"),
         Loads(6, _value_of("fissuré 写真 1.png", (35, 35, 35)))),
    Case("unicode_and_spaces_in_manifest", "csv",
         lambda r: (_edit_csv(r, "images/1.png,", "images/dossier é/photo 1.png,"),
                    _rename(r / "images/1.png", "x.png"), _image(r / "images/dossier é/photo 1.png", 15))[2],
         Loads(4, _value_of("photo 1.png", (15, 15, 15)))),
    Case("symlink_out_of_root", "folders", lambda r: _symlink_out(r, r / SP / "11.png"),
         Fails("outside the dataset root")),
    Case("symlink_out_of_mask_folder", "pairs", lambda r: _symlink_out(r, r / "masks/2.png"),
         Fails("outside the dataset root")),
    Case("nan_in_float_tiff", "folders", lambda r: _float_tiff(r, float("nan")),
         Fails("float image has 1 NaN or infinite pixels")),
    Case("inf_in_float_tiff", "folders", lambda r: _float_tiff(r, float("inf")),
         Fails("float image has 1 NaN or infinite pixels")),
    Case("truncated_mask", "pairs", lambda r: _truncate(_noisy(r / "masks/0.png", ".png", side=SIDE)),
         Fails("cannot decode mask (image file is truncated")),
    # -- mask files: what is currently valid keeps loading; what would have to be guessed is refused
    Case("mask_of_zeros_and_ones", "pairs", lambda r: _mask(r, _rows(1)), Loads(3, _crack_at(np.s_[:1]))),
    Case("mask_sixteen_bit", "pairs", lambda r: _mask(r, _rows(65535, dtype=np.uint16)),
         Loads(3, _crack_at(np.s_[:1]))),
    Case("mask_palette_of_three_classes", "pairs",  # Phi-Net's 0/1/2: with one class, spalling is background
         lambda r: _mask(r, _rows(1, 2), mode="P", palette=[0, 0, 0, 128, 0, 0, 0, 128, 0]),
         Loads(3, _crack_at(np.s_[:1]))),
    Case("mask_rgb_one_colour", "pairs", lambda r: _mask(r, _rows(0, channels=(200, 30, 40))),
         Loads(3, _crack_at(np.s_[:1]))),
    Case("mask_rgba_alpha_agrees", "pairs", lambda r: _mask(r, _rgba((255, 0, 0), (0, 0, 0, 0))),
         Loads(3, _crack_at(np.s_[:1]))),
    Case("mask_lossless_webp", "pairs", lambda r: _mask(r, _rows(255), "1.webp", lossless=True),
         Loads(3, _crack_at(np.s_[:1]))),
    Case("jpeg_mask", "pairs", lambda r: _mask(r, _rows(255), "1.jpg", quality=90),
         Fails("JPEG mask: lossy compression adds noise values around the crack that would read as crack; "
               "export the masks as PNG")),
    Case("jpeg_mask_named_png", "pairs", lambda r: _mask(r, _rows(255), "1.png", format="JPEG"), Fails("JPEG mask")),
    Case("lossy_webp_mask", "pairs", lambda r: _mask(r, _rows(255), "1.webp", lossless=False, quality=80),
         Fails("lossy WebP mask")),
    Case("palette_mask_crack_at_255", "pairs",
         lambda r: _mask(r, _rows(255), mode="P", palette=[v for i in range(256) for v in (i, i, i)]),
         Fails("palette index 255 is outside the class indices 0..1 (0 background, 1 crack; 2-254 other classes); "
               "if it marks crack, save the mask as a grayscale PNG of 0 and 255 or put crack at palette index 1")),
    Case("rgba_mask_crack_in_alpha", "pairs", lambda r: _mask(r, _rgba((255, 255, 255), (255, 255, 255, 0))),
         Fails("the mask's colour is the same everywhere and only its alpha (transparency) varies")),
    Case("rgba_mask_alpha_disagrees", "pairs", lambda r: _mask(r, _rgba((255, 0, 0), (0, 0, 255, 0))),
         Fails("the mask's alpha (transparency) marks other pixels than its colours do")),
    Case("antialiased_mask", "pairs", lambda r: _mask(r, _rows(255, 128)),
         Fails("one-class mask holds values other than 0, 1 and 255 (128 in 16 pixels")),
    Case("antialiased_rgb_mask", "pairs", lambda r: _mask(r, _rows(0, 128, channels=(255, 255, 255))),
         Fails("one-class colour mask holds more than one colour besides black (e.g. (255, 255, 255) and "
               "(128, 128, 128)")),
    # -- COCO annotations ----------------------------------------------------------------------
    Case("coco_missing_key", "coco", _coco_edit(lambda d: d["annotations"][1].pop("segmentation")),
         Fails("annotation 2 lacks required key 'segmentation'")),
    Case("coco_missing_image_key", "coco", _coco_edit(lambda d: d["images"][2].pop("height")),
         Fails("image 3 lacks required key 'height'")),
    Case("coco_duplicate_image_id", "coco",
         _coco_edit(lambda d: d["images"].append({"id": 2, "file_name": "3.png", "height": SIDE, "width": SIDE})),
         Fails("id 2 is used by 2 images", skips=2)),
    Case("coco_duplicate_annotation_id", "coco", _coco_edit(lambda d: d["annotations"][2].update(id=1)),
         Fails("id 1 is used by 2 annotations", skips=2, lost=2)),
    Case("coco_duplicate_category_id", "coco", _coco_edit(_dup_category),
         Fails("category id 2 is used by 2 categories", skips=3)),
    Case("coco_polygon_of_two_points", "coco",
         _coco_edit(lambda d: d["annotations"][0].update(segmentation=[[1, 1, 9, 9]])),
         Fails("polygon with 4 coordinates (needs an even count and at least 3 points)")),
    Case("coco_rle_of_wrong_size", "coco",
         _coco_edit(lambda d: d["annotations"][1]["segmentation"].update(size=[8, 32])),
         Fails("RLE size [8, 32] differs from the image's [16, 16]")),
    Case("coco_rle_counts_of_wrong_sum", "coco",
         _coco_edit(lambda d: d["annotations"][1]["segmentation"].update(counts=[20, 4, 200])),
         Fails("RLE counts sum to 224, not height x width = 256")),
    Case("coco_path_traversal", "coco", _coco_edit(lambda d: d["images"][0].update(file_name="../../etc/passwd")),
         Fails("file_name escapes the dataset folder")),
    Case("coco_absolute_path", "coco", _coco_edit(lambda d: d["images"][0].update(file_name="/etc/passwd")),
         Fails("file_name escapes the dataset folder")),
    Case("coco_rle_string_of_garbage", "coco", _coco_edit(_rle("zz~~!!garbage")),
         Fails("annotation id 2 (image id 2): compressed RLE counts are not COCO's encoding: character 'z' at "
               "position 0 is not in the RLE alphabet '0'..'o'"), guard=True),
    Case("coco_rle_string_cut_short", "coco", _coco_edit(_rle(_rle_string([20, 4, 232])[:-1] + "P")),
         Fails("annotation id 2 (image id 2): compressed RLE counts are not COCO's encoding: the counts string "
               "ends inside a number"), guard=True),
    Case("coco_rle_string_of_wrong_sum", "coco", _coco_edit(_rle(_rle_string([20, 4, 200]))),
         Fails("annotation id 2 (image id 2): RLE counts sum to 224, not height x width = 256"), guard=True),
    Case("coco_rle_string_with_negative_run", "coco", _coco_edit(_rle(_rle_string([20, 4, 240, -8, 0]))),
         Fails("annotation id 2 (image id 2): compressed RLE counts decode to a negative run (-8 at run 3)"),
         guard=True),
    Case("coco_rle_string_read_right", "coco", _coco_edit(_rle(_rle_string([0, 32, 224]))),
         Loads(3, _crack_at(np.s_[:, :2], "2.png"))),  # column-major runs: columns 0 and 1
    Case("coco_polygon_far_outside", "coco",
         _coco_edit(lambda d: d["annotations"][0].update(segmentation=[[1, 1, 1e12, 1, 9, 5]])),
         Fails("annotation id 1 (image id 1): polygon point (1e+12, 1) lies outside the 16x16 image (x must be in "
               "-2..18, y in -2..18)"), guard=True),
    Case("coco_polygon_just_over_the_edge", "coco",
         _coco_edit(lambda d: d["annotations"][0].update(segmentation=[[-1, -1, 17, -1, 17, 2, -1, 2]])),
         Loads(3, _crack_at(np.s_[:2]))),
    Case("coco_height_as_string", "coco", _coco_edit(lambda d: d["images"][0].update(height=str(SIDE))),
         Fails("image id 1 ('1.png'): height must be a whole number of pixels, got '16'; fix the export")),
    Case("coco_image_id_as_string", "coco", _coco_edit(lambda d: d["annotations"][1].update(image_id="2")),
         Fails("image_id '2' is a string but the image id is the number 2; write the ids as numbers in both places")),
    Case("coco_category_id_as_string", "coco", _coco_edit(lambda d: d["annotations"][2].update(category_id="1")),
         Fails("category_id '1' is a string but the category id is the number 1")),
    # -- arrays and labels: always an error, skipping would change what the other rows mean -----
    Case("npy_wrong_dtype", "arrays", lambda r: _x(r, np.zeros((6, SIDE, SIDE, 3), dtype=np.float32)),
         Fails("got float32 (6, 16, 16, 3); scale to 0..255 and round", skippable=False)),
    Case("npy_channels_first", "arrays", lambda r: _x(r, np.zeros((6, 3, SIDE, SIDE), dtype=np.uint8)),
         Fails("the channels come first (NCHW)", skippable=False)),
    Case("npy_one_channel", "arrays", lambda r: _x(r, np.zeros((6, SIDE, SIDE), dtype=np.uint8)),
         Fails("grayscale images need 3 channels", skippable=False)),
    Case("npy_four_channels", "arrays", lambda r: _x(r, np.zeros((6, SIDE, SIDE, 4), dtype=np.uint8)),
         Fails("drop the alpha channel", skippable=False)),
    Case("npy_label_out_of_range", "arrays", lambda r: _y(r, [0, 1, 0, 2, 0, 1]),
         Fails("label 2 at row 3 is out of range for task 'spalling'", skippable=False)),
    Case("npy_fractional_labels", "arrays", lambda r: _y(r, [0, 1, 0.5, 1, 0, 1]),
         Fails("labels must be whole numbers", skippable=False)),
    Case("one_hot_row_not_one", "arrays", lambda r: _y(r, [[1, 0], [0, 1], [1, 1], [0, 1], [1, 0], [0, 1]]),
         Fails("one-hot row 2 is not a single 1 among 0s", skippable=False)),
    Case("one_hot_row_of_zeros", "arrays", lambda r: _y(r, [[1, 0], [0, 1], [1, 0], [0, 0], [1, 0], [0, 1]]),
         Fails("one-hot row 3 is not a single 1 among 0s", skippable=False)),
    Case("npy_label_count_mismatch", "arrays", lambda r: _y(r, [0, 1, 0]),
         Fails("3 labels for 6 images in X_train.npy", skippable=False)),
    Case("npy_class_name_labels", "arrays", _named_labels, Loads(6, _labels_by_row)),
    Case("npy_unknown_class_name", "arrays", lambda r: _y(r, ["spalling", "non_spalling", "crack", "1", "0", "1"]),
         Fails("label 'crack' at row 2 is not a class of task 'spalling' (classes: non_spalling, spalling); use "
               "these names or their indices 0..1", skippable=False)),
    Case("unknown_class_folder", "folders", lambda r: _mkdir(r / "spalling/train/cracked"),
         Fails("'cracked' is not a class of task 'spalling'", skippable=False)),
    # -- CSV manifests -------------------------------------------------------------------------
    Case("csv_unknown_column", "csv", lambda r: _edit_csv(r, "path,scene,spalling", "path,scene,roof"),
         Fails("unknown column 'roof'", skippable=False)),
    Case("csv_two_columns_for_one_task", "csv", lambda r: _edit_csv(r, "path,scene,spalling", "path,scene,task1"),
         Fails("columns 'scene' and 'task1' are both task 'scene'", skippable=False)),
    Case("csv_two_labels_for_one_image", "csv",
         lambda r: _edit_csv(r, "images/3.png,object,1", "images/3.png,object,1\nimages/0.png,object,"),
         Fails(":6: images/0.png is object for task 'scene' but pixel on line 2", skippable=False)),
    Case("csv_image_listed_again", "csv",
         lambda r: _edit_csv(r, "images/3.png,object,1", "images/3.png,object,1\nimages/0.png,,0"),
         Loads(5, lambda s: sorted(int(x["image"][0, 0, 0]) for x in s) == [5, 5, 15, 25, 35])),
    Case("csv_label_out_of_range", "csv", lambda r: _edit_csv(r, "images/1.png,object,1", "images/1.png,object,2"),
         Fails(":3: label 2 is out of range for task 'spalling'", skippable=False)),
    Case("csv_unknown_class", "csv", lambda r: _edit_csv(r, "images/1.png,object,1", "images/1.png,sky,1"),
         Fails(":3: 'sky' is not a class of task 'scene'", skippable=False)),
    Case("csv_missing_image", "csv", lambda r: _unlink(r / "images/3.png"), Fails("not found")),
    Case("csv_latin1", "csv", _latin1_manifest,
         Fails(":3: not UTF-8 text (byte 0xe9, e.g. an accent saved as Latin-1 or Windows-1252); save the manifest "
               "as UTF-8 (in Excel: CSV UTF-8)", skippable=False)),
    Case("csv_utf16", "csv", lambda r: _encode_manifest(r, "utf-16"),
         Fails("the manifest is UTF-16 text; save it as UTF-8", skippable=False)),
    Case("csv_utf8_with_bom", "csv", lambda r: _encode_manifest(r, "utf-8-sig"),
         Loads(4, lambda s: sorted(int(x["image"][0, 0, 0]) for x in s) == [5, 15, 25, 35])),
]  # fmt: skip


REQUIRED: dict[str, type[Fails] | type[Loads]] = {
    # image files
    "truncated_jpeg": Fails, "truncated_png": Fails, "zero_byte_file": Fails, "grayscale": Loads, "rgba": Loads,
    "sixteen_bit": Loads, "cmyk": Loads, "exif_rotated": Loads, "decompression_bomb": Fails,
    "non_image_in_class_folder": Loads, "hidden_files": Loads, "unicode_and_spaces_in_paths": Loads,
    "symlink_out_of_root": Fails, "nan_in_float_tiff": Fails, "inf_in_float_tiff": Fails,
    # mask files: the valid formats, and what would be a guess
    "mask_of_zeros_and_ones": Loads, "mask_palette_of_three_classes": Loads, "jpeg_mask": Fails,
    "lossy_webp_mask": Fails, "palette_mask_crack_at_255": Fails, "rgba_mask_crack_in_alpha": Fails,
    "antialiased_mask": Fails,
    # COCO
    "coco_missing_key": Fails, "coco_duplicate_image_id": Fails, "coco_polygon_of_two_points": Fails,
    "coco_rle_of_wrong_size": Fails, "coco_path_traversal": Fails, "coco_rle_string_of_garbage": Fails,
    "coco_rle_string_of_wrong_sum": Fails, "coco_polygon_far_outside": Fails, "coco_height_as_string": Fails,
    "coco_image_id_as_string": Fails,
    # arrays, labels and manifests
    "npy_wrong_dtype": Fails, "npy_channels_first": Fails, "npy_one_channel": Fails, "npy_label_out_of_range": Fails,
    "one_hot_row_not_one": Fails, "npy_class_name_labels": Loads, "csv_unknown_column": Fails, "csv_latin1": Fails,
}  # fmt: skip
"""Kinds of bad input that must each have a case of this outcome; each runs as ``test_bad_input[<kind>]``."""


def _parametrization() -> list[Any]:
    """Every case once, by name; a required kind without a case, or a name used twice, as a failing entry."""
    names = [case.name for case in CASES]
    params = [pytest.param(case, id=case.name) for case in CASES]
    params += [pytest.param(f"no case for required kind {n!r}", id=n) for n in REQUIRED if n not in names]
    params += [
        pytest.param(f"case name {n!r} is used twice", id=f"{n}-twice") for n in set(names) if names.count(n) > 1
    ]
    return params


_GUARD = """
import sys
from crackcascade.data.cracks import load_mask, read_coco
from crackcascade.errors import DataError
for folder in sys.argv[1:]:
    print("@@", folder, flush=True)
    for on_error in ("raise", "skip"):
        try:
            for record in read_coco(folder, on_error=on_error):
                load_mask(record, 1)
        except DataError as err:
            print(err, flush=True)
        except Exception as err:
            print("not a DataError:", type(err).__name__, err, flush=True)
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """The spoilt folder of every ``guard`` case read in ONE child process killed after two minutes.

    Returns:
        Case name -> (the file it spoilt, what reading it printed, or why the child never finished it).
    """
    folders: dict[str, tuple[Path, Path]] = {}
    for case in (c for c in CASES if c.guard):
        root = tmp_path_factory.mktemp(case.name)
        BASES[case.kind](root)
        folders[case.name] = (root, case.make(root))
    try:
        done = subprocess.run(
            [sys.executable, "-c", _GUARD, *(str(root) for root, _ in folders.values())],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        printed = done.stdout
        failure = f"killed the process (exit {done.returncode}: {done.stderr[-800:]})" if done.returncode else ""
    except subprocess.TimeoutExpired as err:
        output = err.stdout or ""
        printed = output if isinstance(output, str) else output.decode()
        failure = "hung (pycocotools got a segmentation it loops on)"
    sections = dict(part.partition("\n")[::2] for part in printed.split("@@ ")[1:])
    last = list(sections)[-1] if sections else None
    out = {}
    for name, (root, victim) in folders.items():
        if str(root) not in sections:
            result = f"never read {root}: the child process {failure} before"
        elif str(root) == last and failure:
            result = f"reading {root} {failure}"
        else:
            result = sections[str(root)]
        out[name] = (victim, result)
    return out


@pytest.mark.parametrize("case", _parametrization())
def test_bad_input(
    case: Case | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if isinstance(case, str):
        pytest.fail(case)
    if case.name in REQUIRED:
        assert isinstance(case.expect, REQUIRED[case.name]), f"{case.name} must be a {REQUIRED[case.name].__name__}"
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    clean_root, root = tmp_path / "clean", tmp_path / "data"
    for folder in (clean_root, root):
        folder.mkdir()
        BASES[case.kind](folder)
    victim = case.make(root)
    if case.guard:  # before reading it here, where a hang would stall the run
        spoilt, printed = request.getfixturevalue("guarded")[case.name]
        assert isinstance(case.expect, Fails) and case.expect.text in printed and str(spoilt) in printed, printed
    clean = load(case.kind, clean_root, "raise")
    assert clean.skipped == 0 and clean.samples, "the clean twin of the case loads"

    if isinstance(case.expect, Loads):
        for on_error in ("raise", "skip"):
            got = load(case.kind, root, on_error)
            assert got.skipped == 0 and len(got.samples) == case.expect.count, (on_error, got.messages)
            assert case.expect.check is None or case.expect.check(got.samples), on_error
            if case.expect.warning is not None:
                assert any(case.expect.warning in w and str(victim) in w for w in got.warnings), got.warnings
            else:
                assert not any("ignored" in w or "skipped" in w for w in got.warnings), got.warnings
        return

    with pytest.raises(DataError) as info:
        load(case.kind, root, "raise")
    message = str(info.value)
    assert "\n" not in message, message
    assert case.expect.text in message, message
    assert str(victim) in message, f"the message must name {victim}: {message}"
    if not case.expect.skippable:
        with pytest.raises(DataError, match=re.escape(case.expect.text)):
            load(case.kind, root, "skip")
        return
    got = load(case.kind, root, "skip")
    assert got.skipped == case.expect.skips, (got.skipped, got.messages, got.warnings)
    reports = got.messages + got.warnings
    assert any(str(victim) in r and case.expect.text in r for r in reports), reports
    assert len(got.samples) == len(clean.samples) - case.expect.lost
    assert all(str(victim) != str(s["path"]) for s in got.samples)


# ---------------------------------------------------------------------------------------------
# Properties: any manifest, any COCO file is read right or refused in one line
# ---------------------------------------------------------------------------------------------

SCENE = get_task("scene")
DAMAGE = get_task("damage_state")
SCENE_CELL = st.one_of(
    st.just(""),
    st.sampled_from(SCENE.classes),
    st.sampled_from([c.upper() for c in SCENE.classes]),
    st.integers(-2, 4).map(str),
    st.sampled_from(["sky", "nan", " 1 ", "1.5"]),
)
DAMAGE_CELL = st.sampled_from(["", "0", "1", "damaged", "Undamaged", "2", "broken"])


def _oracle(task: Any, cell: str) -> int | None:
    """The label a cell means, or None if it is invalid: an oracle written apart from the reader."""
    text = cell.strip()
    if text in ("", "nan", "-1"):
        return IGNORE_INDEX
    if text.lower() in task.classes:
        return task.classes.index(text.lower())
    if text.lstrip("-").isdigit():
        return int(text) if 0 <= int(text) < task.num_classes else None
    return None


@pytest.fixture(scope="module")
def image_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pool")
    for i in range(6):
        _image(folder / f"{i}.png", 10 * i + 5, size=(4, 4))
    return folder


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(st.integers(0, 5), SCENE_CELL, DAMAGE_CELL), max_size=6, unique_by=lambda r: r[0]),
    alias=st.sampled_from(["scene", "task1", "Scene Level"]),
)
def test_any_manifest_reads_right_or_fails_in_one_line(
    rows: list[tuple[int, str, str]], alias: str, image_pool: Path
) -> None:
    csv_path = image_pool / "train.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", alias, "damage_state"])
        writer.writerows([f"{index}.png", scene, damage] for index, scene, damage in rows)
    expected: list[tuple[str, int, int]] = []
    first_bad: int | None = None
    for line, (index, scene, damage) in enumerate(rows, start=2):
        labels = (_oracle(SCENE, scene), _oracle(DAMAGE, damage))
        if None in labels:
            first_bad = line if first_bad is None else first_bad
        elif labels != (IGNORE_INDEX, IGNORE_INDEX):  # a row without any label is dropped
            expected.append((f"{index}.png", *labels))  # type: ignore[arg-type]
    try:
        entry, _ = read_manifest(csv_path, None)
    except DataError as err:
        message = str(err)
        assert first_bad is not None, f"refused a valid manifest: {message}"
        assert "\n" not in message and message.startswith(f"{csv_path}:{first_bad}:"), message
        return
    assert first_bad is None, f"line {first_bad} is invalid but was accepted"
    got = [
        (p.name, int(labels[task_index("scene")]), int(labels[task_index("damage_state")]))
        for p, labels in zip(entry.paths, entry.labels, strict=True)
    ]
    assert got == expected
    untouched = [t for t in TASK_NAMES if t not in ("scene", "damage_state")]
    assert all((entry.labels[:, task_index(t)] == IGNORE_INDEX).all() for t in untouched)


POLYGON = st.lists(st.integers(0, 15), min_size=2, max_size=10)
ANNOTATION = st.tuples(
    st.integers(1, 6),  # annotation id (repeats are duplicates)
    st.integers(1, 4),  # image id (4 is not listed)
    st.one_of(POLYGON.map(lambda p: ("polygon", p)), st.booleans().map(lambda ok: ("rle", ok))),
)


def _oracle_mask(segmentations: list[Any]) -> np.ndarray:
    out = np.zeros((8, 8), dtype=bool)
    for seg in segmentations:
        rles = mask_utils.frPyObjects(seg, 8, 8) if isinstance(seg, list) else [mask_utils.frPyObjects(seg, 8, 8)]
        out |= mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(annotations=st.lists(ANNOTATION, max_size=6))
def test_any_coco_file_reads_right_or_fails_in_one_line(annotations: list[Any], tmp_path_factory: Any) -> None:
    folder = tmp_path_factory.mktemp("coco")
    for i in (1, 2, 3):
        _image(folder / f"{i}.png", 10 * i, size=(8, 8))
    entries, valid = [], []
    ids = [a[0] for a in annotations]
    for ident, image_id, (kind, value) in annotations:
        if kind == "polygon":
            polygon = [v // 2 for v in value]
            segmentation: Any = [polygon]
            ok = len(polygon) % 2 == 0 and len(polygon) >= 6
        else:  # column-major counts over the 8 x 8 image: right when they sum to 64
            segmentation = {"size": [8, 8], "counts": [30, 2, 32] if value else [3, 2, 1]}
            ok = value
        ok = ok and ids.count(ident) == 1 and image_id != 4
        entries.append({"id": ident, "image_id": image_id, "category_id": 1, "segmentation": segmentation})
        valid.append(ok)
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "height": 8, "width": 8} for i in (1, 2, 3)],
        "annotations": entries,
        "categories": [{"id": 1, "name": "crack"}],
    }
    (folder / "annotations.json").write_text(json.dumps(data))
    try:
        read_coco(folder)
    except DataError as err:
        message = str(err)
        assert not all(valid), f"refused a valid file: {message}"
        assert "\n" not in message and message.startswith(f"{folder / 'annotations.json'}:"), message
    else:
        assert all(valid), "accepted an invalid file"
    records = read_coco(folder, on_error="skip")
    # An image keeps its record only if every annotation naming it is valid, and then its mask is complete.
    spoiled = {e["image_id"] for e, ok in zip(entries, valid, strict=True) if not ok}
    assert sorted(r.image_id for r in records) == sorted({1, 2, 3} - spoiled)
    for record in records:
        own = [e["segmentation"] for e in entries if e["image_id"] == record.image_id]
        assert np.array_equal(load_mask(record, 1).astype(bool), _oracle_mask(own)), record.image_id
    assert (records.n_skipped == 0) == all(valid)


@settings(max_examples=80, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    density=st.floats(0, 1),
    seed=st.integers(0, 2**16),
)
def test_rle_strings_decode_to_the_runs_pycocotools_encodes(height: int, width: int, density: float, seed: int) -> None:
    mask = (np.random.default_rng(seed).random((height, width)) < density).astype(np.uint8)
    counts = mask_utils.encode(np.asfortranarray(mask))["counts"].decode("ascii")
    flat = mask.ravel(order="F")  # COCO runs go down the columns, starting with background
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flat, [1 - flat[-1]]))))  # run i ends at edges[i]
    runs = np.diff(np.concatenate(([0], edges))).tolist()
    assert rle_string_counts(counts).tolist() == runs
    assert check_segmentation({"size": [height, width], "counts": counts}, height, width) is None


@settings(max_examples=300, deadline=None)
@given(counts=st.text(alphabet=st.characters(min_codepoint=48, max_codepoint=111), min_size=1, max_size=8))
def test_rle_strings_accepted_are_the_ones_pycocotools_reads_the_same(counts: str) -> None:
    # Only strings the check accepts reach pycocotools: fed anything else it reads past its buffers.
    if check_segmentation({"size": [4, 4], "counts": counts}, 4, 4) is not None:
        return
    runs = rle_string_counts(counts)
    expected = np.repeat(np.arange(len(runs)) % 2, runs).reshape(4, 4).T
    assert np.array_equal(mask_utils.decode({"size": [4, 4], "counts": counts.encode()}), expected)


def test_skips_at_load_time_are_reported_at_the_end_of_the_epoch(tmp_path: Path) -> None:
    import pytorch_lightning as pl

    from crackcascade.callbacks import RunGuard
    from crackcascade.models.multitask import MultiTaskClassifier

    folders(tmp_path)
    victim = _truncate(_noisy(tmp_path / "spalling/train/spalling/11.png", ".jpg"))
    dm = PhiNetDataModule(root=str(tmp_path), image_size=32, val_fraction=0, batch_size=3, on_error="skip")
    model = MultiTaskClassifier(backbone="test_resnet", tasks=["spalling"], optimizer="adamw")
    trainer = pl.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[RunGuard()], accelerator="cpu",
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=dm)
    reports = [str(w.message) for w in caught if "samples that could not be loaded" in str(w.message)]
    assert len(reports) == 2, reports  # one per epoch
    assert reports[0].startswith("epoch 0 train: skipped 1 samples") and str(victim) in reports[0]
    assert reports[1].startswith("epoch 1 train: skipped 1 samples")
    assert trainer.global_step == 4, "6 images in batches of 3, one short by the skipped image: 2 steps per epoch"
    assert all(torch.isfinite(p).all() for p in model.parameters())
