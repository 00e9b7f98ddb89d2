from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from crackcascade.measure import CrackComponent, CrackMeasurements, measure_cracks
from crackcascade.synthetic import render_scene


def _axial_difference(a: float, b: float) -> float:
    """Smallest difference between two orientations in degrees (180-periodic)."""
    return abs((a - b + 90.0) % 180.0 - 90.0)


def _bar(width: int, length: int, shape: tuple[int, int] = (60, 160), top: int = 20, left: int = 20) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + width, left : left + length] = True
    return mask


def _only(mask: np.ndarray | torch.Tensor, **kwargs: object) -> CrackComponent:
    result = measure_cracks(mask, **kwargs)
    assert result.count == 1
    return result.components[0]


# ---------------------------------------------------------------------------------------------
# Against the synthetic generator's truth
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", ["flexural", "shear"])
@pytest.mark.parametrize("width", [2, 3, 5, 8, 12, 20])
def test_single_synthetic_crack_matches_the_generator_truth(width: int, kind: str, seed: int) -> None:
    # One unbranched crack, nothing else in the mask, drawn by the generator's own crack code.
    scene = render_scene(
        np.random.default_rng(seed),
        512,
        scale="pixel",
        material="concrete",
        damage_type=kind,
        n_cracks=1,
        crack_width=width,
        n_branches=0,
        distractors=False,
    )
    assert len(scene.cracks) == 1
    truth = scene.cracks[0]
    assert truth.width == width and 150 <= truth.length <= 450

    crack = _only(scene.crack_mask)
    assert abs(crack.length_px - truth.length) / truth.length <= 0.05
    assert abs(crack.mean_width_px - width) <= 1.0
    assert abs(crack.max_width_px - width) <= 1.0
    assert crack.max_width_px >= crack.mean_width_px - 1e-9
    assert _axial_difference(crack.orientation_deg, truth.angle) <= 5.0
    assert crack.area_px == int(scene.crack_mask.sum())


# ---------------------------------------------------------------------------------------------
# Hand-made shapes with known answers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 3, 6, 11])
def test_horizontal_and_vertical_bars_are_measured_exactly(width: int) -> None:
    mask = _bar(width, 120)
    horizontal = _only(mask, min_area=1)
    assert horizontal.length_px == pytest.approx(120.0, abs=0.01)
    assert horizontal.mean_width_px == pytest.approx(width, abs=0.01)
    assert horizontal.max_width_px == pytest.approx(width, abs=0.01)
    assert _axial_difference(horizontal.orientation_deg, 0.0) < 0.01
    assert horizontal.area_px == width * 120
    assert horizontal.bbox == (20, 20, 140, 20 + width)

    vertical = _only(mask.T, min_area=1)
    assert vertical.length_px == pytest.approx(120.0, abs=0.01)
    assert vertical.mean_width_px == pytest.approx(width, abs=0.01)
    assert vertical.orientation_deg == pytest.approx(90.0, abs=0.01)
    assert vertical.bbox == (20, 20, 20 + width, 140)


def test_diagonal_lines_follow_the_crackinfo_angle_convention() -> None:
    # Down-right on screen (y points down) is +45 degrees, down-left is 135, as CrackInfo.angle.
    down_right = _only(np.eye(100, dtype=bool))
    assert down_right.orientation_deg == pytest.approx(45.0, abs=0.5)
    assert down_right.length_px == pytest.approx(100 * math.sqrt(2), rel=0.01)
    # A one-pixel 8-connected diagonal line covers 1/sqrt(2) px^2 per unit of length.
    assert down_right.mean_width_px == pytest.approx(1 / math.sqrt(2), abs=0.05)
    down_left = _only(np.fliplr(np.eye(100, dtype=bool)))
    assert down_left.orientation_deg == pytest.approx(135.0, abs=0.5)
    assert down_left.length_px == pytest.approx(down_right.length_px)


