"""Scene attributes resolved into a drawing spec, and rendering: :func:`render_scene`, :func:`sample_for_task`."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from crackcascade.labels import (
    SCALES,
    Task,
    get_task,
    normalize_name,
)
from crackcascade.synthetic.damage import draw_cracks, draw_spalling
from crackcascade.synthetic.distractors import draw_joints, draw_shadow, draw_stains, draw_wires, photometric_jitter
from crackcascade.synthetic.drawing import pick, uniform, uniform_int
from crackcascade.synthetic.layouts import LAYOUTS
from crackcascade.synthetic.scene import (
    ATTRIBUTES,
    BEAM,
    COLLAPSE,
    COLUMN,
    COMBINED,
    COMPONENT,
    COMPONENT_OTHER,
    CONCRETE,
    CRACK_TYPES,
    DAMAGED,
    FLEXURAL,
    HEAVY,
    LEVEL,
    LEVEL_UNDAMAGED,
    MASONRY,
    MATERIAL,
    MATERIAL_OTHER,
    MATERIALS,
    NON_COLLAPSE,
    NON_SPALLED,
    OBJECT,
    SCENE,
    SEVERITY,
    SHEAR,
    SPALL,
    SPALLED,
    STATE,
    STEEL,
    STRUCTURAL,
    TASK_ATTRIBUTE,
    TASK_SCALES,
    TYPE,
    TYPE_UNDAMAGED,
    UNDAMAGED,
    Rng,
    Scene,
    Spec,
    class_name,
)


def check_size(size: object) -> int:
    """Return ``size`` if it is an integer side of at least 32 px, else raise a one-line ValueError."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 32:
        raise ValueError(f"size must be an integer >= 32, got {size!r}")
    return int(size)


def _class_attr(task: Task, value: object, name: str) -> str | None:
    """Canonical class name from a class name (any spelling) or index; None stays None."""
    if value is None:
        return None
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        if 0 <= int(value) < task.num_classes:
            return task.classes[int(value)]
    elif isinstance(value, str):
        with contextlib.suppress(KeyError):
            return class_name(task, value)
    raise ValueError(f"{name}={value!r} is not a class of task {task.name!r} ({', '.join(task.classes)})")


def _bool_attr(value: object, name: str) -> bool | None:
    if value is None or isinstance(value, bool | np.bool_):
        return None if value is None else bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


