"""Projects and their tasks: the import format, its validation, storage and look-ups.

The import format (also the API's ``POST /api/projects`` body)::

    {"name": "Recipe app", "description": "optional",
     "tasks": [{"key": "repo", "title": "Set up the repository",
                "description": "optional", "depends_on": ["other-key"]}]}

``key`` is optional (default: the task's 1-based position, so ``"depends_on": [3]``
means "depends on the third task"); keys are unique within the project.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

import pipelines
from db import inputs
from db.engine import session_scope
from db.models import Project, Task

#: Longest project name, task key, title and description, in characters.
MAX_NAME, MAX_KEY, MAX_TITLE, MAX_DESCRIPTION = 200, 100, 300, 5_000


class ProjectFormatError(pipelines.PlanError):
    """Raised when an import document is malformed; the message names the field to fix."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A validated task of an import document."""

    key: str
    title: str
    description: str = ""
    depends_on: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ProjectSpec:
    """A validated import document, ready to store."""

    name: str
    description: str
    tasks: tuple[TaskSpec, ...]


def _text(
    value: Any, field: str, *, limit: int, required: bool = True, number_ok: bool = False
) -> str:
    if value is None and not required:
        return ""
    if number_ok and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a key may be a task's position: "depends_on": [3]
    if not isinstance(value, str):
        raise ProjectFormatError(f"{field} must be a string", field=field)
    problem = inputs.text_problem(value)
    if problem:
        raise ProjectFormatError(f"{field} {problem}; remove it", field=field)
    value = value.strip()
    if required and not value:
        raise ProjectFormatError(f"{field} must not be empty", field=field)
    if len(value) > limit:
        raise ProjectFormatError(
            f"{field} is {len(value)} characters long; at most {limit} are allowed", field=field
        )
    return value


def _task(index: int, raw: Any) -> TaskSpec:
    field = f"tasks[{index}]"
    if not isinstance(raw, dict):
        raise ProjectFormatError(f"{field} must be an object with a title", field=field)
    depends_on = raw.get("depends_on", [])
    if not isinstance(depends_on, list):
        raise ProjectFormatError(f"{field}.depends_on must be a list of task keys", field=field)
    return TaskSpec(
        key=_text(raw.get("key", index + 1), f"{field}.key", limit=MAX_KEY, number_ok=True),
        title=_text(raw.get("title"), f"{field}.title", limit=MAX_TITLE),
        description=_text(
            raw.get("description"), f"{field}.description", limit=MAX_DESCRIPTION, required=False
        ),
        depends_on=tuple(  # dict.fromkeys: a repeated dependency counts once
            dict.fromkeys(
                _text(dep, f"{field}.depends_on[{i}]", limit=MAX_KEY, number_ok=True)
                for i, dep in enumerate(depends_on)
            )
        ),
    )


def parse_project(data: Any, *, max_tasks: int) -> ProjectSpec:
    """Validate an import document (already decoded from JSON).

    Raises:
      PlanError: a :class:`ProjectFormatError` for a malformed field, or a graph error
        (cycle, unknown or self dependency, duplicate key, empty, too many tasks).
    """
    if not isinstance(data, dict):
        raise ProjectFormatError("the document must be a JSON object with name and tasks")
    tasks = data.get("tasks")
    if not isinstance(tasks, list):
        raise ProjectFormatError("tasks must be a list of task objects", field="tasks")
    if len(tasks) > max_tasks:
        raise pipelines.TooManyTasksError(
            f"the project has {len(tasks)} tasks; at most {max_tasks} are allowed", field="tasks"
        )
    spec = ProjectSpec(
        name=_text(data.get("name"), "name", limit=MAX_NAME),
        description=_text(
            data.get("description"), "description", limit=MAX_DESCRIPTION, required=False
        ),
        tasks=tuple(_task(i, raw) for i, raw in enumerate(tasks)),
    )
    nodes = [pipelines.TaskNode(task.key, task.depends_on) for task in spec.tasks]
    try:
        pipelines.validate_graph(nodes, max_tasks=max_tasks)
    except pipelines.PlanError as error:
        error.field = error.field or "tasks"
        raise
    return spec


def parse_project_json(text: str | bytes, *, max_tasks: int, max_bytes: int) -> ProjectSpec:
    """Decode and validate an import file of at most ``max_bytes`` bytes.

    Raises:
      PlanError: see :func:`parse_project`; a :class:`ProjectFormatError` when the file
        is too large, nested too deeply or not valid JSON (naming the line and column).
    """
    try:
        data = inputs.load_json(text, max_bytes=max_bytes)
    except inputs.InvalidJsonError as error:
        raise ProjectFormatError(f"the file is {error}") from None
    return parse_project(data, max_tasks=max_tasks)


def create_project(spec: ProjectSpec) -> int:
    """Store a validated project and its tasks in one transaction; return its id."""
    with session_scope() as session:
        project = Project(name=spec.name, description=spec.description)
        tasks = {
            task.key: Task(key=task.key, position=i, title=task.title, description=task.description)
            for i, task in enumerate(spec.tasks)
        }
        for task in spec.tasks:
            tasks[task.key].depends_on = [tasks[dep] for dep in task.depends_on]
        project.tasks = list(tasks.values())
        session.add(project)
        session.flush()
        return project.id


def count_projects() -> int:
    """Return how many projects exist."""
    with session_scope() as session:
        return session.scalar(sa.select(sa.func.count(Project.id))) or 0
