"""Crack-mask data: COCO and mask-pair readers, joint transforms, the data module, the mask writer."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from crackcascade import CrackMaskDataModule, SyntheticCrackMaskDataModule
from crackcascade.cli import main as cli_main
from crackcascade.data.cracks import (
    MASK_IGNORE,
    CrackMaskDataset,
    MaskRecord,
    RecordList,
    load_mask,
    pad_collate,
    read_coco,
    read_mask_pairs,
    read_mask_splits,
)
from crackcascade.data.transforms import segmentation_transform
from crackcascade.errors import ConfigError, DataError
from crackcascade.labels import SCALES
from crackcascade.synthetic import main as synthesize
from crackcascade.synthetic import write_crack_masks

from ..conftest import CONF, SHARED_DATA

PIXEL, OBJECT = SCALES[0], SCALES[1]
CRACK, SPALLING = "crack", "spalling"


def masks_of(records: list[MaskRecord], num_classes: int) -> list[np.ndarray]:
    return [load_mask(r, num_classes) for r in records]


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} not available")
    return path


# ---------------------------------------------------------------------------------------------
# Synthetic sets: both formats hold the same masks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [(CRACK,), (CRACK, SPALLING)])
def test_synthetic_coco_and_mask_pairs_read_identical_masks(tmp_path: Path, classes: tuple[str, ...]) -> None:
    common: dict[str, Any] = {"scales": (PIXEL, OBJECT), "n_train": 6, "n_test": 0, "size": 64, "classes": classes}
    write_crack_masks(tmp_path / "coco", format="coco", **common)
    write_crack_masks(tmp_path / "pairs", format="masks", **common)
    seen_values: set[int] = set()
    for scale in (PIXEL, OBJECT):
        coco = read_coco(tmp_path / "coco" / scale / "train", classes)
        pairs = read_mask_pairs(tmp_path / "pairs" / scale / "train", classes)
        assert [r.id for r in coco] == [r.id for r in pairs] and len(coco) == 6
        for a, b in zip(masks_of(coco, len(classes)), masks_of(pairs, len(classes)), strict=True):
            np.testing.assert_array_equal(a, b)
            seen_values |= set(np.unique(a).tolist())
        # A third of the scenes are crack-free negatives; the others all have crack pixels.
        assert sum(not (m == 1).any() for m in masks_of(pairs, len(classes))) == 2
        annotations = json.loads((tmp_path / "coco" / scale / "train" / "annotations.json").read_text())
        kinds = {
            "polygon" if isinstance(a["segmentation"], list) else type(a["segmentation"]["counts"]).__name__
            for a in annotations["annotations"]
        }
        assert kinds == {"polygon", "str", "list"}, "the set must exercise polygons and both RLE forms"
    assert seen_values == set(range(len(classes) + 1))


def test_mask_writer_is_identical_for_any_number_of_workers(tmp_path: Path) -> None:
    for workers in (1, 2):
        write_crack_masks(tmp_path / str(workers), scales=[OBJECT], n_train=5, n_test=2, size=48, workers=workers)
    files = sorted(p.relative_to(tmp_path / "1") for p in (tmp_path / "1").rglob("*.png"))
    assert len(files) == 2 * (5 + 2)
    for rel in files:
        assert (tmp_path / "1" / rel).read_bytes() == (tmp_path / "2" / rel).read_bytes(), rel


def test_synthesize_cli_writes_crack_masks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path), "--masks", "coco", "--scales", "structural", "--n-train", "3", "--n-test", "1"]
    assert synthesize([*argv, "--size", "48", "--classes", CRACK, SPALLING]) == 0
    assert "crack-mask" in capsys.readouterr().out
    splits = read_mask_splits(tmp_path / SCALES[2], (CRACK, SPALLING))
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "test": 1}
    with pytest.raises(SystemExit):
        synthesize([str(tmp_path / "x"), "--scales", PIXEL])  # --scales without --masks


# ---------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------


def test_crackforest_rle_annotations_equal_its_mask_pngs() -> None:
    root = shared("crackforest")
    records = read_coco(root)
    assert len(records) == 118
    for record in records[:4]:
        truth = np.asarray(Image.open(root / "masks" / f"{record.id}.png")) > 0
        np.testing.assert_array_equal(load_mask(record, 1), truth.astype(np.int64))
        assert truth.any()


def test_crackseg_polygons_match_their_area_and_unannotated_image_is_empty() -> None:
    folder = shared("crackseg_coco") / "valid"
    records = read_coco(folder)
    area: dict[int, float] = {}
    for ann in json.loads((folder / "annotations.json").read_text())["annotations"]:
        area[ann["image_id"]] = area.get(ann["image_id"], 0.0) + ann["area"]
    annotated = [r for r in records if r.instances][:6]
    assert any(len(r.instances) > 1 for r in records), "the set has images with several polygons"
    for record in annotated:
        pixels = int(load_mask(record, 1).sum())
        assert pixels > 0 and abs(pixels - area[record.image_id]) <= 0.1 * area[record.image_id]
    empty = [r for r in records if not r.instances]
    assert len(empty) == 1
    mask = load_mask(empty[0], 1)
    assert mask.shape == (416, 416) and not mask.any()


def test_phinet_palette_masks_with_two_classes_and_crack_only() -> None:
    root = shared("phinet_pixel")
    both = read_mask_pairs(root, (CRACK, SPALLING))
    crack_only = read_mask_pairs(root, (CRACK,))
    assert len(both) == len(crack_only) == 1753
    saw_both = False
    for rec_two, rec_one in zip(both[:6], crack_only[:6], strict=True):
        palette = np.asarray(Image.open(rec_two.mask))  # type: ignore[arg-type]
        two, one = load_mask(rec_two, 2), load_mask(rec_one, 1)
        assert set(np.unique(two).tolist()) <= {0, 1, 2}
        np.testing.assert_array_equal(two, palette)
        np.testing.assert_array_equal(one, (palette == 1).astype(np.int64))  # spalling is not crack
        saw_both |= bool((two == 1).any() and (two == 2).any())
    assert saw_both


def test_masonry_pairs_load_as_samples() -> None:
    records = read_mask_pairs(shared("masonry"))
    assert len(records) == 240
    sample = CrackMaskDataset(records[:2], 1, PIXEL)[1]
    assert sample["image"].shape == (3, 224, 224) and sample["image"].dtype == torch.uint8
    assert sample["mask"].dtype == torch.int64 and set(sample["mask"].unique().tolist()) == {0, 1}
    assert sample["scale"] == PIXEL and sample["path"].endswith(records[1].image.name)


def test_crackforest_id_lists_give_the_split() -> None:
    root = shared("crackforest")
    train_ids = set((root / "train.txt").read_text().split())
    test_ids = set((root / "test.txt").read_text().split())
    assert (len(train_ids), len(test_ids)) == (72, 46)
    dm = CrackMaskDataModule(root=str(root), scales=[PIXEL], val_fraction=0.1)
    splits = dm.index()[PIXEL]
    ids = {split: {r.id for r in records} for split, records in splits.items()}
    assert ids["test"] == test_ids
    assert ids["train"] | ids["val"] == train_ids and not ids["train"] & ids["val"]
    assert len(ids["val"]) == 7


# ---------------------------------------------------------------------------------------------
# Joint transforms
# ---------------------------------------------------------------------------------------------


def letter_f(height: int, width: int, value: int) -> torch.Tensor:
    """An F: no flip or rotation of it is itself, so a misaligned mask cannot match by chance."""
    mask = torch.zeros((height, width), dtype=torch.int64)
    mask[4:36, 6:14] = value
    mask[4:12, 14:34] = value
    mask[18:25, 14:28] = value
    return mask


def test_training_transform_keeps_mask_on_the_image_pixels() -> None:
    torch.manual_seed(0)
    # Window exactly the crop size: no resampling, so the pairs must agree pixel for pixel.
    transform = segmentation_transform(48, train=True, scale_range=(1.0, 1.0), ratio=(1.0, 1.0))
    mask = letter_f(40, 36, 1)  # smaller than the crop: padding is exercised too
    image = (mask.bool() * 255).to(torch.uint8).expand(3, -1, -1).clone()
    seen = set()
    for _ in range(60):
        out_image, out_mask = transform(image, mask)
        assert out_image.shape == (3, 48, 48) and out_mask.shape == (48, 48)
        assert torch.equal(out_image[0] > 128, out_mask == 1)
        seen.add(out_mask.numpy().tobytes())
    assert len(seen) > 10, "the transform must actually vary the geometry"


def test_scaled_crops_never_blend_mask_values() -> None:
    torch.manual_seed(1)
    transform = segmentation_transform(32, train=True, scale_range=(0.3, 2.0))
    mask = letter_f(40, 36, 2)  # class 2: bilinear resizing would create 1s on its edges
    image = (mask.bool() * 255).to(torch.uint8).expand(3, -1, -1).clone()
    mismatch = []
    for _ in range(100):
        out_image, out_mask = transform(image, mask)
        assert out_mask.dtype == torch.int64 and set(out_mask.unique().tolist()) <= {0, 2}
        marked, bright = out_mask == 2, out_image[0] > 128
        union = int((marked | bright).sum())
        if union:
            mismatch.append(int((marked ^ bright).sum()) / union)
    # Resampled edges differ by a pixel here and there; a mask shifted by half a pixel against its
    # image (nearest sampling at pixel corners instead of centres) differs by about 0.1 on average.
    assert len(mismatch) > 50 and max(mismatch) < 0.25 and float(np.mean(mismatch)) < 0.05


def test_evaluation_transform_and_pad_collate() -> None:
    transform = segmentation_transform(32, train=False)
    image, mask = torch.ones((3, 20, 30), dtype=torch.uint8), letter_f(20, 30, 1)
    assert transform(image, mask) == (image, mask)
    other = {"image": torch.full((3, 40, 10), 7, dtype=torch.uint8), "mask": torch.ones(40, 10, dtype=torch.int64)}
    batch = pad_collate([{"image": image, "mask": mask, "path": "a"}, {**other, "path": "b"}])
    assert batch["image"].shape == (2, 3, 64, 32) and batch["mask"].shape == (2, 64, 32)
    assert batch["path"] == ["a", "b"]
    assert torch.equal(batch["mask"][0, :20, :30], mask) and (batch["mask"][0, 20:] == MASK_IGNORE).all()
    assert (batch["image"][1, :, :40, :10] == 7).all() and (batch["image"][1, :, :, 10:] == 0).all()
    assert (batch["mask"][1, :, 10:] == MASK_IGNORE).all()


def test_resize_transforms_resize_whole_images_and_keep_mask_values() -> None:
    torch.manual_seed(2)
    mask = letter_f(40, 60, 2)
    image = (mask.bool() * 255).to(torch.uint8).expand(3, -1, -1).clone()
    evaluate = segmentation_transform(32, train=False, resize=224)
    out_image, out_mask = evaluate(image, mask)
    assert out_image.shape == (3, 224, 224) and out_mask.shape == (224, 224)
    assert set(out_mask.unique().tolist()) == {0, 2}  # nearest-neighbour: no blended class values
    # The whole letter survives (a crop would cut it): its bounding box spans the resized frame alike.
    rows, cols = torch.nonzero(out_mask == 2, as_tuple=True)
    rows0, cols0 = torch.nonzero(mask == 2, as_tuple=True)
    assert abs(rows.min().item() / 224 - rows0.min().item() / 40) < 0.03
    assert abs(cols.max().item() / 224 - cols0.max().item() / 60) < 0.03
    train = segmentation_transform(32, train=True, resize=64)
    shapes = {tuple(train(image, mask)[1].shape) for _ in range(10)}
    assert shapes == {(64, 64)}


# ---------------------------------------------------------------------------------------------
# Data module
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mask_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic mask pairs at two scales, with train/ and test/ folders."""
    root = tmp_path_factory.mktemp("crack_masks")
    write_crack_masks(root, scales=(PIXEL, OBJECT), n_train=10, n_test=3, size=48)
    return root