def test_thick_oblique_band_width_is_its_thickness() -> None:
    rows, cols = np.mgrid[0:200, 0:200]
    # Pixel centres within 3 px of the line y = x / 2: a band about 6 px thick at 26.6 degrees.
    across = np.abs((rows + 0.5) - (cols + 0.5) / 2) / math.hypot(1.0, 0.5)
    mask = (across <= 3.0) & (cols >= 20) & (cols < 180)
    crack = _only(mask)
    assert crack.orientation_deg == pytest.approx(math.degrees(math.atan(0.5)), abs=1.0)
    assert crack.mean_width_px == pytest.approx(6.0, abs=0.5)
    assert crack.length_px == pytest.approx(160 * math.hypot(1.0, 0.5), rel=0.03)


def test_local_widening_sets_the_max_width_and_weighs_in_the_mean() -> None:
    mask = _bar(4, 200, shape=(60, 240), top=28, left=10)
    mask[25:35, 100:140] = True  # 40 of the 200 px are 10 px wide
    crack = _only(mask)
    assert crack.length_px == pytest.approx(200.0, abs=0.5)
    assert crack.max_width_px == pytest.approx(10.0, abs=0.5)
    assert crack.mean_width_px == pytest.approx((160 * 4 + 40 * 10) / 200, abs=0.3)


def test_a_bump_on_the_edge_adds_no_branch_and_does_not_set_the_max_width() -> None:
    mask = _bar(5, 120)
    mask[18:20, 80] = True  # two extra pixels on one column: a 7 px spike, which thinning follows
    crack = _only(mask)
    assert crack.length_px == pytest.approx(120.0, abs=0.5)
    assert crack.max_width_px <= 5.5
    assert crack.mean_width_px == pytest.approx(5.0, abs=0.1)


def test_branching_crack_is_one_component_whose_length_includes_the_branch() -> None:
    mask = np.zeros((200, 200), dtype=bool)
    mask[98:103, 20:180] = True  # 160 px along row 100
    mask[20:100, 98:103] = True  # a branch from row 20 down to it: 80 px to its centre line
    crack = _only(mask)
    assert crack.length_px == pytest.approx(160 + 80, rel=0.02)
    assert crack.mean_width_px == pytest.approx(5.0, abs=0.2)
    assert _axial_difference(crack.orientation_deg, 0.0) < 45.0  # mostly horizontal


def test_crack_running_off_the_image_is_measured_to_the_border() -> None:
    mask = np.zeros((30, 60), dtype=bool)
    mask[10:15, :50] = True
    crack = _only(mask)
    assert crack.length_px == pytest.approx(50.0, abs=0.01)
    assert crack.mean_width_px == pytest.approx(5.0, abs=0.01)
    assert crack.bbox == (0, 10, 50, 15)


def test_blobs_are_as_long_as_they_are_wide() -> None:
    pixel = np.zeros((9, 9), dtype=bool)
    pixel[4, 4] = True
    single = _only(pixel, min_area=1)
    assert (single.length_px, single.mean_width_px, single.max_width_px, single.area_px) == (1.0, 1.0, 1.0, 1)
    square = np.zeros((20, 20), dtype=bool)
    square[5:11, 5:11] = True
    blob = _only(square)
    assert blob.length_px == pytest.approx(6.0, abs=0.3)
    assert blob.mean_width_px == pytest.approx(6.0, abs=0.3)


# ---------------------------------------------------------------------------------------------
# Components, totals and filtering
# ---------------------------------------------------------------------------------------------