def _int_attr(value: object, name: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float) or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _material_attr(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        key = normalize_name(value)
        for material in (*MATERIALS, MATERIAL_OTHER):
            if normalize_name(material) == key:
                return material
        raise ValueError(f"material={value!r} is not one of {', '.join((*MATERIALS, MATERIAL_OTHER))}")
    return _class_attr(MATERIAL, value, "material")  # an index of the material task


def _width_range(level: str, size: int) -> tuple[int, int]:
    lo, hi = SEVERITY[level].width
    scale = size / 224.0
    lo_s = max(1, round(lo * scale))
    return lo_s, max(lo_s, round(hi * scale))


def _damage_combos() -> list[tuple[str, str, bool]]:
    """Every consistent (damage level, damage type, spalling) triple of a non-collapsed scene."""
    combos = [(LEVEL_UNDAMAGED, TYPE_UNDAMAGED, False)]
    for level, severity in SEVERITY.items():
        combos += [(level, kind, s) for kind in CRACK_TYPES for s in severity.spalling_with_cracks]
        if severity.spalling_only:
            combos.append((level, TYPE_UNDAMAGED, True))
    return combos


def _resolve(rng: Rng, size: int, attributes: dict[str, Any]) -> Spec:
    """Fill in the attributes not given, consistently with the ones that are."""
    unknown = sorted(set(attributes) - set(ATTRIBUTES))
    if unknown:
        raise TypeError(f"render_scene() got unknown attribute(s) {', '.join(unknown)}; known: {', '.join(ATTRIBUTES)}")
    scale = _class_attr(SCENE, attributes.get("scale"), "scale")
    collapse = _class_attr(COLLAPSE, attributes.get("collapse"), "collapse")
    component = _class_attr(COMPONENT, attributes.get("component"), "component")
    level = _class_attr(LEVEL, attributes.get("damage_level"), "damage_level")
    kind = _class_attr(TYPE, attributes.get("damage_type"), "damage_type")
    spalling = _bool_attr(attributes.get("spalling"), "spalling")
    damaged = _bool_attr(attributes.get("damaged"), "damaged")
    distractors = _bool_attr(attributes.get("distractors"), "distractors")
    n_cracks = _int_attr(attributes.get("n_cracks"), "n_cracks", 0)
    crack_width = _int_attr(attributes.get("crack_width"), "crack_width", 1)
    n_branches = _int_attr(attributes.get("n_branches"), "n_branches", 0)
    material = _material_attr(attributes.get("material"))

    scales = [
        s
        for s in SCALES
        if (component is None or s == OBJECT) and (collapse in (None, NON_COLLAPSE) or s == STRUCTURAL)
    ]
    if scale is None:
        if not scales:
            raise ValueError(f"component={component!r} and collapse={collapse!r} need different scales")
        scale = pick(rng, scales)
    elif scale not in scales:
        raise ValueError(f"scale={scale!r} cannot show component={component!r} / collapse={collapse!r}")

    cracks_wanted = bool(n_cracks) or crack_width is not None or kind in CRACK_TYPES
    if scale != STRUCTURAL:
        collapse = NON_COLLAPSE
    elif collapse is None:
        # A collapsed scene shows rubble, not cracks or spalling, and is heavily damaged.
        crack_free = not cracks_wanted and spalling is not True and damaged is not False
        crack_free = crack_free and level in (None, HEAVY) and kind in (None, TYPE_UNDAMAGED)
        collapse = pick(rng, COLLAPSE.classes if crack_free else (NON_COLLAPSE,))

    if collapse != NON_COLLAPSE:
        if cracks_wanted or spalling or damaged is False or level not in (None, HEAVY):
            raise ValueError(
                f"collapse={collapse!r} is drawn as rubble: heavy damage, no cracks or spalling (got "
                f"damage_level={level!r}, damage_type={kind!r}, spalling={spalling!r}, damaged={damaged!r})"
            )
        level, kind, spalling = HEAVY, TYPE_UNDAMAGED, False
    else:
        combos = _damage_combos()
        levels_ok: set[str] | None = None
        if crack_width is not None and level is None:
            # The label follows the drawn width: levels whose width range holds it, else the nearest.
            ranges = {lv: _width_range(lv, size) for lv in SEVERITY}
            levels_ok = {lv for lv, (lo, hi) in ranges.items() if lo <= crack_width <= hi}
            if not levels_ok:
                levels_ok = {min(ranges, key=lambda lv: min(abs(crack_width - b) for b in ranges[lv]))}
        combos = [
            (lv, kd, sp)
            for lv, kd, sp in combos
            if (level is None or lv == level)
            and (levels_ok is None or lv in levels_ok)
            and (kind is None or kd == kind)
            and (spalling is None or sp == spalling)
            and (damaged is None or (lv != LEVEL_UNDAMAGED) == damaged)
            and (not cracks_wanted or kd in CRACK_TYPES)
            and (n_cracks is None or (n_cracks == 0) == (kd == TYPE_UNDAMAGED))
            and (n_cracks is None or kd != COMBINED or n_cracks >= 2)
        ]
        if not combos:
            raise ValueError(
                "inconsistent damage attributes: "
                + ", ".join(f"{k}={attributes[k]!r}" for k in ATTRIBUTES if attributes.get(k) is not None)
            )
        levels = list(dict.fromkeys(lv for lv, _, _ in combos))
        if scale == STRUCTURAL and LEVEL_UNDAMAGED in levels and len(levels) > 1 and rng.random() < 0.5:
            # Most non-collapsed buildings in Phi-Net look intact.
            level = LEVEL_UNDAMAGED
        else:
            level = pick(rng, levels)
        combos = [c for c in combos if c[0] == level]
        kind = pick(rng, list(dict.fromkeys(kd for _, kd, _ in combos)))
        spalling = pick(rng, [sp for _, kd, sp in combos if kd == kind])

    if scale == OBJECT:
        component = component or pick(rng, COMPONENT.classes)
    if material is None:
        material = pick(rng, MATERIALS)
    elif material == MATERIAL_OTHER:
        material = pick(rng, (CONCRETE, MASONRY))

    families: list[str] = []
    widths: list[int] = []
    branches: list[int] = []
    spalling_area = 0.0
    if level in SEVERITY and collapse == NON_COLLAPSE:
        severity = SEVERITY[level]
        if kind in CRACK_TYPES:
            n = n_cracks if n_cracks is not None else uniform_int(rng, *severity.n_cracks)
            if kind == COMBINED:
                n = max(n, 2)
                families = [FLEXURAL, SHEAR] + [pick(rng, (FLEXURAL, SHEAR)) for _ in range(n - 2)]
                families = [families[i] for i in rng.permutation(n)]
            else:
                families = [kind] * n
            lo, hi = _width_range(level, size)
            widths = [crack_width or uniform_int(rng, lo, hi) for _ in range(n)]
            b_lo, b_hi = severity.branches
            branches = [n_branches if n_branches is not None else uniform_int(rng, b_lo, b_hi) for _ in range(n)]
        if spalling:
            spalling_area = uniform(rng, *severity.spalling_area)
    return Spec(
        size=size,
        scale=scale,
        material=material,
        component=component if scale == OBJECT else None,
        collapse=collapse,
        damage_level=level,
        damage_type=kind,
        spalling=bool(spalling),
        families=families,
        widths=widths,
        branches=branches,
        spalling_area=spalling_area,
        distractors=bool(rng.random() < 0.75) if distractors is None else distractors,
    )


def render_scene(rng: np.random.Generator, size: int = 224, **attributes: Any) -> Scene:
    """Render one scene; attributes not given are drawn at random, consistently with those given.

    Args:
        rng: Source of all randomness; the same generator state gives the same scene.
        size: Image side in pixels (>= 32).
        **attributes: Any of ``scale`` (a scene class), ``material`` (``concrete``, ``masonry``,
            ``steel``, or the material class ``other`` for concrete or masonry), ``component``
            (object scale), ``collapse`` (structural scale), ``damaged`` (bool), ``damage_level``,
            ``damage_type``, ``spalling`` (bool), ``distractors`` (bool), and the expert overrides
            ``n_cracks`` (main cracks), ``crack_width`` (px, every main crack) and ``n_branches``
            (per main crack). Class-valued attributes take any spelling of a class or its index.
            With ``crack_width`` and no ``damage_level``, the level is the one whose width range
            holds the width.

    Returns:
        The scene, with labels for all eight tasks derived from what was drawn.

    Raises:
        TypeError: For an unknown attribute name.
        ValueError: For a bad size, an unknown class, or attributes that contradict each other
            (for example ``damage_level="undamaged"`` with ``damage_type="shear"``).
    """
    size = check_size(size)
    spec = _resolve(rng, size, attributes)
    layout = LAYOUTS[spec.scale](rng, spec)
    image = layout.image
    drawn: list[str] = []
    if spec.distractors and layout.region.any():
        if rng.random() < 0.45:
            image = draw_joints(rng, image, size, layout)
            drawn.append("joints")
        if rng.random() < 0.4:
            image = draw_stains(rng, image, size, layout)
            drawn.append("stains")
    spalling_mask = np.zeros((size, size), dtype=bool)
    if spec.spalling:
        image, spalling_mask = draw_spalling(rng, spec, layout, image)
    layout.image = image
    image, crack_mask, cracks, families = draw_cracks(rng, spec, layout)
    if spec.distractors:
        if rng.random() < 0.4:
            image = draw_shadow(rng, image, size)
            drawn.append("shadow")
        if rng.random() < 0.35:
            image = draw_wires(rng, image, size)
            drawn.append("wires")
    labels = _labels(spec, families, bool(spalling_mask.any()))
    attributes_out: dict[str, object] = {
        "size": size,
        "scale": spec.scale,
        "material": spec.material,
        "component": spec.component,
        "collapse": spec.collapse,
        "damage_level": spec.damage_level,
        "damage_type": spec.damage_type,
        "spalling": spec.spalling,
        "member_axis": round(float(layout.axis), 3),
        "crack_families": families,
        "crack_widths": [int(c.width) for c in cracks],
        "n_main_cracks": len(families),
        "spalling_fraction": round(float(spalling_mask.mean()), 5),
        "distractors": drawn,
        **layout.info,
    }
    return Scene(
        image=photometric_jitter(rng, image),
        crack_mask=crack_mask,
        spalling_mask=spalling_mask,
        cracks=cracks,
        labels=labels,
        attributes=attributes_out,
    )


def _labels(spec: Spec, families: list[str], spalled: bool) -> dict[str, int]:
    """All eight labels, from what was drawn (crack families, spalling) and the layout."""
    flexural, shear = FLEXURAL in families, SHEAR in families
    kind = COMBINED if flexural and shear else FLEXURAL if flexural else SHEAR if shear else TYPE_UNDAMAGED
    damaged = bool(families) or spalled or spec.collapse != NON_COLLAPSE
    level = spec.damage_level if damaged else LEVEL_UNDAMAGED
    if (level == LEVEL_UNDAMAGED) == damaged or kind != spec.damage_type or spalled != spec.spalling:
        raise RuntimeError(f"drawn damage does not match the resolved attributes: {spec}")
    values = {
        SCENE: spec.scale,
        STATE: DAMAGED if damaged else class_name(STATE, UNDAMAGED),
        SPALL: SPALLED if spalled else NON_SPALLED,
        MATERIAL: STEEL if spec.material == STEEL else MATERIAL_OTHER,
        COLLAPSE: spec.collapse,
        COMPONENT: spec.component or COMPONENT_OTHER,
        LEVEL: level,
        TYPE: kind,
    }
    return {task.name: task.class_index(value) for task, value in values.items()}


def sample_for_task(rng: np.random.Generator, task: str, label: int, size: int = 224) -> Scene:
    """Render a scene whose label for ``task`` is ``label``; the rest is random but consistent.

    The scale is drawn from :data:`TASK_SCALES` (the scales where the task is meaningful in
    Phi-Net); damage-type scenes at the object scale show a beam or a column.

    Args:
        rng: Source of randomness.
        task: Task name or alias (``damage_type``, ``task8``...).
        label: Class index of ``task``.
        size: Image side in pixels (>= 32).

    Raises:
        ValueError: For an unknown task, a label out of range or a bad size.
    """
    try:
        spec = get_task(task)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    n_classes = spec.num_classes
    if isinstance(label, bool) or not isinstance(label, int | np.integer) or not 0 <= label < n_classes:
        raise ValueError(f"label {label!r} is not a class index of task {spec.name!r} (0..{n_classes - 1})")
    value = spec.classes[int(label)]
    attrs: dict[str, Any] = {}
    attribute = TASK_ATTRIBUTE[spec.name]
    if spec in (STATE, SPALL):  # binary tasks map onto boolean attributes
        attrs[attribute] = value in (DAMAGED, SPALLED)
    else:
        attrs[attribute] = value
    if spec is not SCENE:
        scales = [s for s in TASK_SCALES[spec.name] if spec is not COMPONENT or s == OBJECT]
        attrs["scale"] = pick(rng, scales)
    if spec is TYPE and attrs["scale"] == OBJECT:
        attrs["component"] = pick(rng, (BEAM, COLUMN))
    scene = render_scene(rng, size, **attrs)
    if scene.labels[spec.name] != label:
        drawn = scene.labels[spec.name]
        raise RuntimeError(f"sample_for_task({spec.name!r}, {label}) rendered label {drawn}")
    return scene