def paths(dm: CrackMaskDataModule, split: str) -> list[set[str]]:
    return [{str(r.image) for r in dm.index()[scale].get(split, [])} for scale in dm.scales]


def test_data_module_has_one_eval_loader_per_scale(mask_root: Path) -> None:
    dm = CrackMaskDataModule(root=str(mask_root), scales=[OBJECT, PIXEL], image_size=32, batch_size=4)
    assert dm.eval_scales == [PIXEL, OBJECT] and dm.num_classes == 2
    dm.setup("fit")
    dm.setup("test")
    for loaders in (dm.val_dataloader(), dm.test_dataloader()):
        assert len(loaders) == 2
        for scale, loader in zip(dm.eval_scales, loaders, strict=True):
            batches = list(loader)
            assert batches and all(b["scale"] == [scale] for b in batches)
            assert all(b["image"].shape[-2:] == (64, 64) for b in batches)  # 48 padded to 64
    assert sum(len(b["path"]) for b in dm.test_dataloader()[1]) == 3
    scales_seen = set()
    for batch in dm.train_dataloader():
        assert batch["image"].dtype == torch.uint8 and batch["image"].shape[1:] == (3, 32, 32)
        assert batch["mask"].dtype == torch.int64 and set(batch["mask"].unique().tolist()) <= {0, 1}
        scales_seen.update(batch["scale"])
    assert scales_seen == {PIXEL, OBJECT}


