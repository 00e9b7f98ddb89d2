"""The scenes' vocabulary: class names, settings per scale, and the data classes a rendering returns.

Class names are looked up in :mod:`crackcascade.labels`, so that a renamed class fails at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crackcascade.labels import (
    CRACK_DAMAGE_TYPES,
    SCALES,
    Task,
    get_task,
)

# ---------------------------------------------------------------------------------------------
# Names, all looked up in crackcascade.labels so that a renamed class fails here at import time.
# ---------------------------------------------------------------------------------------------

SCENE = get_task("scene")
STATE = get_task("damage_state")
_SPALLING = "spalling"  # both a task and its positive class
SPALL = get_task(_SPALLING)
MATERIAL = get_task("material")
COLLAPSE = get_task("collapse")
COMPONENT = get_task("component")
LEVEL = get_task("damage_level")
TYPE = get_task("damage_type")

UNDAMAGED = "undamaged"  # a class of damage_state, damage_level and damage_type
_OTHER = "other"  # a class of material and component


def class_name(task: Task, name: str) -> str:
    """Return the canonical spelling of class ``name`` of ``task`` (KeyError if it is not one)."""
    return task.classes[task.class_index(name)]


PIXEL = class_name(SCENE, "pixel")
OBJECT = class_name(SCENE, "object")
STRUCTURAL = class_name(SCENE, "structural")
DAMAGED = class_name(STATE, "damaged")
SPALLED = class_name(SPALL, _SPALLING)
NON_SPALLED = class_name(SPALL, "non_spalling")
STEEL = class_name(MATERIAL, "steel")
MATERIAL_OTHER = class_name(MATERIAL, _OTHER)
NON_COLLAPSE = class_name(COLLAPSE, "non_collapse")
PARTIAL_COLLAPSE = class_name(COLLAPSE, "partial_collapse")
GLOBAL_COLLAPSE = class_name(COLLAPSE, "global_collapse")
BEAM = class_name(COMPONENT, "beam")
COLUMN = class_name(COMPONENT, "column")
WALL = class_name(COMPONENT, "wall")
COMPONENT_OTHER = class_name(COMPONENT, _OTHER)
LEVEL_UNDAMAGED = class_name(LEVEL, UNDAMAGED)
MINOR = class_name(LEVEL, "minor")
MODERATE = class_name(LEVEL, "moderate")
HEAVY = class_name(LEVEL, "heavy")
TYPE_UNDAMAGED = class_name(TYPE, UNDAMAGED)
FLEXURAL = class_name(TYPE, "flexural")
SHEAR = class_name(TYPE, "shear")
COMBINED = class_name(TYPE, "combined")
CRACK_TYPES: tuple[str, ...] = tuple(class_name(TYPE, name) for name in CRACK_DAMAGE_TYPES)

# Rendered materials; only steel is a material class, concrete and masonry are both "other".
CONCRETE = "concrete"
MASONRY = "masonry"
MATERIALS: tuple[str, ...] = (CONCRETE, MASONRY, STEEL)
"""Surface materials the generator renders (``material`` label: steel vs other)."""

TASK_SCALES: dict[str, tuple[str, ...]] = {
    SCENE.name: SCALES,
    STATE.name: SCALES,
    SPALL.name: (PIXEL, OBJECT),
    MATERIAL.name: (PIXEL, OBJECT),
    COLLAPSE.name: (STRUCTURAL,),
    COMPONENT.name: (OBJECT,),
    LEVEL.name: (PIXEL, OBJECT),
    TYPE.name: (PIXEL, OBJECT),
}
"""Scales each task's image set is drawn from, as in Phi-Net; a scene is labelled for a task
only if its scale is listed here (the CSV writer leaves the other cells blank)."""

FORMATS: tuple[str, ...] = ("arrays", "folders", "csv")
"""On-disk formats :func:`write_phinet` writes."""

# Crack families: orientation relative to the member axis (degrees) and the half-range a crack's
# mean orientation must stay within. Generation keeps one degree of slack inside these bounds.
FAMILY_CENTRES: dict[str, tuple[float, ...]] = {FLEXURAL: (90.0,), SHEAR: (45.0, 135.0)}
FAMILY_TOLERANCE: dict[str, float] = {FLEXURAL: 15.0, SHEAR: 10.0}


@dataclass(frozen=True)
class _Severity:
    """How a damage level is drawn; widths are in pixels at 224 x 224 and scale with the size."""

    n_cracks: tuple[int, int]
    width: tuple[int, int]
    branches: tuple[int, int]
    spalling_area: tuple[float, float]  # fraction of the damageable area
    spalling_with_cracks: tuple[bool, ...]
    spalling_only: bool  # whether a spalling patch without cracks is this level


# Minor cracks are 2-3 px at 224 (hairline, ~0.3-0.6 mm on a close-up); 1 px lines vanish in the
# 128-160 px inputs a CPU demo trains on, which made "minor" indistinguishable from undamaged.
SEVERITY: dict[str, _Severity] = {
    MINOR: _Severity((1, 2), (2, 3), (0, 1), (0.0, 0.0), (False,), False),
    MODERATE: _Severity((2, 4), (3, 5), (0, 2), (0.015, 0.04), (False, True), True),
    HEAVY: _Severity((4, 7), (5, 9), (1, 3), (0.06, 0.15), (True,), False),
}

Rng = np.random.Generator
Point = tuple[float, float]
Array = np.ndarray

ATTRIBUTES = (
    "scale",
    "material",
    "component",
    "collapse",
    "damaged",
    "damage_level",
    "damage_type",
    "spalling",
    "n_cracks",
    "crack_width",
    "n_branches",
    "distractors",
)

# Which render_scene attribute carries each task's label (sample_for_task).
TASK_ATTRIBUTE: dict[str, str] = {
    SCENE.name: "scale",
    STATE.name: "damaged",
    SPALL.name: "spalling",
    MATERIAL.name: "material",
    COLLAPSE.name: "collapse",
    COMPONENT.name: "component",
    LEVEL.name: "damage_level",
    TYPE.name: "damage_type",
}

# ---------------------------------------------------------------------------------------------
# Public data classes
# ---------------------------------------------------------------------------------------------


@dataclass
class CrackInfo:
    """One drawn crack polyline (a main crack or one of its branches).

    Attributes:
        points: ``(K, 2)`` float ``x, y`` polyline in pixels (``y`` points down).
        width: Drawn width in pixels: the true width of the crack.
        length: Polyline length in pixels.
        angle: Length-weighted mean orientation in degrees in ``[0, 180)``; 0 is the image x axis,
            angles grow clockwise on screen because ``y`` points down.
    """

    points: np.ndarray = field(repr=False)
    width: float
    length: float
    angle: float


@dataclass
class Scene:
    """One rendered image with its ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB image.
        crack_mask: ``(H, W)`` bool, True on crack pixels (the polylines at their true widths).
        spalling_mask: ``(H, W)`` bool, True on spalled pixels.
        cracks: Every drawn crack polyline, main cracks and branches.
        labels: Class index for each of the eight tasks (``labels.TASK_NAMES``). Tasks without a
            meaning at the scene's scale still get a consistent value (component ``other`` off the
            object scale, non-collapse off the structural scale); see :data:`TASK_SCALES`.
        attributes: What was rendered (JSON-serializable): scale, material, component, collapse,
            damage level and type, member axis, crack widths, distractors, layout variant...
    """

    image: np.ndarray = field(repr=False)
    crack_mask: np.ndarray = field(repr=False)
    spalling_mask: np.ndarray = field(repr=False)
    cracks: list[CrackInfo]
    labels: dict[str, int]
    attributes: dict[str, object]


@dataclass
class Spec:
    """Resolved scene attributes: everything render_scene draws, decided before drawing."""

    size: int
    scale: str
    material: str
    component: str | None
    collapse: str
    damage_level: str
    damage_type: str
    spalling: bool
    families: list[str]  # one per main crack
    widths: list[int]  # one per main crack
    branches: list[int]  # one per main crack
    spalling_area: float
    distractors: bool


@dataclass
class Layout:
    """A drawn scene before damage: float image, where damage may go, and the member axis."""

    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    region: np.ndarray  # (H, W) bool
    axis: float  # member axis in degrees, image convention
    grain: float  # texture scale relative to a close-up (1.0)
    info: dict[str, object] = field(default_factory=dict)
