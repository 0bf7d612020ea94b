"""Guarded state changes of a running job: exactly-once accounting on an at-least-once queue.

Every change is a conditional ``UPDATE ... WHERE status IN (unfinished)`` and every
counter moves atomically in SQL (``done = done + 1``), so a message that runs twice is
counted once, a batch completes once, what it releases is released once and a job is
finalized once. Recording one outcome costs a fixed number of statements, whatever the job's size.

These statements run on every task, so they go straight to the session's connection
(SQLAlchemy Core): the ORM's per-statement work would about double their Python time,
which worker threads of one process pay in turn (the GIL).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy import orm

from db import counters, events, handover, release
from db.engine import in_transaction, session_scope
from db.guides import Usage
from db.models import (
    UNFINISHED_RUN_STATES,
    RunStatus,
    TaskRun,
    utcnow,
)
from pipelines import DispatchSpec


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What recording a task outcome changed, for the caller to act on after commit."""

    #: The batches this change released: send them (after commit).
    dispatches: tuple[DispatchSpec, ...] = ()
    #: The job's final status when this change finalized it.
    job_status: str | None = None


#: A write that rides in the transaction recording an outcome: ``write(session)``.
Write = Callable[[orm.Session], None]


def record_outcome(
    run_id: int,
    status: RunStatus,
    error: str | None = None,
    *,
    along: Write | None = None,
    spent: Usage | None = None,
) -> Outcome:
    """Record the final outcome of a task run once; complete its batch when it is the last.

    ``along`` runs first in the same transaction (a task's result, stored with its outcome);
    ``spent`` (the AI usage of its guide) is added to the job's totals with its counters.
    """

    def record(session: orm.Session) -> Outcome:
        if along is not None:
            along(session)
        return finish(session, run_id, status, error, spent)

    return in_transaction(record)


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


def finish(
    session: orm.Session,
    run_id: int,
    status: RunStatus,
    error: str | None,
    spent: Usage | None = None,
) -> Outcome:
    """Record a run's outcome once, and everything it sets going, in the caller's transaction.

    Counts it in its batch and job, releases the units it was the last link of (and
    any that wait for the slot it frees), and finalizes the job when it was the last.
    """
    now = utcnow()
    ended = handover.end_run(session, run_id, status, error, now)
    if ended is None:
        return Outcome()
    run, counts, counted = ended.run, ended.counts, ended.counted
    new_events: list[events.NewEvent] = [
        (f"task_{status}", {"run": run_id, "task": run.task_id, "error": error}),
        *(
            (
                "task_skipped",
                {"run": skip.id, "task": skip.task_id, "error": handover.PIPELINE_SKIP},
            )
            for skip in ended.skipped
        ),
    ]
    if counted.completed:
        new_events.append(("batch_completed", counters.batch_payload(counted.batch)))
    released = release.NOTHING
    if counted.job is not None:
        spending = 0.0 if spent is None else spent.cost
        released = release.release_locked(
            session, run.job_id, counted.job, now=now, spending=spending, look=counted.became_ready
        )
        counts[RunStatus.CANCELLED] += released.cancelled
        new_events.extend(released.events)

    job = counters.count_in_job(
        session, run.job_id, counts, counted.completed, released, new_events, spent
    )
    job_status = None
    if job.done_tasks - sum(counts.values()) < job.total_tasks <= job.done_tasks:
        job_status = counters.finalize(session, run.job_id, now)
    return Outcome(dispatches=released.dispatches, job_status=job_status)