def test_resize_and_test_resize_options_size_the_batches(mask_root: Path) -> None:
    dm = CrackMaskDataModule(
        root=str(mask_root), scales=[PIXEL], image_size=32, batch_size=4, resize=64, test_resize=96
    )
    dm.setup("fit")
    dm.setup("test")
    assert {tuple(b["image"].shape[-2:]) for b in dm.train_dataloader()} == {(64, 64)}  # whole images, not crops
    assert {tuple(b["image"].shape[-2:]) for b in dm.val_dataloader()[0]} == {(64, 64)}
    assert {tuple(b["mask"].shape[-2:]) for b in dm.test_dataloader()[0]} == {(96, 96)}
    with pytest.raises(ConfigError, match="data.test_resize"):
        CrackMaskDataModule(root="x", test_resize=8)


def test_splits_are_disjoint_and_seeded(mask_root: Path) -> None:
    def module(seed: int) -> CrackMaskDataModule:
        return CrackMaskDataModule(root=str(mask_root), scales=[PIXEL, OBJECT], val_fraction=0.3, seed=seed)

    dm = module(0)
    for train, val, test in zip(paths(dm, "train"), paths(dm, "val"), paths(dm, "test"), strict=True):
        assert (len(train), len(val), len(test)) == (7, 3, 3)
        assert not (train & val) and not (train & test) and not (val & test)
    assert paths(module(0), "val") == paths(dm, "val")
    assert paths(module(1), "val") != paths(dm, "val")


