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
