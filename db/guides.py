"""Read what a generator needs for one task run, and store the guide it wrote."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import orm

from db.engine import session_scope, upsert_insert
from db.models import HandsOn, Project, Task, TaskRun, utcnow

if TYPE_CHECKING:
    from workers.generators.base import GuideRequest


class RunNotFoundError(LookupError):
    """Raised when a task run no longer exists (its job or project was deleted)."""


def load_request(run_id: int, previous_guide: str | None = None) -> GuideRequest:
    """Build the generator's request for a task run, with its dependencies' guides.

    Raises:
      RunNotFoundError: when the run is gone.
    """
    # Imported here: importing the workers package declares the actors, which import
    # this module; a module-level import would make `import db.guides` first circular.
    from workers.generators.base import Dependency, GuideRequest

    with session_scope() as session:
        run = session.get(
            TaskRun,
            run_id,
            options=[
                orm.joinedload(TaskRun.task).selectinload(Task.depends_on).joinedload(Task.hands_on)
            ],
        )
        if run is None:
            raise RunNotFoundError(f"task run {run_id} does not exist")
        task = run.task
        project_name = session.scalar(sa.select(Project.name).where(Project.id == task.project_id))
        return GuideRequest(
            project_name=project_name or "",
            task_key=task.key,
            task_title=task.title,
            task_description=task.description,
            dependencies=tuple(
                Dependency(dep.title, dep.hands_on.markdown if dep.hands_on else None)
                for dep in task.depends_on
            ),
            previous_guide=previous_guide,
        )


def save_guide(run_id: int, markdown: str, generator: str) -> None:
    """Store (or replace) the guide of the run's task; safe to repeat."""
    with session_scope() as session:
        run = session.execute(
            sa.select(TaskRun.task_id, TaskRun.job_id).where(TaskRun.id == run_id)
        ).one_or_none()
        if run is None:
            raise RunNotFoundError(f"task run {run_id} does not exist")
        now = utcnow()
        values = {
            "task_id": run.task_id,
            "job_id": run.job_id,
            "markdown": markdown,
            "generator": generator,
            "created_at": now,
            "updated_at": now,
        }
        insert = upsert_insert(session, HandsOn).values(**values)
        session.execute(
            insert.on_conflict_do_update(
                index_elements=[HandsOn.task_id],
                set_={
                    "job_id": insert.excluded.job_id,
                    "markdown": insert.excluded.markdown,
                    "generator": insert.excluded.generator,
                    "updated_at": insert.excluded.updated_at,
                },
            )
        )
