"""Read what a generator needs for one task run, and store the guide it wrote."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import orm

from db.engine import statements_committing_alone, upsert_insert
from db.models import HandsOn, Project, Task, TaskRun, task_dependencies, utcnow

if TYPE_CHECKING:
    from workers.generators.base import GuideRequest


class RunNotFoundError(LookupError):
    """Raised when a task run no longer exists (its job or project was deleted)."""


# Built once: building a statement costs more Python time than running it does.
TASK_OF_RUN = (
    sa.select(Task.id, Task.key, Task.title, Task.description, Project.name)
    .join(TaskRun, TaskRun.task_id == Task.id)
    .join(Project, Project.id == Task.project_id)
    .where(TaskRun.id == sa.bindparam("run_id"))
)
DEPENDENCY_GUIDES = (
    sa.select(Task.title, HandsOn.markdown)
    .join(task_dependencies, task_dependencies.c.depends_on_id == Task.id)
    .outerjoin(HandsOn, HandsOn.task_id == Task.id)
    .where(task_dependencies.c.task_id == sa.bindparam("task_id"))
    .order_by(Task.position)
)


def read_request(
    session: orm.Session, run_id: int, previous_guide: str | None = None
) -> GuideRequest:
    """Build the generator's request for a task run, with its dependencies' guides.

    Two plain queries inside the caller's transaction (the one that marks the run
    started: see :func:`db.progress.start_run`).

    Raises:
      RunNotFoundError: when the run is gone.
    """
    # Imported here: importing the workers package declares the actors, which import
    # this module; a module-level import would make `import db.guides` first circular.
    from workers.generators.base import Dependency, GuideRequest

    connection = session.connection()
    task = connection.execute(TASK_OF_RUN, {"run_id": run_id}).one_or_none()
    if task is None:
        raise RunNotFoundError(f"task run {run_id} does not exist")
    dependencies = connection.execute(DEPENDENCY_GUIDES, {"task_id": task.id}).all()
    return GuideRequest(
        project_name=task.name or "",
        task_key=task.key,
        task_title=task.title,
        task_description=task.description,
        dependencies=tuple(Dependency(title, markdown) for title, markdown in dependencies),
        previous_guide=previous_guide,
    )


def save_guide(run_id: int, markdown: str, generator: str) -> None:
    """Store (or replace) the guide of the run's task; safe to repeat.

    One ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` statement.

    Raises:
      RunNotFoundError: when the run is gone.
    """
    parameters = {"run_id": run_id, "text": markdown, "written_by": generator, "now": utcnow()}
    with statements_committing_alone() as connection:
        upsert = upsert_guide(connection.dialect.name)
        if connection.execute(upsert, parameters).rowcount == 0:
            raise RunNotFoundError(f"task run {run_id} does not exist")


@functools.lru_cache(maxsize=2)
def upsert_guide(dialect_name: str) -> sa.Insert:
    """Return the guide upsert for a dialect (``ON CONFLICT`` is dialect-specific), built once."""
    now = sa.bindparam("now", type_=HandsOn.updated_at.type)
    insert = upsert_insert(dialect_name, HandsOn).from_select(
        ["task_id", "job_id", "markdown", "generator", "created_at", "updated_at"],
        sa.select(
            TaskRun.task_id,
            TaskRun.job_id,
            sa.bindparam("text", type_=HandsOn.markdown.type),
            sa.bindparam("written_by", type_=HandsOn.generator.type),
            now,
            now,
        ).where(TaskRun.id == sa.bindparam("run_id")),
    )
    return insert.on_conflict_do_update(
        index_elements=[HandsOn.task_id],
        set_={
            "job_id": insert.excluded.job_id,
            "markdown": insert.excluded.markdown,
            "generator": insert.excluded.generator,
            "updated_at": insert.excluded.updated_at,
        },
    )
