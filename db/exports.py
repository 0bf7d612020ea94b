"""Read a project's guides for writing them out as files (``handson export``)."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from db.engine import session_scope
from db.models import HandsOn, Project, Task


@dataclasses.dataclass(frozen=True)
class ExportedTask:
    """One task of the project, with its guide when one was generated."""

    position: int
    key: str
    title: str
    markdown: str | None


@dataclasses.dataclass(frozen=True)
class ExportedProject:
    """A project's name and its tasks in order."""

    name: str
    tasks: list[ExportedTask]


def read_project(project_id: int) -> ExportedProject | None:
    """Return the project's name and every task with its guide (None: no such project)."""
    with session_scope() as session:
        name = session.scalar(sa.select(Project.name).where(Project.id == project_id))
        if name is None:
            return None
        rows = session.execute(
            sa.select(Task.position, Task.key, Task.title, HandsOn.markdown)
            .outerjoin(HandsOn, HandsOn.task_id == Task.id)
            .where(Task.project_id == project_id)
            .order_by(Task.position)
        ).all()
    return ExportedProject(name, [ExportedTask(*row) for row in rows])
