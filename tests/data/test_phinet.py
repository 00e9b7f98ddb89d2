from __future__ import annotations

import csv
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from crackcascade.data.datamodules import PhiNetDataModule
from crackcascade.data.phinet import ArrayTaskDataset, decode_labels, read_index
from crackcascade.errors import ConfigError, DataError
from crackcascade.labels import IGNORE_INDEX, TASK_NAMES, get_task, task_index
from crackcascade.synthetic import write_phinet


def _labelled_counts(dm: PhiNetDataModule, split: str) -> dict[str, int]:
    counts = dict.fromkeys(TASK_NAMES, 0)
    for dataset in dm.datasets[split].values():
        for i in range(len(dataset)):
            labels = dataset[i]["labels"]
            for t in TASK_NAMES:
                counts[t] += int(labels[task_index(t)] != IGNORE_INDEX)
    return counts


def test_every_format_loads_all_tasks(phinet_format: tuple[str, Path]) -> None:
    _, root = phinet_format
    dm = PhiNetDataModule(root=str(root), image_size=32, batch_size=16)
    dm.setup("fit")
    assert dm.tasks == TASK_NAMES
    train = _labelled_counts(dm, "train")
    val = _labelled_counts(dm, "val")
    assert all(train[t] > 0 and val[t] > 0 for t in TASK_NAMES), (train, val)
    sample = next(iter(dm.datasets["train"].values()))[0]
    assert sample["image"].dtype == torch.uint8
    assert sample["image"].shape == (3, 32, 32)
    assert sample["labels"].shape == (len(TASK_NAMES),)


def test_format_detection_matches_explicit(phinet_roots: dict[str, Path]) -> None:
    for fmt, root in phinet_roots.items():
        auto, _ = read_index(root, "auto", None)
        explicit, _ = read_index(root, fmt, None)  # type: ignore[arg-type]
        assert {k: len(v) for k, v in auto["train"].items()} == {k: len(v) for k, v in explicit["train"].items()}


def test_combined_loader_gives_every_task_each_step(phinet_roots: dict[str, Path]) -> None:
    dm = PhiNetDataModule(root=str(phinet_roots["arrays"]), image_size=32, batch_size=16)
    dm.setup("fit")
    loader = dm.train_dataloader()
    steps = 0
    for batch, _, _ in loader:
        assert set(batch) == set(TASK_NAMES)
        for task, part in batch.items():
            labelled = part["labels"] != IGNORE_INDEX
            assert labelled[:, task_index(task)].all() and labelled.sum() == len(part["labels"])
        steps += 1
    assert steps == len(loader) > 0


def test_proportional_epoch_sees_every_task_set_once(tmp_path: Path) -> None:
    # Task sets of unequal size: what the max_size_cycle epoch repeats, the proportional one does not.
    write_phinet(tmp_path, format="arrays", tasks=("scene", "spalling"), n_train=4, n_test=2, size=32, seed=2)
    write_phinet(tmp_path / "big", format="arrays", tasks=("material",), n_train=12, n_test=2, size=32, seed=3)
    shutil.move(str(tmp_path / "big" / "material"), str(tmp_path / "material"))
    seen = {}
    for mode in ("max_size_cycle", "proportional"):
        dm = PhiNetDataModule(root=str(tmp_path), image_size=32, batch_size=6, val_fraction=0.0, combined_mode=mode)
        dm.setup("fit")
        sizes = {task: len(ds) for task, ds in dm.datasets["train"].items()}
        counts = dict.fromkeys(sizes, 0)
        for batch, _, _ in dm.train_dataloader():
            for part in batch.values():
                for task in sizes:
                    counts[task] += int((part["labels"][:, task_index(task)] != IGNORE_INDEX).sum())
        seen[mode] = counts
    assert sizes == {"scene": 4, "spalling": 4, "material": 12}
    assert seen["proportional"] == sizes  # each training set exactly once per epoch
    assert seen["max_size_cycle"]["scene"] > sizes["scene"]  # the small tasks cycle


