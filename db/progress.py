"""Guarded state changes of a running job: exactly-once accounting on an at-least-once queue.

Every change is a conditional ``UPDATE ... WHERE status IN (unfinished)`` and every
counter moves atomically in SQL (``done = done + 1``), so a message that runs twice is
counted once, a batch completes once, the next batch starts once and a job is finalized
once. Recording one outcome costs a fixed number of statements, whatever the job's size.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from db import events
from db.engine import session_scope
from db.models import (
    UNFINISHED_RUN_STATES,
    Batch,
    BatchMode,
    BatchStatus,
    HandsOn,
    Job,
    JobStatus,
    RunStatus,
    Task,
    TaskRun,
    task_dependencies,
    utcnow,
)

#: Final states a dependency may end in that make its dependents pointless.
_NOT_SUCCEEDED = (RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.CANCELLED)


class Start(enum.StrEnum):
    """What to do with a task message that is about to run."""

    RUN = "run"
    #: Its outcome is already recorded (a redelivered or cancelled message): drop it.
    DUPLICATE = "duplicate"
    #: A task it depends on did not succeed: recorded as skipped, drop it.
    SKIPPED = "skipped"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What recording a task outcome changed, for the caller to act on after commit."""

    recorded: bool = False
    #: A batch this change started: dispatch its messages (after commit).
    next_batch_id: int | None = None
    #: The job's final status when this change finalized it.
    job_status: str | None = None


@dataclasses.dataclass(frozen=True)
class DispatchSpec:
    """What :func:`pipelines.dispatch_batch` needs to send a batch's messages."""

    mode: str
    run_ids: tuple[int, ...]
    max_retries: int | None
    #: For a pipeline resumed mid-way: the guide of the step before the first one sent.
    previous_output: str | None = None


def start_run(run_id: int) -> tuple[Start, Outcome]:
    """Mark a task run running (one more attempt), unless it should not run at all."""
    with session_scope() as session:
        row = session.execute(
            sa.select(TaskRun.status, TaskRun.job_id, TaskRun.task_id).where(TaskRun.id == run_id)
        ).one_or_none()
        if row is None or row.status not in UNFINISHED_RUN_STATES:
            return Start.DUPLICATE, Outcome()
        blocker = _failed_dependency(session, row.job_id, row.task_id)
        if blocker is not None:
            error = f"skipped: the task it depends on, {blocker!r}, did not succeed"
            return Start.SKIPPED, _finish(session, run_id, RunStatus.SKIPPED, error)
        attempt = session.execute(
            sa.update(TaskRun)
            .where(TaskRun.id == run_id, TaskRun.status.in_(UNFINISHED_RUN_STATES))
            .values(
                status=RunStatus.RUNNING,
                attempts=TaskRun.attempts + 1,
                started_at=utcnow(),
                updated_at=utcnow(),
            )
            .returning(TaskRun.attempts)
        ).scalar_one_or_none()
        if attempt is None:
            return Start.DUPLICATE, Outcome()
        payload = {"run": run_id, "task": row.task_id, "attempt": attempt}
        events.append(session, row.job_id, [("task_started", payload)])
        return Start.RUN, Outcome()


def record_outcome(run_id: int, status: RunStatus, error: str | None = None) -> Outcome:
    """Record the final outcome of a task run once; complete its batch when it is the last."""
    with session_scope() as session:
        return _finish(session, run_id, status, error)


def record_retry(run_id: int, error: str) -> None:
    """Note a failed attempt that will be retried; the run goes back to queued."""
    with session_scope() as session:
        row = session.execute(
            sa.update(TaskRun)
            .where(TaskRun.id == run_id, TaskRun.status.in_(UNFINISHED_RUN_STATES))
            .values(status=RunStatus.QUEUED, error=error, updated_at=utcnow())
            .returning(TaskRun.job_id, TaskRun.task_id, TaskRun.attempts)
        ).one_or_none()
        if row is not None:
            payload = {"run": run_id, "task": row.task_id, "attempt": row.attempts, "error": error}
            events.append(session, row.job_id, [("task_retrying", payload)])


