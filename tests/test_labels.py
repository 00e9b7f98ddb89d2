from __future__ import annotations

import pytest

from crackcascade.labels import (
    CRACK_DAMAGE_TYPES,
    SCALES,
    TASK_NAMES,
    TASKS,
    get_task,
    resolve_tasks,
    task_index,
)


def test_official_task_order_and_classes() -> None:
    assert TASK_NAMES == (
        "scene",
        "damage_state",
        "spalling",
        "material",
        "collapse",
        "component",
        "damage_level",
        "damage_type",
    )
    assert [t.num_classes for t in TASKS] == [3, 2, 2, 2, 3, 4, 4, 4]
    assert get_task("scene").classes == ("pixel", "object", "structural") == SCALES
    assert get_task("damage_type").classes[0] == "undamaged"
    assert all(c in get_task("damage_type").classes for c in CRACK_DAMAGE_TYPES)


@pytest.mark.parametrize(
    ("alias", "name"), [("task1", "scene"), ("Task 5", "collapse"), ("Damage-Type", "damage_type")]
)
def test_aliases_resolve(alias: str, name: str) -> None:
    assert get_task(alias).name == name


def test_class_index_ignores_spelling() -> None:
    collapse = get_task("collapse")
    assert collapse.class_index("Partial collapse") == 1
    assert collapse.class_index("global-collapse") == 2
    with pytest.raises(KeyError, match="not a class of task 'collapse'"):
        collapse.class_index("crumbled")


def test_resolve_tasks_orders_and_dedups() -> None:
    assert resolve_tasks(["task8", "scene", "scene"]) == ("scene", "damage_type")
    assert resolve_tasks(None) == TASK_NAMES
    assert task_index("damage_type") == 7
    with pytest.raises(ValueError, match="unknown task 'roof'"):
        resolve_tasks(["roof"])
    with pytest.raises(ValueError, match="empty"):
        resolve_tasks([])
