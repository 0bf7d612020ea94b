"""Read-only look-ups the pages and the API need, as plain data (one short transaction each)."""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from db import jobs
from db.engine import session_scope
from db.models import HandsOn, Job, JobStatus, Project, RunStatus, Task, TaskRun, task_dependencies


def project_data(project_id: int) -> dict[str, Any] | None:
    """Return a project with its tasks (keys, titles, dependencies, guide presence), or None."""
    with session_scope() as session:
        project = session.get(
            Project,
            project_id,
            options=[
                orm.selectinload(Project.tasks).selectinload(Task.depends_on),
                orm.selectinload(Project.tasks).selectinload(Task.hands_on).load_only(HandsOn.id),
            ],
        )
        if project is None:
            return None
        return {
            "id": project.id,
            "name": project.name,
            "description": project.description,
            "created_at": jobs.iso(project.created_at),
            "tasks": [
                {
                    "id": task.id,
                    "key": task.key,
                    "position": task.position,
                    "title": task.title,
                    "description": task.description,
                    "depends_on": [dep.key for dep in task.depends_on],
                    "has_hands_on": task.hands_on is not None,
                }
                for task in project.tasks
            ],
        }


def list_projects() -> list[sa.Row[Any]]:
    """Return every project with its task count, newest first."""
    with session_scope() as session:
        return list(
            session.execute(
                sa.select(Project.id, Project.name, sa.func.count(Task.id).label("tasks"))
                .outerjoin(Task, Task.project_id == Project.id)
                .group_by(Project.id, Project.name)
                .order_by(Project.id.desc())
            ).all()
        )


def jobs_page(page: int, per_page: int) -> dict[str, Any]:
    """Return one page of jobs, newest first, with status and duration."""
    with session_scope() as session:
        total = session.scalar(sa.select(sa.func.count(Job.id))) or 0
        rows = session.execute(
            sa.select(Job, Project.name)
            .join(Project, Project.id == Job.project_id)
            .order_by(Job.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        ).all()
        items = [
            {
                "id": job.id,
                "project_id": job.project_id,
                "project_name": name,
                "status": job.status,
                "done_tasks": job.done_tasks,
                "cancelled_tasks": job.cancelled_tasks,
                "total_tasks": job.total_tasks,
                "created_at": jobs.iso(job.created_at),
                "finished_at": jobs.iso(job.finished_at),
                "duration_s": None
                if job.finished_at is None
                else round((job.finished_at - job.created_at).total_seconds(), 1),
            }
            for job, name in rows
        ]
    pages = max(1, math.ceil(total / per_page))
    return {"items": items, "page": page, "per_page": per_page, "pages": pages, "total": total}


def guide_data(task_id: int) -> dict[str, Any] | None:
    """Return a task and its guide (``markdown`` is None before it is generated), or None."""
    with session_scope() as session:
        row = session.execute(
            sa.select(Task, Project.name, HandsOn)
            .join(Project, Project.id == Task.project_id)
            .outerjoin(HandsOn, HandsOn.task_id == Task.id)
            .where(Task.id == task_id)
        ).one_or_none()
        if row is None:
            return None
        task, project_name, guide = row
        return {
            "task_id": task.id,
            "project_id": task.project_id,
            "project_name": project_name,
            "key": task.key,
            "title": task.title,
            "markdown": None if guide is None else guide.markdown,
            "generator": None if guide is None else guide.generator,
            "job_id": None if guide is None else guide.job_id,
            "updated_at": None if guide is None else jobs.iso(guide.updated_at),
            "usage": None if guide is None else _guide_usage(guide),
        }


def live_run(task_id: int) -> dict[str, int] | None:
    """Return the task's run that a running job is writing (``run_id``, ``job_id``), or None."""
    with session_scope() as session:
        row = session.execute(
            sa.select(TaskRun.id, TaskRun.job_id)
            .join(Job, Job.id == TaskRun.job_id)
            .where(
                TaskRun.task_id == task_id,
                TaskRun.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]),
                Job.status == JobStatus.RUNNING,
            )
            .order_by(TaskRun.id.desc())
            .limit(1)
        ).one_or_none()
    return None if row is None else {"run_id": row.id, "job_id": row.job_id}


def _guide_usage(guide: HandsOn) -> dict[str, Any]:
    """What writing a guide took: model, tokens (estimated or not), latency, cost, prompt."""
    return {
        "model": guide.model,
        "prompt_tokens": guide.prompt_tokens,
        "completion_tokens": guide.completion_tokens,
        "estimated": guide.tokens_estimated,
        "latency_ms": guide.latency_ms,
        "cost": guide.cost,
        "prompt_version": guide.prompt_version,
    }


def project_guides(project_id: int) -> tuple[str, list[tuple[str, str | None]]] | None:
    """Return the project's name and (title, markdown) of every task in order, or None."""
    with session_scope() as session:
        name = session.scalar(sa.select(Project.name).where(Project.id == project_id))
        if name is None:
            return None
        rows = session.execute(
            sa.select(Task.title, HandsOn.markdown)
            .outerjoin(HandsOn, HandsOn.task_id == Task.id)
            .where(Task.project_id == project_id)
            .order_by(Task.position)
        ).all()
        return name, [(title, markdown) for title, markdown in rows]


_dependency = orm.aliased(Task)


def dependencies(project_id: int) -> dict[str, list[str]]:
    """Return each task key of the project with the keys it depends on, in task order."""
    with session_scope() as session:
        rows = session.execute(
            sa.select(Task.key, _dependency.key)
            .outerjoin(task_dependencies, task_dependencies.c.task_id == Task.id)
            .outerjoin(_dependency, _dependency.id == task_dependencies.c.depends_on_id)
            .where(Task.project_id == project_id)
            .order_by(Task.position, _dependency.position)
        ).all()
    depends_on: dict[str, list[str]] = {}
    for key, dependency in rows:
        keys = depends_on.setdefault(key, [])
        if dependency is not None:
            keys.append(dependency)
    return depends_on
