"""Write a planned job in one transaction, and read a job back as a snapshot."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

import errors
import pipelines
from db import events, usage
from db.dispatch import DispatchSpec
from db.engine import session_scope
from db.models import (
    Batch,
    BatchStatus,
    Job,
    Project,
    Task,
    TaskRun,
    task_dependencies,
    utcnow,
)


class NotFoundError(errors.NotFoundError):
    """Raised when a project or job id does not exist; check the id."""


@dataclasses.dataclass(frozen=True)
class CreatedJob:
    """A job just written: its id and the batch to dispatch first."""

    job_id: int
    first_batch_id: int
    batches: int
    pipelines: int
    #: What to send for the first batch, once the job is committed.
    first_dispatch: DispatchSpec


def create_job(
    project_id: int,
    *,
    batch_size: int,
    max_batch_size: int,
    max_tasks: int,
    max_retries: int | None = None,
    session: orm.Session | None = None,
) -> CreatedJob:
    """Validate and plan a project, then write its job, batches and task runs at once.

    Batch 1 is written as running; the caller dispatches it after this commits. With
    ``session``, the job is written in that session's transaction (a scheduler claims
    a due time and writes its job in one transaction).

    Raises:
      NotFoundError: when the project does not exist.
      pipelines.PlanError: when the batch size or the project's graph is invalid.
    """
    pipelines.check_batch_size(batch_size, maximum=max_batch_size)
    if session is None:
        with session_scope() as session:
            return _write_job(session, project_id, batch_size, max_tasks, max_retries)
    return _write_job(session, project_id, batch_size, max_tasks, max_retries)


# Built once: building a statement costs more Python time than running it does.
_dependency = orm.aliased(Task)
#: The project's tasks in order, one row per dependency (NULL when it has none).
_TASKS_OF_PROJECT = (
    sa.select(Task.id, Task.key, _dependency.key.label("depends_on"))
    .outerjoin(task_dependencies, task_dependencies.c.task_id == Task.id)
    .outerjoin(_dependency, _dependency.id == task_dependencies.c.depends_on_id)
    .where(Task.project_id == sa.bindparam("project_id"))
    .order_by(Task.position, _dependency.position)
)


def _write_job(
    session: orm.Session, project_id: int, batch_size: int, max_tasks: int, max_retries: int | None
) -> CreatedJob:
    """Plan the project and insert its job, batches and runs: five statements in all.

    SQLAlchemy Core rather than the ORM's unit of work: the time between a submit and
    its first message is part of every job's wall time.
    """
    connection = session.connection()
    task_ids, nodes = _read_graph(connection, project_id)
    pipelines.validate_graph(nodes, max_tasks=max_tasks)
    plan = pipelines.plan_batches(nodes, batch_size)

    now = utcnow()
    job_id = connection.execute(
        sa.insert(Job).returning(Job.id),
        {
            "project_id": project_id,
            "batch_size": batch_size,
            "max_retries": max_retries,
            "total_tasks": len(nodes),
            "total_batches": len(plan),
            "current_batch": 1,
        },
    ).scalar_one()
    first = {
        "status": BatchStatus.RUNNING,
        "started_at": now,
        "dispatched_at": now,
        "dispatches": 1,
    }
    pending = {
        "status": BatchStatus.PENDING,
        "started_at": None,
        "dispatched_at": None,
        "dispatches": 0,
    }
    batch_ids = (
        connection.execute(
            sa.insert(Batch).returning(Batch.id, sort_by_parameter_order=True),
            [
                {"job_id": job_id, "index": index, "mode": planned.mode, "total": len(planned.keys)}
                | (first if index == 1 else pending)
                for index, planned in enumerate(plan, start=1)
            ],
        )
        .scalars()
        .all()
    )
    run_ids = (
        connection.execute(
            sa.insert(TaskRun).returning(TaskRun.id, sort_by_parameter_order=True),
            [
                {"job_id": job_id, "batch_id": batch_id, "task_id": task_ids[key], "position": i}
                for batch_id, planned in zip(batch_ids, plan, strict=True)
                for i, key in enumerate(planned.keys)
            ],
        )
        .scalars()
        .all()
    )
    pipeline_count = sum(1 for planned in plan if planned.mode == pipelines.PIPELINE)
    summary = {"tasks": len(nodes), "batches": len(plan), "pipelines": pipeline_count}
    first_batch = {"batch": 1, "mode": plan[0].mode, "done": 0, "total": len(plan[0].keys)}
    events.append(session, job_id, [("job_started", summary), ("batch_started", first_batch)])
    first_dispatch = DispatchSpec(
        mode=plan[0].mode, run_ids=tuple(run_ids[: len(plan[0].keys)]), max_retries=max_retries
    )
    return CreatedJob(job_id, batch_ids[0], len(plan), pipeline_count, first_dispatch)


def _read_graph(
    connection: sa.Connection, project_id: int
) -> tuple[dict[str, int], list[pipelines.TaskNode]]:
    """Return the project's task ids by key and its dependency graph, in task order.

    Raises:
      NotFoundError: when the project does not exist.
    """
    rows = connection.execute(_TASKS_OF_PROJECT, {"project_id": project_id}).all()
    if (
        not rows
        and connection.scalar(sa.select(Project.id).where(Project.id == project_id)) is None
    ):
        raise NotFoundError(f"project {project_id} does not exist")
    task_ids: dict[str, int] = {}
    depends_on: dict[str, list[str]] = {}
    for row in rows:
        task_ids[row.key] = row.id
        keys = depends_on.setdefault(row.key, [])
        if row.depends_on is not None:
            keys.append(row.depends_on)
    nodes = [pipelines.TaskNode(key, tuple(keys)) for key, keys in depends_on.items()]
    return task_ids, nodes


def snapshot(job_id: int) -> dict[str, Any]:
    """Return a job with its batches and task runs as plain data (API, CLI, stream).

    Raises:
      NotFoundError: when the job does not exist.
    """
    with session_scope() as session:
        job = session.get(
            Job,
            job_id,
            options=[
                orm.selectinload(Job.batches)
                .selectinload(Batch.runs)
                .joinedload(TaskRun.task)
                .load_only(Task.key, Task.title),
                orm.joinedload(Job.project).load_only(Project.name),
            ],
        )
        if job is None:
            raise NotFoundError(f"job {job_id} does not exist")
        data = _job_data(job)
        data["redis_commands"] = usage.job_commands(session, job_id)
        return data


def _job_data(job: Job) -> dict[str, Any]:
    fields = (
        "id", "project_id", "status", "batch_size", "total_tasks", "total_batches", "done_tasks",
        "succeeded_tasks", "failed_tasks", "skipped_tasks", "cancelled_tasks",
        "completed_batches", "current_batch", "event_seq", "error",
    )  # fmt: skip
    data: dict[str, Any] = {name: getattr(job, name) for name in fields}
    data["project_name"] = job.project.name
    data["created_at"] = iso(job.created_at)
    data["finished_at"] = iso(job.finished_at)
    data["batches"] = [
        {
            "index": batch.index,
            "mode": batch.mode,
            "status": batch.status,
            "total": batch.total,
            "done": batch.done,
            "succeeded": batch.succeeded,
            "failed": batch.failed,
            "skipped": batch.skipped,
            "cancelled": batch.cancelled,
            "started_at": iso(batch.started_at),
            "finished_at": iso(batch.finished_at),
            "runs": [
                {
                    "id": run.id,
                    "task_id": run.task_id,
                    "key": run.task.key,
                    "title": run.task.title,
                    "status": run.status,
                    "attempts": run.attempts,
                    "error": run.error,
                    "started_at": iso(run.started_at),
                    "finished_at": iso(run.finished_at),
                }
                for run in batch.runs
            ],
        }
        for batch in job.batches
    ]
    return data


def iso(value: Any) -> str | None:
    """Return a timestamp as ISO 8601 text (None stays None)."""
    return None if value is None else value.isoformat()