def test_csv_images_carry_several_labels_and_load_once(phinet_roots: dict[str, Path]) -> None:
    root = phinet_roots["csv"]
    dm = PhiNetDataModule(root=str(root), image_size=32)
    dm.setup("fit")
    (dataset,) = dm.datasets["train"].values()
    per_image = torch.stack([dataset[i]["labels"] for i in range(len(dataset))])
    assert ((per_image != IGNORE_INDEX).sum(1) > 1).any(), "some images must be labelled for several tasks"
    with open(root / "train.csv") as handle:
        paths = [row["path"] for row in csv.DictReader(handle)]
    assert len(paths) == len(set(paths))


def test_validation_split_is_seeded_and_disjoint(phinet_roots: dict[str, Path]) -> None:
    def split(seed: int) -> tuple[list[str], list[str]]:
        dm = PhiNetDataModule(root=str(phinet_roots["folders"]), seed=seed, val_fraction=0.25)
        dm.setup("fit")
        return (
            [str(p) for p in dm.datasets["train"]["scene"].paths],  # type: ignore[attr-defined]
            [str(p) for p in dm.datasets["val"]["scene"].paths],  # type: ignore[attr-defined]
        )

    train, val = split(0)
    assert not set(train) & set(val)
    assert len(val) == 2 and len(train) == 6
    assert split(0) == (train, val)
    assert split(1) != (train, val)


def test_explicit_val_split_is_used(tmp_path: Path, phinet_roots: dict[str, Path]) -> None:
    root = tmp_path / "phi"
    shutil.copytree(phinet_roots["arrays"] / "spalling", root / "spalling")
    x = np.load(root / "spalling" / "X_test.npy")
    np.save(root / "spalling" / "X_val.npy", x[:3])
    np.save(root / "spalling" / "Y_val.npy", np.eye(2, dtype=np.float32)[[0, 1, 1]])
    dm = PhiNetDataModule(root=str(root), tasks=["task3"])
    dm.setup("fit")
    assert len(dm.datasets["val"]["spalling"]) == 3
    assert len(dm.datasets["train"]["spalling"]) == 8
    assert dm.tasks == ("spalling",)


def test_arrays_are_memory_mapped_not_copied(phinet_roots: dict[str, Path]) -> None:
    x_path = phinet_roots["arrays"] / "scene" / "X_train.npy"
    labels = np.load(phinet_roots["arrays"] / "scene" / "y_train.npy")
    dataset = ArrayTaskDataset(x_path, labels, task_index("scene"))
    first = dataset[3]
    assert isinstance(dataset._array, np.memmap)
    # A worker receives the path, never the pixels.
    assert len(pickle.dumps(dataset)) < x_path.stat().st_size / 4
    reloaded = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(reloaded[3]["image"], first["image"])
    assert int(first["labels"][task_index("scene")]) == int(labels[3])


def test_one_hot_labels_decode() -> None:
    task = get_task("damage_level")
    assert decode_labels(np.eye(4)[[2, 0, 3]], task, "y").tolist() == [2, 0, 3]
    assert decode_labels(np.array([[1], [3]]), task, "y").tolist() == [1, 3]
    with pytest.raises(DataError, match="row 1 is not a single 1"):
        decode_labels(np.array([[1, 0, 0, 0], [1, 1, 0, 0]]), task, "y")
    with pytest.raises(DataError, match="3 columns but task 'damage_level' has 4 classes"):
        decode_labels(np.eye(3), task, "y")


# ---- bad input: one line naming the file or option -------------------------------------------


def test_missing_root() -> None:
    dm = PhiNetDataModule(root="/no/such/folder")
    with pytest.raises(DataError, match="data.root '/no/such/folder' does not exist"):
        dm.setup("fit")


def test_task_folder_without_arrays(tmp_path: Path, phinet_roots: dict[str, Path]) -> None:
    shutil.copytree(phinet_roots["arrays"] / "scene", tmp_path / "scene")
    (tmp_path / "spalling").mkdir()
    (tmp_path / "spalling" / "readme.txt").write_text("arrays go here")
    with pytest.raises(DataError, match=r"spalling: task folder has no X_train.npy"):
        read_index(tmp_path, "arrays", None)


