"""The paper's own figures, recomputed from its counts by the functions that compute ours."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crackcascade.metrics.paper import (
    PAPER_LOCALIZATION,
    PAPER_TABLE2,
    PaperLocalization,
    format_localization,
    format_table2,
    table2_scores,
)


@pytest.mark.parametrize(
    ("scale", "mode", "percent"),
    [
        ("object", "ungated", 26.15),
        ("object", "gated", 59.55),
        ("structural", "ungated", 8.57),
        ("structural", "gated", 49.65),
    ],
)
def test_the_papers_localization_figures_come_back_from_its_counts(scale: str, mode: str, percent: float) -> None:
    assert round(100 * PAPER_LOCALIZATION[scale, mode].accuracy, 2) == percent


def test_gated_localization_divides_by_the_photos_the_gate_passed() -> None:
    counts = PaperLocalization(images=5713, passed=1896, located=1129)
    assert counts.accuracy == pytest.approx(1129 / 1896)
    assert counts.accuracy != pytest.approx(1129 / 5713)  # what a denominator of all photos would give
    assert math.isnan(PaperLocalization(images=10, passed=0, located=0).accuracy)
    with pytest.raises(ValueError, match="located <= passed"):
        PaperLocalization(images=10, passed=3, located=4)


def test_table2_accuracies_are_the_papers() -> None:
    scores = table2_scores(PAPER_TABLE2)
    assert round(100 * scores["non-cracking"], 2) == 95.92
    assert round(100 * scores["cracking"], 3) == 86.505
    assert round(100 * scores["total"], 2) == 91.21


def test_table2_from_a_hand_made_confusion() -> None:
    # 10 crack-free images: 7 predicted non; 5 cracked: 1 predicted non, 2 shear, 2 combined.
    counts = np.array([[7, 1], [2, 0], [1, 2], [0, 2]])
    assert table2_scores(counts) == pytest.approx({"non-cracking": 0.7, "cracking": 0.8, "total": 11 / 15})
    assert math.isnan(table2_scores(np.array([[0, 1], [0, 1], [0, 0], [0, 0]]))["non-cracking"])
    with pytest.raises(ValueError, match="4x2"):
        table2_scores(np.ones((2, 2)))


def test_printed_tables_put_ours_beside_the_papers() -> None:
    text = format_table2(np.array([[7, 1], [2, 0], [1, 2], [0, 2]]), pixel_share=0.95)
    shear = next(line for line in text.splitlines() if line.startswith("shear"))
    assert shear.split() == ["shear", "1", "84", "2", "7,702"]
    assert "0.9592" in text and "0.7000" in text and "0.9500 of the images called pixel level" in text
    rows = {("pixel", "gated"): PaperLocalization(60, 38, 30), ("object", "gated"): PaperLocalization(60, 40, 36)}
    lines = format_localization(rows).splitlines()
    assert lines[2].split() == ["pixel", "gated", "38", "30", "0.7895"]  # no paper figure at pixel level
    assert lines[3].split() == ["object", "gated", "40", "36", "0.9000", "1,896", "1,129", "0.5955"]
