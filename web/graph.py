"""A job's dependency graph as an SVG picture: tasks in columns by depth, live states.

Each task is a box in the column of its depth (the longest chain of dependencies before
it) and is linked to the tasks it depends on. The server draws the layout once; the
job page's script only changes a box's state class as events arrive (``data-node``).
Sized for reading at 62 tasks, still usable at 1,000: past :data:`LABELLED_TASKS` the
boxes shrink to dots (each keeps its key and title as a tooltip).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from web import queries

#: Up to this many tasks, each box shows its key.
LABELLED_TASKS = 300
#: Box size and spacing, in SVG user units (pixels at 100%).
_BOX = {"width": 96, "height": 22, "column": 124, "row": 30}
_DOT = {"width": 10, "height": 10, "column": 22, "row": 14}
#: Longest key shown in a box, in characters (the tooltip has it whole).
_LABEL_CHARS = 13


@dataclasses.dataclass(frozen=True)
class Node:
    """One task's box: its run, text, state and position."""

    run_id: int
    key: str
    title: str
    status: str
    x: int
    y: int
    label: str | None


@dataclasses.dataclass(frozen=True)
class Graph:
    """What the template draws: boxes, links between them, and the picture's size."""

    nodes: tuple[Node, ...]
    #: ``(x1, y1, x2, y2)``: from a dependency's right edge to its dependent's left edge.
    links: tuple[tuple[int, int, int, int], ...]
    width: int
    height: int
    box_width: int
    box_height: int


def of_job(job: Mapping[str, Any]) -> Graph:
    """Return the layout of a job snapshot's runs, with its project's dependencies."""
    return layout(job_runs(job), queries.dependencies(job["project_id"]))


def job_runs(job: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Return every run of a job snapshot: those released in batches, then the others."""
    released = [run for batch in job["batches"] for run in batch["runs"]]
    return released + list(job.get("unreleased", ()))


def _depths(keys: Sequence[str], depends_on: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Return each task's depth: 0 without dependencies, else 1 + its deepest dependency's."""
    depth: dict[str, int] = {}
    for root in keys:
        stack = [root]
        while stack:
            key = stack[-1]
            pending = [d for d in depends_on.get(key, ()) if d not in depth and d != key]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            deps = [depth[d] for d in depends_on.get(key, ()) if d in depth]
            depth[key] = 1 + max(deps) if deps else 0
    return depth


def _shortened(key: str) -> str:
    """Return ``key`` cut to fit a box, with an ellipsis when cut."""
    return key if len(key) <= _LABEL_CHARS else key[: _LABEL_CHARS - 1] + "…"


def layout(runs: Iterable[Mapping[str, Any]], depends_on: Mapping[str, Sequence[str]]) -> Graph:
    """Lay a job's runs out by depth, in task order within a column.

    ``depends_on`` maps each task key to the keys it depends on (the project's tasks).
    """
    runs = list(runs)
    size = _BOX if len(runs) <= LABELLED_TASKS else _DOT
    depth = _depths([run["key"] for run in runs], depends_on)
    rows: dict[int, int] = {}
    nodes = []
    for run in runs:
        column = depth[run["key"]]
        row = rows.get(column, 0)
        rows[column] = row + 1
        key = run["key"]
        label = (
            None if size is _DOT else key[:_LABEL_CHARS] + ("…" if len(key) > _LABEL_CHARS else "")
        )
        nodes.append(
            Node(
                run_id=run["id"],
                key=key,
                title=run["title"],
                status=run["status"],
                x=4 + column * size["column"],
                y=4 + row * size["row"],
                label=label,
            )
        )
    at = {node.key: node for node in nodes}
    links = tuple(
        (
            at[dep].x + size["width"],
            at[dep].y + size["height"] // 2,
            node.x,
            node.y + size["height"] // 2,
        )
        for node in nodes
        for dep in depends_on.get(node.key, ())
        if dep in at
    )
    columns = 1 + max(depth.values(), default=0)
    return Graph(
        nodes=tuple(nodes),
        links=links,
        width=8 + (columns - 1) * size["column"] + size["width"],
        height=8 + (max(rows.values(), default=1) - 1) * size["row"] + size["height"],
        box_width=size["width"],
        box_height=size["height"],
    )
