"""Write a planned job in one transaction, and read a job back as a snapshot."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import orm

import pipelines
from db import events, usage
from db.engine import session_scope
from db.models import Batch, BatchStatus, Job, Project, Task, TaskRun, utcnow


class NotFoundError(LookupError):
    """Raised when a project or job id does not exist; check the id."""


@dataclasses.dataclass(frozen=True)
class CreatedJob:
    """A job just written: its id and the batch to dispatch first."""

    job_id: int
    first_batch_id: int
    batches: int
    pipelines: int


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


def _write_job(
    session: orm.Session, project_id: int, batch_size: int, max_tasks: int, max_retries: int | None
) -> CreatedJob:
    project = session.get(
        Project,
        project_id,
        options=[orm.selectinload(Project.tasks).selectinload(Task.depends_on)],
    )
    if project is None:
        raise NotFoundError(f"project {project_id} does not exist")
    by_key = {task.key: task for task in project.tasks}
    nodes = [
        pipelines.TaskNode(task.key, tuple(dep.key for dep in task.depends_on))
        for task in project.tasks
    ]
    pipelines.validate_graph(nodes, max_tasks=max_tasks)
    plan = pipelines.plan_batches(nodes, batch_size)

    now = utcnow()
    job = Job(
        project_id=project_id,
        batch_size=batch_size,
        max_retries=max_retries,
        total_tasks=len(nodes),
        total_batches=len(plan),
        current_batch=1,
    )
    for index, planned in enumerate(plan, start=1):
        batch = Batch(index=index, mode=planned.mode, total=len(planned.keys))
        if index == 1:
            batch.status, batch.started_at, batch.dispatched_at = BatchStatus.RUNNING, now, now
            batch.dispatches = 1
        batch.runs = [
            TaskRun(job=job, task=by_key[key], position=position)
            for position, key in enumerate(planned.keys)
        ]
        job.batches.append(batch)
    session.add(job)
    session.flush()
    pipeline_count = sum(1 for planned in plan if planned.mode == pipelines.PIPELINE)
    first = job.batches[0]
    events.append(
        session,
        job.id,
        [
            (
                "job_started",
                {"tasks": len(nodes), "batches": len(plan), "pipelines": pipeline_count},
            ),
            (
                "batch_started",
                {"batch": 1, "mode": first.mode, "done": 0, "total": first.total},
            ),
        ],
    )
    return CreatedJob(job.id, first.id, len(plan), pipeline_count)


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
