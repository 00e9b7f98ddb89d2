"""Shared fixtures: tiny synthetic Phi-Net sets in the three on-disk formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from crackcascade.data.synthetic import write_phinet

ROOT = Path(__file__).resolve().parents[1]
CONF = Path(__file__).resolve().parent / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"
FORMATS = ("arrays", "folders", "csv")


@pytest.fixture(scope="session")
def phinet_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny synthetic Phi-Net root per format (all eight tasks, 64x64 images)."""
    roots = {}
    for fmt in FORMATS:
        root = tmp_path_factory.mktemp(f"phinet_{fmt}")
        write_phinet(root, format=fmt, n_train=8, n_test=4, size=64, seed=1)
        roots[fmt] = root
    return roots


@pytest.fixture(params=FORMATS)
def phinet_format(request: pytest.FixtureRequest, phinet_roots: dict[str, Path]) -> tuple[str, Path]:
    """(format, root) for each of the three formats."""
    return request.param, phinet_roots[request.param]


@pytest.fixture(scope="session")
def crack_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny synthetic crack-mask sets (pixel and object scales) as mask pairs and as COCO."""
    from crackcascade.data.synthetic import write_crack_masks

    roots = {}
    for fmt in ("masks", "coco"):
        root = tmp_path_factory.mktemp(f"cracks_{fmt}")
        write_crack_masks(root, format=fmt, scales=("pixel", "object"), n_train=8, n_test=3, size=80, seed=3)
        roots[fmt] = root
    return roots