def test_requested_task_absent(phinet_roots: dict[str, Path], tmp_path: Path) -> None:
    shutil.copytree(phinet_roots["arrays"] / "scene", tmp_path / "scene")
    with pytest.raises(DataError, match="no folder for task 'collapse' .*--data.tasks"):
        read_index(tmp_path, "auto", ("scene", "collapse"))


def test_label_out_of_range(tmp_path: Path, phinet_roots: dict[str, Path]) -> None:
    shutil.copytree(phinet_roots["arrays"] / "spalling", tmp_path / "spalling")
    y = np.load(tmp_path / "spalling" / "y_train.npy")
    y[5] = 2
    np.save(tmp_path / "spalling" / "y_train.npy", y)
    with pytest.raises(DataError, match=r"y_train.npy: label 2 at row 5 is out of range for task 'spalling'"):
        read_index(tmp_path, "auto", None)


def test_wrong_array_dtype_and_length(tmp_path: Path, phinet_roots: dict[str, Path]) -> None:
    shutil.copytree(phinet_roots["arrays"] / "scene", tmp_path / "scene")
    np.save(tmp_path / "scene" / "y_train.npy", np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match="y_train.npy: 3 labels for 8 images"):
        read_index(tmp_path, "auto", None)
    np.save(tmp_path / "scene" / "X_train.npy", np.zeros((3, 8, 8, 3), dtype=np.float32))
    with pytest.raises(DataError, match="X_train.npy: expected uint8 images"):
        read_index(tmp_path, "auto", None)


