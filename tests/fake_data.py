"""The tiny fake data the tests share, made by this one script (the fixtures in conftest call it).

``python -m tests.fake_data OUT`` writes every set under ``OUT`` to look at: Phi-Net in its three
formats (all eight tasks, 64 px) and crack masks at two scales as image/mask pairs and as COCO.
Everything is drawn by crackcascade's seeded synthetic generator, so the files are the same on
every machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from crackcascade.synthetic import write_crack_masks, write_phinet

PHINET_FORMATS = ("arrays", "folders", "csv")
MASK_FORMATS = ("masks", "coco")


def phinet_set(root: Path, fmt: str) -> Path:
    """A tiny Phi-Net root: 8 training and 4 test images per task, 64x64."""
    write_phinet(root, format=fmt, n_train=8, n_test=4, size=64, seed=1)
    return root


def crack_set(root: Path, fmt: str) -> Path:
    """A tiny crack-mask root: pixel and object scales, 8 training and 3 test photos each, 80x80."""
    write_crack_masks(root, format=fmt, scales=("pixel", "object"), n_train=8, n_test=3, size=80, seed=3)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Write every fake set under one folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    out = parser.parse_args(argv).out
    for fmt in PHINET_FORMATS:
        print(phinet_set(out / f"phinet_{fmt}", fmt))
    for fmt in MASK_FORMATS:
        print(crack_set(out / f"cracks_{fmt}", fmt))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