def test_separate_components_are_measured_separately_and_totalled() -> None:
    mask = np.zeros((80, 200), dtype=bool)
    mask[50:57, 20:70] = True  # 7 x 50, lower but first in x
    mask[10:13, 40:140] = True  # 3 x 100, upper: first in raster order
    result = measure_cracks(mask)
    assert result.count == 2 == len(result.components)
    upper, lower = result.components
    assert (upper.index, lower.index) == (1, 2)
    assert upper.bbox == (40, 10, 140, 13) and lower.bbox == (20, 50, 70, 57)
    assert upper.length_px == pytest.approx(100.0, abs=0.01) and upper.mean_width_px == pytest.approx(3.0, abs=0.01)
    assert lower.length_px == pytest.approx(50.0, abs=0.01) and lower.mean_width_px == pytest.approx(7.0, abs=0.01)
    assert result.total_length_px == pytest.approx(upper.length_px + lower.length_px)
    assert result.total_area_px == 300 + 350 == int(mask.sum())
    assert result.max_width_px == pytest.approx(7.0, abs=0.01)
    assert result.mean_width_px == pytest.approx((3 * 100 + 7 * 50) / 150, abs=0.01)


def test_connectivity_decides_whether_diagonal_touches_join() -> None:
    mask = np.zeros((40, 80), dtype=bool)
    mask[10:13, 5:35] = True
    mask[13:16, 35:70] = True  # touches the first bar only at a corner
    assert measure_cracks(mask, connectivity=2).count == 1
    assert measure_cracks(mask, connectivity=1).count == 2


def test_min_area_drops_small_components() -> None:
    mask = _bar(3, 60, shape=(40, 120), top=5, left=5)
    mask[20:22, 20:22] = True  # 4 px
    mask[30:33, 50:53] = True  # 9 px
    assert measure_cracks(mask).count == 1  # default min_area=10
    kept = measure_cracks(mask, min_area=9)
    assert kept.count == 2 and sorted(c.area_px for c in kept.components) == [9, 180]
    assert measure_cracks(mask, min_area=4).count == 3
    assert measure_cracks(mask, min_area=181).count == 0


def test_pinholes_are_filled_for_measuring_but_not_counted_as_area() -> None:
    mask = _bar(7, 120)
    mask[23, 50] = mask[22, 80] = mask[24, 100] = False
    crack = _only(mask)
    assert crack.length_px == pytest.approx(120.0, abs=0.5)
    assert crack.mean_width_px == pytest.approx(7.0, abs=0.1)
    assert crack.area_px == 7 * 120 - 3


def test_large_enclosed_regions_are_not_filled() -> None:
    mask = np.zeros((60, 60), dtype=bool)
    mask[10:50, 10:50] = True
    mask[13:47, 13:47] = False  # a closed crack 3 px wide around 34 x 34 px of intact surface
    crack = _only(mask)
    assert crack.area_px == 40 * 40 - 34 * 34
    assert crack.mean_width_px == pytest.approx(3.0, abs=0.3)
    assert crack.length_px == pytest.approx(4 * 37, rel=0.06)  # its centre line, corners rounded


def test_empty_mask_has_no_components_and_zero_totals() -> None:
    for mask in (np.zeros((32, 48), dtype=bool), _bar(2, 4)):  # nothing, or only noise
        result = measure_cracks(mask, px_per_mm=5.0)
        assert result.components == () and result.count == 0
        assert result.total_length_px == result.max_width_px == result.mean_width_px == 0.0
        assert result.total_area_px == 0
        as_dict = result.to_dict()
        assert as_dict["components"] == [] and as_dict["total_length_mm"] == 0.0
        assert json.loads(json.dumps(as_dict)) == as_dict


# ---------------------------------------------------------------------------------------------
# Units and serialization
# ---------------------------------------------------------------------------------------------


def test_mm_values_are_the_pixel_values_divided_by_the_scale() -> None:
    mask = _bar(4, 100)
    mask[40:43, 30:90] = True
    pixels = measure_cracks(mask)
    scaled = measure_cracks(mask, px_per_mm=8.0)
    assert scaled.px_per_mm == 8.0 and pixels.px_per_mm is None
    assert scaled.components == pixels.components  # the scale changes no pixel measurement
    out = scaled.to_dict()
    assert out["px_per_mm"] == 8.0
    assert out["total_length_mm"] == round(scaled.total_length_px / 8.0, 4)
    assert out["max_width_mm"] == round(scaled.max_width_px / 8.0, 4)
    assert out["mean_width_mm"] == round(scaled.mean_width_px / 8.0, 4)
    assert out["total_area_mm2"] == round(scaled.total_area_px / 64.0, 4)
    for component, row in zip(scaled.components, out["components"], strict=True):
        assert row == component.to_dict(8.0)
        assert row["length_mm"] == round(component.length_px / 8.0, 4)
        assert row["mean_width_mm"] == round(component.mean_width_px / 8.0, 4)
        assert row["max_width_mm"] == round(component.max_width_px / 8.0, 4)
        assert row["area_mm2"] == round(component.area_px / 64.0, 4)
    bar = scaled.components[0].to_dict(8.0)
    assert (bar["length_mm"], bar["mean_width_mm"], bar["area_mm2"]) == (12.5, 0.5, 6.25)


