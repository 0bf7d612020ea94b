"""Operator actions on a job: cancel it, rerun its failed tasks. Both are idempotent."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

import errors
import pipelines
from db import events, release, units
from db.engine import in_transaction, session_scope
from db.jobs import NotFoundError
from db.models import (
    OPEN_RUN_STATES,
    Batch,
    BatchStatus,
    Job,
    JobStatus,
    RunLink,
    RunStatus,
    Task,
    TaskRun,
    task_dependencies,
    utcnow,
)

#: Job states whose failed and skipped tasks may be run again.
RETRYABLE_JOB_STATES = (JobStatus.PARTIAL, JobStatus.FAILED)
#: Run states a retry runs again.
RETRIED_RUN_STATES = (RunStatus.FAILED, RunStatus.SKIPPED)


class NotRetryableError(errors.ConflictError, ValueError):
    """Raised when a job has nothing to retry; only a finished partial or failed job has."""


@dataclasses.dataclass(frozen=True)
class Retried:
    """A retry just written: how much runs again, and what to send first."""

    tasks: int
    #: Units planned for the rerun (single tasks, groups, pipelines).
    units: int
    #: The batches released at once, to send after commit.
    dispatches: tuple[pipelines.DispatchSpec, ...] = ()


def _job_status(session: orm.Session, job_id: int) -> str:
    status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
    if status is None:
        raise NotFoundError(f"job {job_id} does not exist")
    return status


def cancel_job(job_id: int) -> bool:
    """Cancel a running job: every unfinished run and running batch ends ``cancelled``.

    Running messages finish (their outcome is then ignored), queued ones are dropped
    when they arrive, runs not released yet never are. Returns False when the job
    had already ended (nothing changes: cancelling twice is harmless).

    Raises:
      NotFoundError: when the job does not exist.
    """
    return in_transaction(lambda session: _cancel(session, job_id))


def _cancel(session: orm.Session, job_id: int) -> bool:
    """Cancel the job in ``session``'s transaction (see :func:`cancel_job`)."""
    if _job_status(session, job_id) != JobStatus.RUNNING:
        return False
    now = utcnow()
    # Runs, then batches, then the job, as an outcome locks them; an outcome also locks
    # the runs it releases, so a cancel may still meet one the other way round: PostgreSQL
    # aborts one of the two, and in_transaction runs it again.
    cancelled = session.execute(
        sa.update(TaskRun)
        .where(TaskRun.job_id == job_id, TaskRun.status.in_(OPEN_RUN_STATES))
        .values(status=RunStatus.CANCELLED, error="cancelled", finished_at=now, updated_at=now)
        .returning(TaskRun.batch_id)
    ).scalars()
    per_batch = collections.Counter(cancelled)
    total = sum(per_batch.values())
    per_batch.pop(None, None)  # runs never released belong to no batch
    for batch_id, count in per_batch.items():
        session.execute(
            sa.update(Batch)
            .where(Batch.id == batch_id)
            .values(done=Batch.done + count, cancelled=Batch.cancelled + count)
        )
    session.execute(
        sa.update(Batch)
        .where(
            Batch.job_id == job_id,
            Batch.status.in_((BatchStatus.PENDING, BatchStatus.RUNNING)),
        )
        .values(status=BatchStatus.CANCELLED, finished_at=now)
    )
    changed = session.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .values(
            status=JobStatus.CANCELLED,
            finished_at=now,
            current_batch=None,
            in_flight=0,
            done_tasks=Job.done_tasks + total,
            cancelled_tasks=Job.cancelled_tasks + total,
        )
    ).rowcount
    if changed:
        events.append(session, job_id, [("job_cancelled", {"cancelled_tasks": total})])
    return bool(changed)