def test_unreadable_image_names_the_file(tmp_path: Path, phinet_roots: dict[str, Path]) -> None:
    shutil.copytree(phinet_roots["folders"] / "spalling", tmp_path / "spalling")
    victims = sorted((tmp_path / "spalling" / "train" / "spalling").glob("*.jpg"))[:2]
    victims[0].write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match=f"{victims[0]}: cannot read image"):
        PhiNetDataModule(root=str(tmp_path), val_fraction=0).setup("fit")  # header checked at set-up
    whole = victims[1].read_bytes()
    victims[0].write_bytes(whole[: len(whole) // 2])  # a whole header, then cut short
    dm = PhiNetDataModule(root=str(tmp_path), val_fraction=0)
    dm.setup("fit")
    dataset = dm.datasets["train"]["spalling"]
    index = [str(p) for p in dataset.paths].index(str(victims[0]))  # type: ignore[attr-defined]
    with pytest.raises(DataError, match=f"{victims[0]}: cannot decode image"):
        dataset[index]


def test_unknown_class_folder(tmp_path: Path, phinet_roots: dict[str, Path]) -> None:
    shutil.copytree(phinet_roots["folders"] / "material", tmp_path / "material")
    (tmp_path / "material" / "train" / "wood").mkdir()
    with pytest.raises(DataError, match="'wood' is not a class of task 'material'"):
        read_index(tmp_path, "auto", None)


def test_csv_unknown_task_column(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("path,scene,roof\na.png,pixel,flat\n")
    with pytest.raises(DataError, match=r"train.csv: unknown column 'roof'"):
        read_index(tmp_path, "auto", None)


def test_csv_bad_label_and_missing_file(tmp_path: Path, phinet_roots: dict[str, Path]) -> None:
    image = next((phinet_roots["csv"] / "images").iterdir())
    (tmp_path / "train.csv").write_text(f"path,scene,spalling\n{image},pixel,\n{image},,7\n")
    with pytest.raises(DataError, match=r"train.csv:3: label 7 is out of range for task 'spalling'"):
        read_index(tmp_path, "auto", None)
    (tmp_path / "train.csv").write_text(f"path,scene\n{image},sky\n")
    with pytest.raises(DataError, match=r"train.csv:2: 'sky' is not a class of task 'scene'"):
        read_index(tmp_path, "auto", None)
    (tmp_path / "train.csv").write_text("path,scene\nmissing.png,pixel\n")
    with pytest.raises(DataError, match=r"train.csv: image .*missing.png not found"):
        read_index(tmp_path, "auto", None)


def test_csv_blank_cells_are_unlabelled(tmp_path: Path, phinet_roots: dict[str, Path]) -> None:
    image = next((phinet_roots["csv"] / "images").iterdir())
    (tmp_path / "train.csv").write_text(f"path,task1,task3\n{image},object,\n{image},,spalling\n{image},,\n")
    index, tasks = read_index(tmp_path, "auto", None)
    labels = index["train"]["manifest"].labels
    assert tasks == ("scene", "spalling")
    assert labels.shape == (2, len(TASK_NAMES)), "a row without labels is dropped"
    assert labels[0, task_index("scene")] == 1 and labels[0, task_index("spalling")] == IGNORE_INDEX
    assert labels[1, task_index("spalling")] == 1 and labels[1, task_index("scene")] == IGNORE_INDEX


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="data.batch_size"):
        PhiNetDataModule(batch_size=0)
    with pytest.raises(ConfigError, match="data.tasks: unknown task 'roof'"):
        PhiNetDataModule(tasks=["roof"])
    with pytest.raises(ConfigError, match="data.val_fraction"):
        PhiNetDataModule(val_fraction=1.0)


def test_predict_requires_photos(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.predict_root is not set"):
        PhiNetDataModule(root=str(tmp_path)).setup("predict")
    (tmp_path / "notes.txt").write_text("no photos")
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="no images found"):
        PhiNetDataModule(root=str(tmp_path), predict_root=str(tmp_path)).setup("predict")


def test_synthetic_module_writes_once_and_replaces_its_own_set(tmp_path: Path) -> None:
    from crackcascade.synthetic import SyntheticPhiNetDataModule

    root = tmp_path / "synthetic"
    small = {"n_train": 4, "n_test": 2, "synthetic_size": 32}
    dm = SyntheticPhiNetDataModule(root=str(root), tasks=["scene", "spalling"], **small)
    dm.prepare_data()
    written = (root / "scene" / "X_train.npy").stat().st_mtime_ns
    SyntheticPhiNetDataModule(root=str(root), tasks=["scene", "spalling"], **small).prepare_data()
    assert (root / "scene" / "X_train.npy").stat().st_mtime_ns == written, "same settings: not rewritten"
    SyntheticPhiNetDataModule(root=str(root), tasks=["scene"], **small).prepare_data()
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["scene"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "photo.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="holds files that are not crackcascade synthetic data"):
        SyntheticPhiNetDataModule(root=str(foreign), **small).prepare_data()
    assert (foreign / "photo.jpg").exists()


def test_read_image_converts_modes_and_honours_exif(tmp_path: Path) -> None:
    from PIL import Image

    from crackcascade.data.io import read_image

    wide = np.zeros((10, 30, 3), dtype=np.uint8)
    wide[:, :10] = 255  # white on the left
    image = Image.fromarray(wide)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    rotated = read_image(tmp_path / "rotated.jpg")
    assert rotated.shape == (3, 30, 10), "EXIF orientation applied"
    assert rotated[:, :10].float().mean() > 200 and rotated[:, 20:].float().mean() < 50, "white ends up on top"
    Image.fromarray(np.full((5, 7), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(np.zeros((5, 7, 4), dtype=np.uint8)).save(tmp_path / "alpha.png")
    Image.fromarray(np.zeros((5, 7), dtype=np.uint8)).save(tmp_path / "gray.tif")
    for name in ("deep.png", "alpha.png", "gray.tif"):
        decoded = read_image(tmp_path / name)
        assert decoded.shape == (3, 5, 7) and decoded.dtype == torch.uint8, name
    assert int(read_image(tmp_path / "deep.png")[0, 0, 0]) == 40000 >> 8, "16-bit scaled, not clipped"
    with pytest.raises(DataError, match="nothing.png: image file not found"):
        read_image(tmp_path / "nothing.png")