def _failed_dependency(session: orm.Session, job_id: int, task_id: int) -> str | None:
    """Return the key of a dependency whose run in this job did not succeed, if any."""
    deps = task_dependencies.c
    return session.scalar(
        sa.select(Task.key)
        .join(task_dependencies, deps.depends_on_id == Task.id)
        .join(TaskRun, sa.and_(TaskRun.task_id == Task.id, TaskRun.job_id == job_id))
        .where(deps.task_id == task_id, TaskRun.status.in_(_NOT_SUCCEEDED))
        .limit(1)
    )


def _finish(session: orm.Session, run_id: int, status: RunStatus, error: str | None) -> Outcome:
    now = utcnow()
    run = session.execute(
        sa.update(TaskRun)
        .where(TaskRun.id == run_id, TaskRun.status.in_(UNFINISHED_RUN_STATES))
        .values(status=status, error=error, finished_at=now, updated_at=now)
        .returning(TaskRun.job_id, TaskRun.batch_id, TaskRun.position, TaskRun.task_id)
    ).one_or_none()
    if run is None:
        return Outcome()
    counts = collections.Counter({status: 1})
    new_events: list[events.NewEvent] = [
        (f"task_{status}", {"run": run_id, "task": run.task_id, "error": error})
    ]
    if status != RunStatus.SUCCEEDED:
        for skipped in _skip_rest_of_pipeline(session, run.batch_id, run.position, now):
            counts[RunStatus.SKIPPED] += 1
            new_events.append(("task_skipped", {"run": skipped.id, "task": skipped.task_id}))

    batch, completed = _count_in_batch(session, run.batch_id, counts, now)
    next_batch = None
    if completed:
        new_events.append(("batch_completed", _batch_payload(batch)))
        next_batch = start_next_batch(session, run.job_id, batch.index, now)
        if next_batch is not None:
            new_events.append(("batch_started", _batch_payload(next_batch)))

    job = _count_in_job(session, run.job_id, counts, completed, next_batch, len(new_events))
    for _, payload in new_events:
        payload["job"] = _job_counters(job)
    events.insert(session, run.job_id, job.event_seq, new_events)

    job_status = None
    if completed and next_batch is None and job.completed_batches == job.total_batches:
        job_status = finalize(session, run.job_id, now)
    return Outcome(
        recorded=True,
        next_batch_id=None if next_batch is None else next_batch.id,
        job_status=job_status,
    )


def _skip_rest_of_pipeline(
    session: orm.Session, batch_id: int, position: int, now: Any
) -> list[sa.Row[Any]]:
    """Mark the queued steps after ``position`` skipped, when the batch is a pipeline."""
    is_pipeline = (
        sa.select(Batch.id).where(Batch.id == batch_id, Batch.mode == BatchMode.PIPELINE).exists()
    )
    return list(
        session.execute(
            sa.update(TaskRun)
            .where(
                TaskRun.batch_id == batch_id,
                TaskRun.position > position,
                TaskRun.status == RunStatus.QUEUED,
                is_pipeline,
            )
            .values(
                status=RunStatus.SKIPPED, error="skipped: an earlier step failed", finished_at=now
            )
            .returning(TaskRun.id, TaskRun.task_id)
        )
    )


def _count_in_batch(
    session: orm.Session, batch_id: int, counts: collections.Counter[str], now: Any
) -> tuple[sa.Row[Any], bool]:
    """Move the batch's counters; return its row and whether this change completed it."""
    added = sum(counts.values())
    batch = session.execute(
        sa.update(Batch)
        .where(Batch.id == batch_id)
        .values(
            done=Batch.done + added,
            succeeded=Batch.succeeded + counts[RunStatus.SUCCEEDED],
            failed=Batch.failed + counts[RunStatus.FAILED],
            skipped=Batch.skipped + counts[RunStatus.SKIPPED],
            cancelled=Batch.cancelled + counts[RunStatus.CANCELLED],
        )
        .returning(Batch.id, Batch.index, Batch.mode, Batch.status, Batch.done, Batch.total)
    ).one()
    # The row lock serializes these increments: exactly one change crosses the total.
    crossed = batch.done - added < batch.total <= batch.done
    if not crossed or batch.status != BatchStatus.RUNNING:
        return batch, False
    completed = session.execute(
        sa.update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.RUNNING)
        .values(status=BatchStatus.COMPLETED, finished_at=now)
    ).rowcount
    return batch, completed == 1