def retry_job(job_id: int) -> Retried:
    """Plan the failed and skipped tasks of a finished job again, as new units of the job.

    Succeeded tasks and their guides are kept; the rerun set runs in dependency order
    with the job's strategy (a task's dependencies outside the set have succeeded
    already, and their stored guides feed it). The caller sends ``dispatches`` after
    this commits.

    Raises:
      NotFoundError: when the job does not exist.
      NotRetryableError: when the job is running, succeeded or cancelled.
    """
    with session_scope() as session:
        # Claim the job first: of two concurrent retries, one finds it running.
        job = session.execute(
            sa.update(Job)
            .where(Job.id == job_id, Job.status.in_(RETRYABLE_JOB_STATES))
            .values(status=JobStatus.RUNNING, finished_at=None, in_flight=0)
            .returning(Job.batch_size, Job.strategy)
        ).one_or_none()
        if job is None:
            status = _job_status(session, job_id)
            raise NotRetryableError(
                f"job {job_id} is {status}; only a partial or failed job can be retried"
            )
        runs = session.execute(
            sa.select(TaskRun.id, TaskRun.task_id, TaskRun.status, Task.position)
            .join(Task, Task.id == TaskRun.task_id)
            .where(TaskRun.job_id == job_id, TaskRun.status.in_(RETRIED_RUN_STATES))
            .order_by(Task.position)
        ).all()
        if not runs:  # raising rolls the claim back
            raise NotRetryableError(f"job {job_id} has no failed or skipped task to retry")
        return _replan(session, job_id, job, runs)


def _replan(
    session: orm.Session, job_id: int, job: sa.Row[Any], runs: Sequence[sa.Row[Any]]
) -> Retried:
    """Place ``runs`` in new units after the job's last; reset them and the counters."""
    task_ids = {run.task_id for run in runs}
    deps = collections.defaultdict(list)
    for task_id, dep_id in session.execute(
        sa.select(task_dependencies.c.task_id, task_dependencies.c.depends_on_id).where(
            task_dependencies.c.task_id.in_(task_ids)
        )
    ):
        if dep_id in task_ids:
            deps[task_id].append(dep_id)
    nodes = [pipelines.TaskNode(run.task_id, tuple(deps[run.task_id])) for run in runs]
    plan = pipelines.plan(nodes, job.strategy, job.batch_size)
    first_unit = 1 + session.scalar(
        sa.select(sa.func.coalesce(sa.func.max(TaskRun.unit), 0)).where(TaskRun.job_id == job_id)
    )
    run_ids = {run.task_id: run.id for run in runs}
    # The old links into and out of these runs were spent: the new plan links them anew.
    session.execute(sa.delete(RunLink).where(RunLink.next_run_id.in_(run_ids.values())))
    session.execute(sa.delete(RunLink).where(RunLink.run_id.in_(run_ids.values())))
    now = utcnow()
    session.connection().execute(
        sa.update(TaskRun)
        .where(TaskRun.id == sa.bindparam("run_id"))
        .values(
            status=RunStatus.WAITING,
            batch_id=None,
            error=None,
            finished_at=None,
            updated_at=now,
            **{name: sa.bindparam(f"new_{name}") for name in units.PLACE_COLUMNS},
        ),
        [
            {"run_id": run_ids[task_id]}
            | {f"new_{name}": value for name, value in units.run_columns(place).items()}
            for task_id, place in plan.placements(first_unit).items()
        ],
    )
    units.link(session.connection(), plan, run_ids)
    counts = collections.Counter(run.status for run in runs)
    session.execute(
        sa.update(Job)
        .where(Job.id == job_id)
        .values(
            done_tasks=Job.done_tasks - len(runs),
            failed_tasks=Job.failed_tasks - counts[RunStatus.FAILED],
            skipped_tasks=Job.skipped_tasks - counts[RunStatus.SKIPPED],
        )
    )
    released = release.release(session, job_id, freed=0, now=now)
    retried = {"tasks": len(runs), "units": len(plan.units)}
    release.record(session, job_id, released, first=[("job_retried", retried)])
    return Retried(tasks=len(runs), units=len(plan.units), dispatches=released.dispatches)