def test_without_a_scale_there_are_no_mm_values() -> None:
    result = measure_cracks(_bar(4, 100))
    out = result.to_dict()
    assert out["px_per_mm"] is None
    assert not any(key.endswith(("_mm", "_mm2")) for key in out if key != "px_per_mm")
    assert not any(key.endswith(("_mm", "_mm2")) for key in out["components"][0])
    assert set(result.components[0].to_dict()) == {
        "index",
        "length_px",
        "mean_width_px",
        "max_width_px",
        "orientation_deg",
        "area_px",
        "bbox",
    }


def test_to_dict_is_plain_json_with_rounded_values() -> None:
    scene = render_scene(
        np.random.default_rng(3), 256, scale="pixel", damage_type="shear", n_cracks=2, distractors=False
    )
    result = measure_cracks(scene.crack_mask, px_per_mm=3.7)
    out = result.to_dict()
    assert json.loads(json.dumps(out)) == out

    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or type(value) in (int, float)

    assert plain(out)
    for row in out["components"]:
        assert row["length_px"] == round(row["length_px"], 3)
        assert row["length_mm"] == round(row["length_mm"], 4)
        assert 0.0 <= row["orientation_deg"] < 180.0


def test_results_are_frozen() -> None:
    result = measure_cracks(_bar(3, 50))
    assert isinstance(result, CrackMeasurements)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.count = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.components[0].length_px = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float32, torch.int64])
def test_torch_tensors_give_the_numpy_result(dtype: torch.dtype) -> None:
    mask = _bar(5, 90)
    mask[40:44, 100:150] = True
    expected = measure_cracks(mask, px_per_mm=2.0)
    assert measure_cracks(torch.from_numpy(mask).to(dtype), px_per_mm=2.0) == expected


def test_any_non_zero_value_is_crack() -> None:
    mask = _bar(5, 90).astype(np.uint8) * 255
    mask[22, 40] = 1
    assert measure_cracks(mask) == measure_cracks(mask != 0)


@pytest.mark.parametrize(
    ("mask", "kwargs", "message"),
    [
        (np.zeros((2, 8, 8), dtype=bool), {}, "2-D"),
        (np.zeros(8, dtype=bool), {}, "2-D"),
        (torch.zeros(1, 8, 8), {}, "2-D"),
        (np.zeros((8, 8), dtype=bool), {"px_per_mm": 0}, "px_per_mm"),
        (np.zeros((8, 8), dtype=bool), {"px_per_mm": -2.5}, "px_per_mm"),
        (np.zeros((8, 8), dtype=bool), {"px_per_mm": float("nan")}, "px_per_mm"),
        (np.zeros((8, 8), dtype=bool), {"px_per_mm": float("inf")}, "px_per_mm"),
        (np.zeros((8, 8), dtype=bool), {"min_area": -1}, "min_area"),
        (np.zeros((8, 8), dtype=bool), {"connectivity": 3}, "connectivity"),
    ],
)
def test_bad_input_raises_a_one_line_value_error(mask: object, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        measure_cracks(mask, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_component_to_dict_rejects_a_bad_scale() -> None:
    component = measure_cracks(_bar(3, 50)).components[0]
    with pytest.raises(ValueError, match="px_per_mm"):
        component.to_dict(0.0)