def start_next_batch(session: orm.Session, job_id: int, index: int, now: Any) -> sa.Row[Any] | None:
    """Mark the batch after ``index`` running, once; return it, or None when there is none."""
    return session.execute(
        sa.update(Batch)
        .where(
            Batch.job_id == job_id, Batch.index == index + 1, Batch.status == BatchStatus.PENDING
        )
        .values(
            status=BatchStatus.RUNNING,
            started_at=now,
            dispatched_at=now,
            dispatches=Batch.dispatches + 1,
        )
        .returning(Batch.id, Batch.index, Batch.mode, Batch.status, Batch.done, Batch.total)
    ).one_or_none()


def _count_in_job(
    session: orm.Session,
    job_id: int,
    counts: collections.Counter[str],
    completed: bool,
    next_batch: sa.Row[Any] | None,
    new_events: int,
) -> sa.Row[Any]:
    values: dict[str, Any] = {
        "done_tasks": Job.done_tasks + sum(counts.values()),
        "succeeded_tasks": Job.succeeded_tasks + counts[RunStatus.SUCCEEDED],
        "failed_tasks": Job.failed_tasks + counts[RunStatus.FAILED],
        "skipped_tasks": Job.skipped_tasks + counts[RunStatus.SKIPPED],
        "cancelled_tasks": Job.cancelled_tasks + counts[RunStatus.CANCELLED],
        "event_seq": Job.event_seq + new_events,
    }
    if completed:
        values["completed_batches"] = Job.completed_batches + 1
    if next_batch is not None:
        values["current_batch"] = next_batch.index
    return session.execute(
        sa.update(Job)
        .where(Job.id == job_id)
        .values(**values)
        .returning(
            Job.event_seq,
            Job.total_tasks,
            Job.done_tasks,
            Job.succeeded_tasks,
            Job.failed_tasks,
            Job.skipped_tasks,
            Job.cancelled_tasks,
            Job.completed_batches,
            Job.total_batches,
        )
    ).one()


def finalize(session: orm.Session, job_id: int, now: Any) -> str | None:
    """Give a running job its final status from its counters, once; return it."""
    final = sa.case(
        (
            sa.and_(Job.failed_tasks == 0, Job.skipped_tasks == 0, Job.cancelled_tasks == 0),
            JobStatus.SUCCEEDED.value,
        ),
        (Job.succeeded_tasks == 0, JobStatus.FAILED.value),
        else_=JobStatus.PARTIAL.value,
    )
    job = session.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .values(status=final, finished_at=now, current_batch=None)
        .returning(Job.status, Job.done_tasks, Job.succeeded_tasks, Job.failed_tasks)
    ).one_or_none()
    if job is None:
        return None
    events.append(session, job_id, [("job_finished", {"status": job.status})])
    return job.status


def _batch_payload(batch: sa.Row[Any]) -> dict[str, Any]:
    return {"batch": batch.index, "mode": batch.mode, "done": batch.done, "total": batch.total}


def _job_counters(job: sa.Row[Any]) -> dict[str, int]:
    return {
        "done": job.done_tasks,
        "total": job.total_tasks,
        "succeeded": job.succeeded_tasks,
        "failed": job.failed_tasks,
        "skipped": job.skipped_tasks,
        "cancelled": job.cancelled_tasks,
    }


def load_dispatch(batch_id: int) -> DispatchSpec | None:
    """Return what to send for a running batch: its unfinished runs in order."""
    with session_scope() as session:
        batch = session.execute(
            sa.select(Batch.mode, Batch.status, Job.max_retries)
            .join(Job, Job.id == Batch.job_id)
            .where(Batch.id == batch_id)
        ).one_or_none()
        if batch is None or batch.status != BatchStatus.RUNNING:
            return None
        runs = session.execute(
            sa.select(TaskRun.id, TaskRun.status, TaskRun.task_id)
            .where(TaskRun.batch_id == batch_id)
            .order_by(TaskRun.position)
        ).all()
        pending = [i for i, run in enumerate(runs) if run.status in UNFINISHED_RUN_STATES]
        previous_output = None
        if batch.mode == BatchMode.PIPELINE and pending and pending[0] > 0:
            previous_task = runs[pending[0] - 1].task_id
            previous_output = session.scalar(
                sa.select(HandsOn.markdown).where(HandsOn.task_id == previous_task)
            )
        return DispatchSpec(
            mode=batch.mode,
            run_ids=tuple(runs[i].id for i in pending),
            max_retries=batch.max_retries,
            previous_output=previous_output,
        )
