"""Write a planned job in one transaction, and read a job back as a snapshot."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

import errors
import pipelines
from db import ai_spend, release, units, usage
from db.dispatch import DispatchSpec
from db.engine import session_scope
from db.models import (
    Batch,
    Job,
    Project,
    RunStatus,
    Task,
    TaskRun,
    task_dependencies,
    utcnow,
)


class NotFoundError(errors.NotFoundError):
    """Raised when a project or job id does not exist; check the id."""


@dataclasses.dataclass(frozen=True)
class CreatedJob:
    """A job just written: its id, its plan's size, and what to send first."""

    job_id: int
    #: Units planned: single tasks, groups and pipelines (the batches strategy's batches).
    units: int
    pipelines: int
    #: The batches released at once, to send once the job is committed.
    dispatches: tuple[DispatchSpec, ...]


def create_job(
    project_id: int,
    *,
    batch_size: int,
    max_batch_size: int,
    max_tasks: int,
    strategy: str = pipelines.FLOW,
    max_in_flight: int | None = None,
    max_retries: int | None = None,
    session: orm.Session | None = None,
    ai_cap: ai_spend.Cap | None = None,
) -> CreatedJob:
    """Validate and plan a project, write its job, runs and links, and release what is ready.

    ``max_in_flight`` (default: ``batch_size``) caps the units queued or running at once;
    the ``batches`` strategy runs ``batch_size`` at a time. The caller sends
    ``dispatches`` after this commits. With ``session``, the job is written in that
    session's transaction (a scheduler claims a due time and writes its job in one).
    With ``ai_cap``, a job whose estimated AI cost passes the monthly budget left is refused,
    and the job stops releasing work once the month's spend reaches the budget.

    Raises:
      NotFoundError: when the project does not exist.
      pipelines.PlanError: when an option or the project's graph is invalid.
      ai_spend.BudgetExceededError: when the job would pass the monthly AI budget.
    """
    pipelines.check_batch_size(batch_size, maximum=max_batch_size)
    pipelines.check_strategy(strategy)
    cap = pipelines.check_max_in_flight(
        max_in_flight, strategy=strategy, batch_size=batch_size, maximum=max_batch_size
    )
    options = _Options(batch_size, strategy, cap, max_retries, ai_cap)
    if session is None:
        with session_scope() as session:
            return _write_job(session, project_id, options, max_tasks)
    return _write_job(session, project_id, options, max_tasks)


@dataclasses.dataclass(frozen=True)
class _Options:
    batch_size: int
    strategy: str
    max_in_flight: int
    max_retries: int | None
    ai_cap: ai_spend.Cap | None = None


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
    session: orm.Session, project_id: int, options: _Options, max_tasks: int
) -> CreatedJob:
    """Plan the project, insert its job, runs and links, and release its first units.

    SQLAlchemy Core rather than the ORM's unit of work: the time between a submit and
    its first message is part of every job's wall time.
    """
    connection = session.connection()
    task_ids, nodes = _read_graph(connection, project_id)
    pipelines.validate_graph(nodes, max_tasks=max_tasks)
    ai_spend.check_submit(connection, len(nodes), options.ai_cap)
    plan = pipelines.plan(nodes, options.strategy, options.batch_size)

    job_id = connection.execute(
        sa.insert(Job).returning(Job.id),
        {
            "project_id": project_id,
            "batch_size": options.batch_size,
            "strategy": options.strategy,
            "max_in_flight": options.max_in_flight,
            "max_retries": options.max_retries,
            "ai_budget": None if options.ai_cap is None else options.ai_cap.monthly_budget,
            "total_tasks": len(nodes),
            "total_batches": 0,
            "current_batch": None,
        },
    ).scalar_one()
    placed = plan.placements()
    run_ids = dict(
        zip(
            placed,
            connection.execute(
                sa.insert(TaskRun).returning(TaskRun.id, sort_by_parameter_order=True),
                [
                    {"job_id": job_id, "task_id": task_ids[key], "status": RunStatus.WAITING}
                    | units.run_columns(place)
                    for key, place in placed.items()
                ],
            ).scalars(),
            strict=True,
        )
    )
    units.link(connection, plan, run_ids)
    pipeline_count = sum(1 for unit in plan.units if unit.mode == pipelines.PIPELINE)
    summary = {
        "tasks": len(nodes),
        "units": len(plan.units),
        "pipelines": pipeline_count,
        "strategy": options.strategy,
        "max_in_flight": options.max_in_flight,
    }
    released = release.release(session, job_id, freed=0, now=utcnow())
    release.record(session, job_id, released, first=[("job_started", summary)])
    return CreatedJob(job_id, len(plan.units), pipeline_count, released.dispatches)


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
        data["unreleased"] = _unreleased_runs(session, job_id)
        data["redis_commands"] = usage.job_commands(session, job_id)
        return data


def _job_data(job: Job) -> dict[str, Any]:
    fields = (
        "id", "project_id", "status", "batch_size", "strategy", "max_in_flight", "in_flight",
        "total_tasks", "total_batches", "done_tasks",
        "succeeded_tasks", "failed_tasks", "skipped_tasks", "cancelled_tasks",
        "completed_batches", "current_batch", "event_seq", "error",
        "prompt_tokens", "completion_tokens", "cost",
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


_dependency_run = orm.aliased(TaskRun)
#: A job's runs never released (waiting, or cancelled before they were), in plan order,
#: one row per dependency (``open_dependency_run`` is set while it has not succeeded).
_UNRELEASED = (
    sa.select(
        TaskRun.id,
        TaskRun.task_id,
        Task.key,
        Task.title,
        TaskRun.status,
        TaskRun.error,
        TaskRun.attempts,
        TaskRun.started_at,
        TaskRun.finished_at,
        TaskRun.step,
        TaskRun.waiting_on,
        _dependency.key.label("dependency"),
        _dependency_run.id.label("open_dependency_run"),
    )
    .join(Task, Task.id == TaskRun.task_id)
    .outerjoin(task_dependencies, task_dependencies.c.task_id == Task.id)
    .outerjoin(_dependency, _dependency.id == task_dependencies.c.depends_on_id)
    .outerjoin(
        _dependency_run,
        sa.and_(
            _dependency_run.job_id == TaskRun.job_id,
            _dependency_run.task_id == _dependency.id,
            _dependency_run.status != RunStatus.SUCCEEDED,
        ),
    )
    .where(TaskRun.job_id == sa.bindparam("job_id"), TaskRun.batch_id.is_(None))
    .order_by(TaskRun.unit, TaskRun.step, _dependency.position)
)


def _unreleased_runs(session: orm.Session, job_id: int) -> list[dict[str, Any]]:
    """Return the job's runs never released, each with the dependencies it waits for."""
    unreleased: dict[int, dict[str, Any]] = {}
    for row in session.execute(_UNRELEASED, {"job_id": job_id}):
        run = unreleased.setdefault(
            row.id,
            {
                "id": row.id,
                "task_id": row.task_id,
                "key": row.key,
                "title": row.title,
                "status": row.status,
                "attempts": row.attempts,
                "error": row.error,
                "started_at": iso(row.started_at),
                "finished_at": iso(row.finished_at),
                # Ready: waiting for nothing but a free slot.
                "ready": row.status == RunStatus.WAITING and row.step == 0 and row.waiting_on <= 0,
                "waits_for": [],
            },
        )
        if row.open_dependency_run is not None:
            run["waits_for"].append(row.dependency)
    return list(unreleased.values())


def iso(value: Any) -> str | None:
    """Return a timestamp as ISO 8601 text (None stays None)."""
    return None if value is None else value.isoformat()