def test_missing_scale_folder_is_named(mask_root: Path) -> None:
    with pytest.raises(DataError, match=f"no '{SCALES[2]}' folder"):
        CrackMaskDataModule(root=str(mask_root), scales=[SCALES[2]]).index()


def test_test_split_is_carved_when_missing_and_independent_of_val(tmp_path: Path) -> None:
    write_crack_masks(tmp_path, format="coco", scales=[PIXEL], n_train=12, n_test=0, size=32)
    # No split folders except train/, so both val and test are carved from it.
    with_val = CrackMaskDataModule(root=str(tmp_path), test_fraction=0.25, val_fraction=0.25)
    no_val = CrackMaskDataModule(root=str(tmp_path), test_fraction=0.25, val_fraction=0.0)
    (train,), (val,), (test,) = (paths(with_val, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (6, 3, 3) and not (train & val or train & test or val & test)
    assert paths(no_val, "test") == [test]
    with pytest.raises(DataError, match="test_fraction"):
        CrackMaskDataModule(root=str(tmp_path)).setup("test")


def test_predict_loader_gives_native_size_photos(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    Image.new("RGB", (20, 50)).save(tmp_path / "sub" / "b.jpg")
    dm = CrackMaskDataModule(root=str(tmp_path / "unused"), predict_root=str(tmp_path))
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert [set(b) for b in batches] == [{"image", "path"}] * 2
    assert [tuple(b["image"].shape) for b in batches] == [(1, 3, 30, 40), (1, 3, 50, 20)]


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [({"scales": ["bridge"]}, "data.scales"), ({"classes": [CRACK, "Crack"]}, "data.classes")],
)
def test_bad_options_name_the_option(kwargs: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError, match=option):
        CrackMaskDataModule(root="x", **kwargs)


# ---------------------------------------------------------------------------------------------
# Bad input: one line in raise mode, a count in skip mode
# ---------------------------------------------------------------------------------------------


def coco_folder(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """Two 8x8 images: image 1 with a polygon, image 2 with an RLE; crack and rust categories."""
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / name)
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 8, "width": 8},
            {"id": 2, "file_name": "images/b.png", "height": 8, "width": 8},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]], "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "segmentation": {"size": [8, 8], "counts": [9, 3, 52]}},
        ],
        "categories": [{"id": 1, "name": "Crack"}, {"id": 2, "name": "rust"}],
    }
    return tmp_path, data


