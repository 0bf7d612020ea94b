"""Guarded state changes of a running job: exactly-once accounting on an at-least-once queue.

Every change is a conditional ``UPDATE ... WHERE status IN (unfinished)`` and every
counter moves atomically in SQL (``done = done + 1``), so a message that runs twice is
counted once, a batch completes once, the next batch starts once and a job is finalized
once. Recording one outcome costs a fixed number of statements, whatever the job's size.

These statements run on every task, so they go straight to the session's connection
(SQLAlchemy Core): the ORM's per-statement work would about double their Python time,
which worker threads of one process pay in turn (the GIL).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from db import counters, dispatch, events
from db.engine import session_scope
from db.models import (
    UNFINISHED_RUN_STATES,
    Batch,
    BatchMode,
    RunStatus,
    TaskRun,
    utcnow,
)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What recording a task outcome changed, for the caller to act on after commit."""

    #: A batch this change started: dispatch its messages (after commit).
    next_batch_id: int | None = None
    #: What to send for that batch, read in the same transaction.
    next_dispatch: dispatch.DispatchSpec | None = None
    #: The job's final status when this change finalized it.
    job_status: str | None = None


#: A write that rides in the transaction recording an outcome: ``write(session)``.
Write = Callable[[orm.Session], None]


def record_outcome(
    run_id: int, status: RunStatus, error: str | None = None, *, along: Write | None = None
) -> Outcome:
    """Record the final outcome of a task run once; complete its batch when it is the last.

    ``along`` runs first in the same transaction (a task's result, stored with its outcome).
    """
    with session_scope() as session:
        if along is not None:
            along(session)
        return finish(session, run_id, status, error)


def record_retry(run_id: int, error: str) -> None:
    """Note a failed attempt that will be retried; the run goes back to queued."""
    with session_scope() as session:
        row = (
            session.connection()
            .execute(
                sa.update(TaskRun)
                .where(TaskRun.id == run_id, TaskRun.status.in_(UNFINISHED_RUN_STATES))
                .values(status=RunStatus.QUEUED, error=error, updated_at=utcnow())
                .returning(TaskRun.job_id, TaskRun.task_id, TaskRun.attempts)
            )
            .one_or_none()
        )
        if row is not None:
            payload = {"run": run_id, "task": row.task_id, "attempt": row.attempts, "error": error}
            events.append(session, row.job_id, [("task_retrying", payload)])


_NOW = sa.bindparam("now", type_=TaskRun.updated_at.type)
FINISH_RUN = (
    sa.update(TaskRun)
    .where(TaskRun.id == sa.bindparam("run_id"), TaskRun.status.in_(UNFINISHED_RUN_STATES))
    .values(
        status=sa.bindparam("new_status", type_=TaskRun.status.type),
        error=sa.bindparam("new_error", type_=TaskRun.error.type),
        finished_at=_NOW,
        updated_at=_NOW,
    )
    .returning(TaskRun.job_id, TaskRun.batch_id, TaskRun.position, TaskRun.task_id)
)


def finish(session: orm.Session, run_id: int, status: RunStatus, error: str | None) -> Outcome:
    now = utcnow()
    run = (
        session.connection()
        .execute(
            FINISH_RUN, {"run_id": run_id, "new_status": status, "new_error": error, "now": now}
        )
        .one_or_none()
    )
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

    batch, completed = counters.count_in_batch(session, run.batch_id, counts, now)
    next_batch = next_dispatch = None
    if completed:
        new_events.append(("batch_completed", counters.batch_payload(batch)))
        next_batch = counters.start_next_batch(session, run.job_id, batch.index, now)
        if next_batch is not None:
            new_events.append(("batch_started", counters.batch_payload(next_batch)))
            # Read now, before the job's row is locked, rather than in a transaction of
            # its own after commit: the next batch goes out one round of queries sooner.
            next_dispatch = dispatch.read_dispatch(session, next_batch.id)

    job = counters.count_in_job(session, run.job_id, counts, completed, next_batch, new_events)

    job_status = None
    if completed and next_batch is None and job.completed_batches == job.total_batches:
        job_status = counters.finalize(session, run.job_id, now)
    return Outcome(
        next_batch_id=None if next_batch is None else next_batch.id,
        next_dispatch=next_dispatch,
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
        session.connection().execute(
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
