"""Prediction records in words: one sentence per photo, and the counts of a batch of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crackcascade.labels import CRACK_DAMAGE_TYPES, SCALES

_HUMAN_WORDS: dict[str, str] = {
    "non_collapse": "no collapse",
    "non_spalling": "no spalling",
    "combined": "combined flexural-shear",
}


def human(name: str) -> str:
    """Return a class or task name in plain words (``"non_collapse"`` -> ``"no collapse"``)."""
    return _HUMAN_WORDS.get(name, name.replace("_", " "))


def predicted_class(record: Mapping[str, Any], task: str) -> str | None:
    """The class a record's ``task`` head predicted, or None without that head."""
    entry = (record.get("tasks") or {}).get(task)
    if not entry:
        return None
    return entry.get("class")


def record_scale(record: Mapping[str, Any]) -> str | None:
    """Return the scale of a record: its ``"scale"``, else the scene head's class, else ``None``."""
    return record.get("scale") or predicted_class(record, "scene")


def format_number(value: float, decimals: int) -> str:
    """``value`` with at most ``decimals`` decimals, trailing zeros dropped (``412``, ``7.5``)."""
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def count_of(count: int, noun: str) -> str:
    """``"1 crack"``, ``"3 cracks"``: a count with its noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def size_phrases(measurements: Mapping[str, Any]) -> list[str]:
    """``["total length ... mm", "max width ... mm"]`` of a record's measurements (px without a scale)."""
    length_mm, width_mm = measurements.get("total_length_mm"), measurements.get("max_width_mm")
    if length_mm is not None and width_mm is not None:
        return [f"total length {format_number(length_mm, 1)} mm", f"max width {format_number(width_mm, 2)} mm"]
    parts = []
    if measurements.get("total_length_px") is not None:
        parts.append(f"total length {format_number(measurements['total_length_px'], 0)} px")
    if measurements.get("max_width_px") is not None:
        parts.append(f"max width {format_number(measurements['max_width_px'], 1)} px")
    return parts


def _gate_rejection(gate: Mapping[str, Any]) -> str:
    task = gate.get("task")
    if task == "damage_type":
        return "no crack damage found"
    if task == "damage_state":
        return "no damage found"
    classes = gate.get("classes") or []
    return f"no {' or '.join(human(c) for c in classes)} found" if classes else "no damage found"


def _crack_findings(record: Mapping[str, Any]) -> list[str]:
    damage_type = predicted_class(record, "damage_type")
    crack_type = damage_type if damage_type in CRACK_DAMAGE_TYPES else None
    gate = record.get("gate")
    if gate is not None and not gate.get("passed", True):
        return [_gate_rejection(gate)]
    measurements = record.get("measurements")
    if record.get("segmented") and measurements is not None:
        count = int(measurements.get("count") or 0)
        if count == 0:
            return [f"{human(crack_type)} damage predicted but no crack masked" if crack_type else "no crack masked"]
        parts = [f"{human(crack_type)} cracks"] if crack_type else []
        return [*parts, count_of(count, "crack"), *size_phrases(measurements)]
    # A plain classifier run (or an image the cascade did not segment): the damage-type head only.
    if crack_type:
        return [f"{human(crack_type)} damage"]
    if damage_type is not None:
        return ["no crack damage predicted"]
    return []


def _other_findings(record: Mapping[str, Any]) -> list[str]:
    parts = []
    fraction = (record.get("fractions") or {}).get("spalling")
    if fraction:
        parts.append(f"spalling on {format_number(100 * fraction, 1)}% of the image")
    elif predicted_class(record, "spalling") == "spalling":
        parts.append("spalling")
    collapse = predicted_class(record, "collapse")
    if collapse is not None and collapse != "non_collapse":
        parts.append(human(collapse))
    return parts


def _severity(record: Mapping[str, Any]) -> str | None:
    level = predicted_class(record, "damage_level")
    if level is None:
        level = predicted_class(record, "damage_state")
    if level is None:
        return None
    return human(level) if level in ("undamaged", "damaged") else f"{human(level)} damage"


def describe(record: Mapping[str, Any]) -> str:
    """Summarize one prediction record in one sentence.

    The sentence names the component (only at object scale, the scale the component head is
    labelled for) and the scale, then the crack findings (crack type, count, total length and
    maximum width, in mm when the record was measured with a pixel size), spalling and collapse,
    and ends with the damage level in parentheses. Tasks missing from the record are left out.

    Examples:
        ``"Column, object level: shear cracks, 3 cracks, total length 412 px, max width 7 px (moderate damage)."``,
        ``"Wall, object level: no crack damage found (undamaged)."`` (rejected by the gate),
        ``"Beam, object level: flexural damage predicted but no crack masked (minor damage)."``.

    Args:
        record: Per-image prediction record (see the module docstring).

    Returns:
        The sentence, starting with a capital letter and ending with a full stop.
    """
    scale = record_scale(record)
    component = predicted_class(record, "component")
    subject = []
    if component is not None and scale in (None, "object"):
        material = predicted_class(record, "material")
        name = "component" if component == "other" else human(component)
        subject.append(f"steel {name}" if material == "steel" else name)
    if scale is not None:
        subject.append(f"{human(scale)} level")
    findings = _crack_findings(record) + _other_findings(record)
    severity = _severity(record)
    if not findings:
        findings = ["no damage findings"] if severity is None else []
    text = ", ".join(subject)
    body = ", ".join(findings)
    text = f"{text}: {body}" if text and body else text or body
    if severity is not None:
        text = f"{text} ({severity})" if text else severity
    return text[:1].upper() + text[1:] + "."


# ----------------------------------------------------------------------------- run summary


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Count a run's images overall and per scale.

    Args:
        records: Per-image prediction records.

    Returns:
        ``{"images", "segmented", "gated_out", "with_cracks", "cracks", "total_length_px",
        "total_length_mm", "per_scale": {scale: {same counts}}}``: ``gated_out`` counts images
        the gate rejected, ``with_cracks`` those with at least one measured crack, ``cracks``
        the measured cracks; ``total_length_mm`` sums the records measured in mm (``None`` when
        none was). Scales come in the order pixel, object, structural, then others (``"unknown"``
        for records without a scale).
    """

    def empty() -> dict[str, Any]:
        keys = ("images", "segmented", "gated_out", "with_cracks", "cracks")
        return {**dict.fromkeys(keys, 0), "total_length_px": 0.0, "total_length_mm": None}

    total = empty()
    per_scale: dict[str, dict[str, Any]] = {}
    for record in records:
        scale = record_scale(record) or "unknown"
        for counts in (total, per_scale.setdefault(scale, empty())):
            counts["images"] += 1
            gate = record.get("gate")
            counts["gated_out"] += int(gate is not None and not gate.get("passed", True))
            counts["segmented"] += int(bool(record.get("segmented")))
            measurements = record.get("measurements") or {}
            count = int(measurements.get("count") or 0)
            counts["with_cracks"] += int(count > 0)
            counts["cracks"] += count
            counts["total_length_px"] += float(measurements.get("total_length_px") or 0.0)
            if measurements.get("total_length_mm") is not None:
                counts["total_length_mm"] = (counts["total_length_mm"] or 0.0) + float(measurements["total_length_mm"])
    order = [s for s in SCALES if s in per_scale] + sorted(s for s in per_scale if s not in SCALES)
    total["per_scale"] = {s: per_scale[s] for s in order}
    return total
