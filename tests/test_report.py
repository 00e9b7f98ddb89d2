"""Overlays, one-sentence summaries and the self-contained HTML report (rendered in headless Chromium)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from crackcascade.report import (
    CLASS_COLORS,
    LIGHT_BLUE,
    describe,
    overlay,
    overlay_thumbnail,
    png_data_uri,
    summarize,
    thumbnail,
    write_report,
)

from .conftest import run_chromium

RED = (255, 0, 0)
MAGENTA = (255, 0, 255)
HOSTILE = "photos/<b>&.jpg"


def probs(cls: str, p: float = 0.9) -> dict[str, Any]:
    return {"class": cls, "probability": p, "probabilities": {cls: p}}


def make_record(
    path: str = "photos/a.jpg",
    *,
    scale: str | None = "object",
    component: str | None = "column",
    level: str = "moderate",
    damage_type: str = "shear",
    gate_passed: bool | None = True,
    segmented: bool = True,
    measurements: dict[str, Any] | None = None,
    **extra_tasks: str,
) -> dict[str, Any]:
    tasks = {}
    if scale is not None:
        tasks["scene"] = probs(scale, 0.91)
    if component is not None:
        tasks["component"] = probs(component)
    tasks["damage_level"] = probs(level)
    tasks["damage_type"] = probs(damage_type, 0.83)
    tasks.update({name: probs(cls) for name, cls in extra_tasks.items()})
    record: dict[str, Any] = {"path": path, "height": 30, "width": 40, "tasks": tasks, "scale": scale}
    if gate_passed is not None:
        record["gate"] = {
            "task": "damage_type",
            "classes": ["flexural", "shear", "combined"],
            "threshold": 0.5,
            "score": 0.83 if gate_passed else 0.1,
            "passed": gate_passed,
        }
    else:
        record["gate"] = None
    record["segmented"] = segmented
    if segmented:
        record["classes"] = ["crack"]
        record["measurements"] = measurements or {
            "count": 3,
            "total_length_px": 412.0,
            "max_width_px": 7.0,
            "mean_width_px": 4.1,
            "total_area_px": 1500,
            "px_per_mm": None,
            "components": [],
        }
        record["fractions"] = {"crack": 0.012}
    return record


# ----------------------------------------------------------------------------- overlay


def photo(height: int = 6, width: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_overlay_paints_cracks_red_and_tints_background_light_blue() -> None:
    image = photo()
    mask = np.zeros(image.shape[:2], dtype=np.uint8)
    mask[2, 1:7] = 1  # a one-pixel-wide crack
    out = overlay(image, mask)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert (out[mask == 1] == RED).all()
    background = mask == 0
    assert not np.array_equal(out[background], image[background])
    # Tinting moves every background pixel toward light blue.
    blue = np.asarray(LIGHT_BLUE, dtype=float)
    before = np.abs(image[background].astype(float) - blue).sum(axis=1)
    after = np.abs(out[background].astype(float) - blue).sum(axis=1)
    assert (after <= before).all() and (after < before).any()
    np.testing.assert_array_equal(overlay(image, mask), out)  # deterministic


def test_overlay_alpha_bounds() -> None:
    image = photo()
    mask = np.zeros(image.shape[:2], dtype=np.uint8)
    mask[0, 0] = 1
    untouched = overlay(image, mask, alpha=0.0)
    np.testing.assert_array_equal(untouched[1:], image[1:])
    assert tuple(untouched[0, 0]) == RED
    plain = overlay(image, mask, alpha=1.0)
    assert (plain[1:] == LIGHT_BLUE).all()
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, mask, alpha=1.5)


def test_overlay_spalling_has_its_own_colour() -> None:
    image = photo()
    mask = np.zeros(image.shape[:2], dtype=np.uint8)
    mask[1, 1] = 1
    mask[4, 4:6] = 2
    out = overlay(image, mask, classes=("crack", "spalling"))
    assert tuple(out[1, 1]) == RED
    assert (out[mask == 2] == CLASS_COLORS["spalling"]).all()
    assert CLASS_COLORS["spalling"] != RED and CLASS_COLORS["spalling"] != LIGHT_BLUE


def test_overlay_rejects_bad_masks() -> None:
    image = photo()
    with pytest.raises(ValueError, match=r"mask shape \(5, 8\) does not match image shape \(6, 8\)"):
        overlay(image, np.zeros((5, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="has no class"):
        overlay(image, np.full(image.shape[:2], 255, dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        overlay(image.astype(np.float32), np.zeros(image.shape[:2], dtype=np.uint8))


def test_thumbnail_keeps_aspect_and_never_enlarges() -> None:
    image = np.zeros((300, 1200, 3), dtype=np.uint8)
    small = thumbnail(image, max_side=256)
    assert small.shape == (64, 256, 3) and small.dtype == np.uint8
    tiny = photo()
    np.testing.assert_array_equal(thumbnail(tiny, 256), tiny)


def test_overlay_thumbnail_keeps_thin_cracks_visible() -> None:
    image = np.full((400, 800, 3), 128, dtype=np.uint8)
    mask = np.zeros((400, 800), dtype=np.uint8)
    mask[200, 100:700] = 1  # one pixel wide: plain downscaling would average it away
    small = overlay_thumbnail(image, mask, max_side=100)
    assert small.shape == (50, 100, 3)
    assert (np.all(small == RED, axis=-1).sum(axis=1) >= 70).any()


def test_png_data_uri_round_trips() -> None:
    import base64
    import io

    image = photo()
    uri = png_data_uri(image)
    assert uri.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    np.testing.assert_array_equal(decoded, image)


# ----------------------------------------------------------------------------- describe


def test_describe_cracks_in_pixels() -> None:
    assert (
        describe(make_record())
        == "Column, object level: shear cracks, 3 cracks, total length 412 px, max width 7 px (moderate damage)."
    )


def test_describe_cracks_in_millimetres() -> None:
    measurements = {
        "count": 1,
        "total_length_px": 412.0,
        "max_width_px": 7.0,
        "px_per_mm": 5.0,
        "total_length_mm": 82.4,
        "max_width_mm": 1.4,
    }
    record = make_record(damage_type="combined", level="heavy", measurements=measurements, component="beam")
    assert describe(record) == (
        "Beam, object level: combined flexural-shear cracks, 1 crack, total length 82.4 mm, max width 1.4 mm "
        "(heavy damage)."
    )


def test_describe_gate_rejected() -> None:
    record = make_record(
        component="wall", level="undamaged", damage_type="undamaged", gate_passed=False, segmented=False
    )
    assert describe(record) == "Wall, object level: no crack damage found (undamaged)."


def test_describe_gate_passed_but_nothing_masked() -> None:
    record = make_record(damage_type="flexural", level="minor", measurements={"count": 0, "total_length_px": 0.0})
    assert describe(record) == "Column, object level: flexural damage predicted but no crack masked (minor damage)."


def test_describe_missing_component_head_and_other_tasks() -> None:
    record = make_record(component=None, spalling="spalling", collapse="partial_collapse")
    assert describe(record) == (
        "Object level: shear cracks, 3 cracks, total length 412 px, max width 7 px, spalling, partial collapse "
        "(moderate damage)."
    )
    # No collapse is no finding; the component is named only at object scale (where it is labelled).
    record = make_record(scale="structural", collapse="non_collapse", gate_passed=None, segmented=False)
    assert describe(record) == "Structural level: shear damage (moderate damage)."


def test_describe_plain_classifier_and_bare_records() -> None:
    record = make_record(
        gate_passed=None, segmented=False, damage_type="undamaged", level="undamaged", material="steel"
    )
    assert describe(record) == "Steel column, object level: no crack damage predicted (undamaged)."
    assert describe({"path": "x.jpg"}) == "No damage findings."
    sentence = describe(make_record())
    assert sentence.count(".") == 1 and sentence.endswith(".")  # one sentence


# ----------------------------------------------------------------------------- report


@pytest.fixture
def report(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    overlay_dir = tmp_path / "out" / "overlays"
    overlay_dir.mkdir(parents=True)
    records = [
        make_record("photos/a.jpg"),
        make_record(
            HOSTILE, component="wall", level="undamaged", damage_type="undamaged", gate_passed=False, segmented=False
        ),
        make_record("photos/c.jpg", scale="pixel", component=None, damage_type="flexural", level="minor"),
    ]
    overlays, thumbnails = {}, {}
    for index, record in enumerate(records):
        file = overlay_dir / f"{index}.png"
        Image.fromarray(photo()).save(file)
        overlays[record["path"]] = str(file)
        thumbnails[record["path"]] = np.full((40, 60, 3), MAGENTA, dtype=np.uint8)
    tables = {
        "Ungated vs gated per scale": [
            {"scale": "pixel", "mode": "ungated", "mIoU": 0.51234, "images": 10},
            {"scale": "pixel", "mode": "gated", "mIoU": 0.6, "images": 10},
        ]
    }
    path = write_report(
        tmp_path / "out" / "report.html",
        records,
        title="Run <1>",
        tables=tables,
        overlays=overlays,
        thumbnails=thumbnails,
    )
    return path, records


def test_summarize_counts_per_scale() -> None:
    records = [
        make_record(),
        make_record(gate_passed=False, segmented=False),
        make_record(scale="pixel", measurements={"count": 0, "total_length_px": 0.0}),
        {"path": "bare.jpg"},
    ]
    summary = summarize(records)
    assert (summary["images"], summary["segmented"], summary["gated_out"], summary["with_cracks"]) == (4, 2, 1, 1)
    assert summary["total_length_px"] == 412.0 and summary["total_length_mm"] is None
    assert list(summary["per_scale"]) == ["pixel", "object", "unknown"]
    assert summary["per_scale"]["object"]["images"] == 2


def test_write_report_is_self_contained_and_escaped(report: tuple[Path, list[dict[str, Any]]]) -> None:
    path, records = report
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    for header in ("<th>scale</th>", "<th>mode</th>", "<th>mIoU</th>", "<th>images</th>"):
        assert header in text
    assert '<td class="num">0.512</td>' in text and '<td class="num">0.600</td>' in text
    assert "Ungated vs gated per scale" in text
    for record in records:
        assert describe(record).replace("&", "&amp;") in text
    assert "<b>" not in text and "&lt;b&gt;&amp;.jpg" in text
    assert "Run &lt;1&gt;" in text
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', text)) == 3
    assert 'href="overlays/0.png"' in text and 'href="overlays/1.png"' in text
    assert "http://" not in text and "https://" not in text
    assert "<svg" in text and "<script" not in text
    assert "Run summary" in text and "Per scale" in text


def test_write_report_links_relative_overlays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run" / "overlays").mkdir(parents=True)
    (tmp_path / "run" / "overlays" / "a b#1.png").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    # Relative to the working directory, the way the predict command would pass them.
    path = write_report(Path("run/report.html"), [make_record()], overlays={"photos/a.jpg": "run/overlays/a b#1.png"})
    assert 'href="overlays/a%20b%231.png"' in path.read_text(encoding="utf-8")


def test_write_report_without_records(tmp_path: Path) -> None:
    text = write_report(tmp_path / "empty.html", []).read_text(encoding="utf-8")
    assert "<table>" in text and "</html>" in text


# ----------------------------------------------------------------------------- headless Chromium


def test_report_renders_in_headless_chromium(
    report: tuple[Path, list[dict[str, Any]]], chromium: str, tmp_path: Path
) -> None:
    path, _ = report
    # DOM check: a copy of the report with a tiny script that records how many images decoded.
    probe = path.with_name("probe.html")
    script = (
        "<script>window.addEventListener('load',()=>{const ok=[...document.images]"
        ".filter(i=>i.complete&&i.naturalWidth>0).length;document.body.dataset.decoded=ok;});</script>"
    )
    probe.write_text(path.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    dom = run_chromium(
        chromium, tmp_path / "profile-dom", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()
    ).stdout
    assert "<table>" in dom and "<th>mIoU</th>" in dom and "<svg" in dom
    assert 'data-decoded="3"' in dom, dom[-500:]
    assert "&lt;b&gt;&amp;.jpg" in dom

    # Pixel check: the untouched report's screenshot shows the magenta thumbnails and is not blank.
    shot = tmp_path / "shot.png"
    run_chromium(chromium, tmp_path / "profile-shot", "--window-size=1280,4000", f"--screenshot={shot}", path.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.std() > 5  # not blank
    magenta = np.all(np.abs(pixels.astype(int) - MAGENTA) <= 8, axis=-1).sum()
    assert magenta >= 3 * 30 * 50, magenta  # three 60x40 thumbnails, allowing for scaling


@pytest.mark.parametrize(("count", "words"), [(0, "0 cracks"), (1, "1 crack"), (2, "2 cracks")])
def test_report_detail_line_counts_cracks_in_the_right_number(tmp_path: Path, count: int, words: str) -> None:
    measurements = {"count": count, "total_length_px": 10.0 * count, "max_width_px": 2.0}
    record = make_record(measurements=measurements)
    path = write_report(tmp_path / "report.html", [record])
    text = path.read_text(encoding="utf-8")
    assert re.search(rf"\b{words}\b", text), text
    wrong = "1 cracks" if count == 1 else f"{count} crack "
    assert wrong not in text