def edit(data: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    change(data)
    return data


TRIANGLE = [0, 0, 2, 0, 2, 2]
COCO_PROBLEMS: list[tuple[str, Callable[[dict[str, Any]], None], str, int]] = [
    # (id, edit, text in the message, records left when skipping)
    ("escape", lambda d: d["images"][1].update(file_name="../b.png"), "escapes the dataset folder", 1),
    ("absolute", lambda d: d["images"][1].update(file_name="/tmp/b.png"), "escapes the dataset folder", 1),
    ("missing", lambda d: d["images"][1].update(file_name="nope.png"), "image not found", 1),
    ("size", lambda d: d["images"][0].update(height=9), "says 8x9", 1),
    ("two_points", lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 5]]), "polygon with 4", 1),
    ("odd", lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 1, 5, 4, 1]]), "polygon with 7", 1),
    ("rle_size", lambda d: d["annotations"][1]["segmentation"].update(size=[4, 16]), "RLE size [4, 16]", 1),
    (
        "category",
        lambda d: d["annotations"].append(
            {"id": 3, "image_id": 1, "category_id": 2, "segmentation": [[0, 0, 2, 0, 2, 2]]}
        ),
        "category 'rust' (annotation id 3) is not in data.classes",
        2,
    ),
    (
        "unknown_image",
        lambda d: d["annotations"].append(
            {"id": 3, "image_id": 7, "category_id": 1, "segmentation": [[0, 0, 2, 0, 2, 2]]}
        ),
        "no image has id 7",
        2,
    ),
    (
        "duplicate",
        lambda d: d["images"].append({"id": 2, "file_name": "a.png", "height": 8, "width": 8}),
        "id 2 is used by 2 images",
        1,
    ),
    ("missing_key", lambda d: d["annotations"][1].pop("segmentation"), "lacks required key 'segmentation'", 1),
]


def test_clean_coco_folder_reads(tmp_path: Path) -> None:
    folder, data = coco_folder(tmp_path)
    (folder / "annotations.json").write_text(json.dumps(data))
    records = read_coco(folder)
    assert records.skipped == {} and [r.image.name for r in records] == ["a.png", "b.png"]
    first, second = masks_of(records, 1)
    assert first.sum() == 4 * 3 and first[1:4, 1:5].all()
    assert second.sum() == 3 and second[1:4, 1].all()  # column-major RLE: rows 1-3 of column 1


@pytest.mark.parametrize(("name", "change", "text", "left"), COCO_PROBLEMS, ids=[p[0] for p in COCO_PROBLEMS])
def test_bad_coco_raises_one_line_or_is_skipped_and_counted(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
    change: Callable[[dict[str, Any]], None],
    text: str,
    left: int,
) -> None:
    folder, data = coco_folder(tmp_path)
    (folder / "annotations.json").write_text(json.dumps(edit(data, change)))
    with pytest.raises(DataError) as info:
        read_coco(folder)
    message = str(info.value)
    assert "\n" not in message and "annotations.json" in message and text in message
    with caplog.at_level(logging.WARNING, logger="crackcascade.data.cracks"):
        records = read_coco(folder, on_error="skip")
    assert len(records) == left and records.n_skipped >= 1
    kind, count = next(iter(records.skipped.items()))
    assert f"skipped {count}: {kind}" in caplog.text


def pair_folder(tmp_path: Path) -> Path:
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for stem in ("a", "b", "c"):
        Image.new("RGB", (8, 6)).save(tmp_path / "images" / f"{stem}.jpg")
        Image.new("L", (8, 6)).save(tmp_path / "masks" / f"{stem}.png")
    return tmp_path


