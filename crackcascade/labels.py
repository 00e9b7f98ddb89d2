"""The one table of PEER Hub ImageNet (Phi-Net) tasks, their classes and the crack scales.

Every other module reads task and class names from here; nothing else spells them. The class
order is the official PHI Challenge order, so integer labels from the challenge arrays index
``Task.classes`` directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """One Phi-Net classification task.

    Attributes:
        name: Identifier used in configs, CSV columns and folder names.
        classes: Class names in the official label order (label ``i`` is ``classes[i]``).
        title: Human-readable title.
        aliases: Other accepted spellings of the task name (PHI Challenge ``task1``...).
    """

    name: str
    classes: tuple[str, ...]
    title: str
    aliases: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        """Number of classes of the task."""
        return len(self.classes)

    def class_index(self, name: str) -> int:
        """Return the label index of a class given by any accepted spelling.

        Args:
            name: Class name; case, spaces, hyphens and underscores are ignored, so
                ``"Partial collapse"`` and ``"partial_collapse"`` are the same class.

        Raises:
            KeyError: If the name is not a class of this task.
        """
        key = normalize_name(name)
        for index, cls in enumerate(self.classes):
            if normalize_name(cls) == key:
                return index
        raise KeyError(f"{name!r} is not a class of task {self.name!r} (classes: {', '.join(self.classes)})")


def normalize_name(name: str) -> str:
    """Normalize a task or class spelling for matching: lower case, no spaces, hyphens or underscores.

    So ``"Partial collapse"``, ``"partial-collapse"`` and ``"partial_collapse"`` match, and so do
    ``"Task 5"`` and ``"task5"``.
    """
    return re.sub(r"[\s\-_]+", "", name.strip().lower())


TASKS: tuple[Task, ...] = (
    Task("scene", ("pixel", "object", "structural"), "Scene level", ("task1", "scene_level")),
    Task("damage_state", ("undamaged", "damaged"), "Damage state", ("task2",)),
    Task("spalling", ("non_spalling", "spalling"), "Spalling condition", ("task3", "spalling_condition")),
    Task("material", ("steel", "other"), "Material type", ("task4", "material_type")),
    Task(
        "collapse",
        ("non_collapse", "partial_collapse", "global_collapse"),
        "Collapse mode",
        ("task5", "collapse_mode"),
    ),
    Task("component", ("beam", "column", "wall", "other"), "Component type", ("task6", "component_type")),
    Task("damage_level", ("undamaged", "minor", "moderate", "heavy"), "Damage level", ("task7",)),
    Task("damage_type", ("undamaged", "flexural", "shear", "combined"), "Damage type", ("task8",)),
)
"""The eight Phi-Net tasks in the official order (task1 ... task8)."""

TASK_NAMES: tuple[str, ...] = tuple(task.name for task in TASKS)
"""Task names in the official order; label vectors are indexed in this order."""

SCALES: tuple[str, ...] = TASKS[0].classes
"""The three scene scales; crack-mask sets come one folder per scale."""

MASK_CLASSES: tuple[str, ...] = ("crack", "spalling")
"""Damage classes drawn in segmentation masks; a mask value ``i`` (1-based) is ``MASK_CLASSES[i - 1]``
when a data set carries both (Phi-Net pixel-level palettes), 0 is background."""

CRACK: str = MASK_CLASSES[0]
"""The crack mask class, the default (binary) segmentation target."""

CRACK_DAMAGE_TYPES: tuple[str, ...] = ("flexural", "shear", "combined")
"""Damage-type classes that mean "a crack is present" (the paper's cascade gate)."""

IGNORE_INDEX = -1
"""Label of an image for a task it is not labelled for."""

_BY_KEY: dict[str, Task] = {}
for _task in TASKS:
    for _key in (_task.name, *_task.aliases):
        _BY_KEY[normalize_name(_key)] = _task


def get_task(name: str) -> Task:
    """Return the task named ``name`` (or one of its aliases such as ``task3``).

    Raises:
        KeyError: With the list of known task names, if ``name`` is unknown.
    """
    task = _BY_KEY.get(normalize_name(name))
    if task is None:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
    return task


def task_index(name: str) -> int:
    """Return the position of a task in :data:`TASK_NAMES` (its column in label vectors)."""
    return TASK_NAMES.index(get_task(name).name)


def resolve_tasks(names: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Turn user task names into canonical names in the official order, without duplicates.

    Args:
        names: Task names or aliases; ``None`` means all eight tasks.

    Raises:
        ValueError: If a name is unknown or the list is empty.
    """
    if names is None:
        return TASK_NAMES
    if isinstance(names, str):
        names = [names]
    if len(names) == 0:
        raise ValueError(f"tasks is empty; choose from: {', '.join(TASK_NAMES)}")
    try:
        chosen = {get_task(n).name for n in names}
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    return tuple(n for n in TASK_NAMES if n in chosen)
