"""The job page's dependency graph: columns by depth, readable at 62 tasks, compact at 1,000."""

from __future__ import annotations

from samples import load_sample
from web import graph


def _runs(keys: list[str]) -> list[dict]:
    return [
        {"id": i, "key": key, "title": key.title(), "status": "waiting"}
        for i, key in enumerate(keys)
    ]


def test_the_sample_is_drawn_in_17_columns_with_every_dependency_linked():
    # Given the 62-task sample, whose longest dependency chain is 17 tasks
    tasks = load_sample()["tasks"]
    depends_on = {task["key"]: task.get("depends_on", []) for task in tasks}

    # When it is laid out
    picture = graph.layout(_runs(list(depends_on)), depends_on)

    # Then each task is right of everything it depends on, in 17 columns, with labels
    at = {node.key: node for node in picture.nodes}
    assert len({node.x for node in picture.nodes}) == 17
    assert all(at[dep].x < at[key].x for key, deps in depends_on.items() for dep in deps)
    assert len(picture.links) == sum(len(deps) for deps in depends_on.values())
    assert all(node.label for node in picture.nodes)
    assert max(node.x for node in picture.nodes) + picture.box_width <= picture.width


def test_a_thousand_tasks_become_dots_in_a_picture_of_bounded_size():
    # Given 1,000 tasks: 10 chains of 100
    keys = [f"c{chain}-{step}" for chain in range(10) for step in range(100)]
    depends_on = {key: [] for key in keys}
    for chain in range(10):
        for step in range(1, 100):
            depends_on[f"c{chain}-{step}"] = [f"c{chain}-{step - 1}"]

    # When it is laid out
    picture = graph.layout(_runs(keys), depends_on)

    # Then the boxes are dots without labels (each keeps a tooltip), 100 columns of 10
    assert not any(node.label for node in picture.nodes)
    assert len({node.x for node in picture.nodes}) == 100
    assert picture.width < 2_500 and picture.height < 200