PAIR_PROBLEMS: list[tuple[str, Callable[[Path], None], str]] = [
    ("size", lambda f: Image.new("L", (8, 7)).save(f / "masks" / "b.png"), "b.png: mask is 8x7 but its image"),
    ("no_mask", lambda f: (f / "masks" / "b.png").unlink(), "b.jpg: no mask named b.*"),
    ("no_image", lambda f: Image.new("L", (8, 6)).save(f / "masks" / "d.png"), "d.png: no image named d.*"),
    ("unreadable", lambda f: (f / "masks" / "b.png").write_bytes(b"not a png"), "b.png: cannot read mask"),
]


@pytest.mark.parametrize(("name", "change", "text"), PAIR_PROBLEMS, ids=[p[0] for p in PAIR_PROBLEMS])
def test_bad_pairs_raise_one_line_or_are_skipped(
    tmp_path: Path, name: str, change: Callable[[Path], None], text: str
) -> None:
    folder = pair_folder(tmp_path)
    change(folder)
    with pytest.raises(DataError) as info:
        read_mask_pairs(folder)
    assert "\n" not in str(info.value) and text in str(info.value)
    records = read_mask_pairs(folder, on_error="skip")
    assert [r.id for r in records] == (["a", "b", "c"] if name == "no_image" else ["a", "c"])
    assert records.n_skipped == 1


def test_mask_value_above_the_classes_fails_when_loaded(tmp_path: Path) -> None:
    folder = pair_folder(tmp_path)
    Image.fromarray(np.full((6, 8), 3, dtype=np.uint8)).save(folder / "masks" / "b.png")
    dataset = CrackMaskDataset(read_mask_pairs(folder, (CRACK, SPALLING)), 2)
    assert set(dataset[0]["mask"].unique().tolist()) == {0}
    with pytest.raises(DataError, match=r"b\.png: mask value 3 but only 2 classes"):
        dataset[1]


def test_data_module_logs_skipped_records_once(tmp_path: Path) -> None:
    (tmp_path / PIXEL).mkdir()
    folder = pair_folder(tmp_path / PIXEL)
    (folder / "masks" / "c.png").unlink()
    dm = CrackMaskDataModule(root=str(tmp_path), on_error="skip")
    with pytest.warns(UserWarning, match=r"skipped 1 bad entries \(1 images without a mask\)"):
        dm.setup("fit")
    assert isinstance(read_mask_splits(folder, on_error="skip")["train"], RecordList)
    assert sum(len(ds) for ds in dm.datasets["train"] + dm.datasets["val"]) == 2


def test_synthetic_masks_refuse_a_folder_they_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = {"scales": ["pixel"], "n_train": 2, "n_test": 1, "synthetic_size": 32, "write_workers": 1}
    foreign = tmp_path / "my photos"
    (foreign / "pixel").mkdir(parents=True)
    (foreign / "pixel" / "wall.png").write_bytes(b"a photo of mine")
    before = sorted(p.relative_to(foreign) for p in foreign.rglob("*"))
    with pytest.raises(DataError) as info:
        SyntheticCrackMaskDataModule(root=str(foreign), **small).prepare_data()
    message = str(info.value)
    assert "\n" not in message and f"'{foreign}'" in message, message
    assert "not crackcascade synthetic data" in message and "choose an empty or new folder" in message
    # Through the command line: one line, exit status 2, and the folder left as it was.
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(CONF / "unet.yaml"), "--data", "crackcascade.SyntheticCrackMaskDataModule",
                  "--data.root", str(foreign), "--data.n_train", "2", "--data.n_test", "1",
                  "--data.synthetic_size", "32", "--trainer.default_root_dir", str(tmp_path / "out")])  # fmt: skip
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"crackcascade: error: {message}"
    assert sorted(p.relative_to(foreign) for p in foreign.rglob("*")) == before
    assert (foreign / "pixel" / "wall.png").read_bytes() == b"a photo of mine"
    # An empty folder is fine: the set is written there.
    empty = tmp_path / "empty"
    empty.mkdir()
    SyntheticCrackMaskDataModule(root=str(empty), **small).prepare_data()
    assert len(list((empty / "pixel" / "train" / "images").glob("*.png"))) == 2
