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
from db import dispatch, events
from db.engine import session_scope
from db.jobs import NotFoundError
from db.models import (
    UNFINISHED_RUN_STATES,
    Batch,
    BatchStatus,
    Job,
    JobStatus,
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
    """A retry just written: how much runs again, and the batch to dispatch first."""

    tasks: int
    batches: int
    first_batch_id: int
    #: What to send for the first batch, read in the retry's transaction.
    first_dispatch: pipelines.DispatchSpec | None = None


def _job_status(session: orm.Session, job_id: int) -> str:
    status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
    if status is None:
        raise NotFoundError(f"job {job_id} does not exist")
    return status


def cancel_job(job_id: int) -> bool:
    """Cancel a running job: every unfinished run and pending batch ends ``cancelled``.

    Running messages finish (their outcome is then ignored), queued ones are dropped
    when they arrive, pending batches are never dispatched. Returns False when the job
    had already ended (nothing changes: cancelling twice is harmless).

    Raises:
      NotFoundError: when the job does not exist.
    """
    with session_scope() as session:
        if _job_status(session, job_id) != JobStatus.RUNNING:
            return False
        now = utcnow()
        # Same lock order as recording an outcome (runs, batches, job): no deadlock.
        cancelled = session.execute(
            sa.update(TaskRun)
            .where(TaskRun.job_id == job_id, TaskRun.status.in_(UNFINISHED_RUN_STATES))
            .values(status=RunStatus.CANCELLED, error="cancelled", finished_at=now, updated_at=now)
            .returning(TaskRun.batch_id)
        ).scalars()
        per_batch = collections.Counter(cancelled)
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
        total = sum(per_batch.values())
        changed = session.execute(
            sa.update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
            .values(
                status=JobStatus.CANCELLED,
                finished_at=now,
                current_batch=None,
                done_tasks=Job.done_tasks + total,
                cancelled_tasks=Job.cancelled_tasks + total,
            )
        ).rowcount
        if changed:
            events.append(session, job_id, [("job_cancelled", {"cancelled_tasks": total})])
        return bool(changed)


def retry_job(job_id: int) -> Retried:
    """Plan the failed and skipped tasks of a finished job as new batches of the same job.

    Succeeded tasks and their guides are kept; the rerun set runs in dependency order
    (a task's dependencies outside the set have succeeded already, and their stored
    guides feed it). The caller sends ``first_dispatch`` after this commits.

    Raises:
      NotFoundError: when the job does not exist.
      NotRetryableError: when the job is running, succeeded or cancelled.
    """
    with session_scope() as session:
        # Claim the job first: of two concurrent retries, one finds it running.
        job = session.execute(
            sa.update(Job)
            .where(Job.id == job_id, Job.status.in_(RETRYABLE_JOB_STATES))
            .values(status=JobStatus.RUNNING, finished_at=None)
            .returning(Job.batch_size, Job.total_batches)
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
    """Write new batches for ``runs`` after the job's last batch; reset the runs and counters."""
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
    plan = pipelines.plan_batches(nodes, job.batch_size)
    run_of = {run.task_id: run for run in runs}
    now = utcnow()
    first_batch_id = 0
    for offset, planned in enumerate(plan, start=1):
        first = offset == 1
        batch = Batch(
            job_id=job_id,
            index=job.total_batches + offset,
            mode=planned.mode,
            total=len(planned.keys),
            status=BatchStatus.RUNNING if first else BatchStatus.PENDING,
            started_at=now if first else None,
            dispatched_at=now if first else None,
            dispatches=1 if first else 0,
        )
        session.add(batch)
        session.flush()
        first_batch_id = first_batch_id or batch.id
        for position, task_id in enumerate(planned.keys):
            session.execute(
                sa.update(TaskRun)
                .where(TaskRun.id == run_of[task_id].id)
                .values(
                    batch_id=batch.id,
                    position=position,
                    status=RunStatus.QUEUED,
                    error=None,
                    finished_at=None,
                    updated_at=now,
                )
            )
    counts = collections.Counter(run.status for run in runs)
    session.execute(
        sa.update(Job)
        .where(Job.id == job_id)
        .values(
            total_batches=Job.total_batches + len(plan),
            current_batch=job.total_batches + 1,
            done_tasks=Job.done_tasks - len(runs),
            failed_tasks=Job.failed_tasks - counts[RunStatus.FAILED],
            skipped_tasks=Job.skipped_tasks - counts[RunStatus.SKIPPED],
        )
    )
    events.append(
        session,
        job_id,
        [
            ("job_retried", {"tasks": len(runs), "batches": len(plan)}),
            (
                "batch_started",
                {
                    "batch": job.total_batches + 1,
                    "mode": plan[0].mode,
                    "done": 0,
                    "total": len(plan[0].keys),
                },
            ),
        ],
    )
    return Retried(
        tasks=len(runs),
        batches=len(plan),
        first_batch_id=first_batch_id,
        first_dispatch=dispatch.read_dispatch(session, first_batch_id),
    )
