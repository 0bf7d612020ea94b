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
import enum
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from db import counters, dispatch, events, notify
from db.engine import get_engine, session_scope, statements_committing_alone
from db.models import (
    UNFINISHED_RUN_STATES,
    Batch,
    BatchMode,
    Event,
    Job,
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

    #: A batch this change started: dispatch its messages (after commit).
    next_batch_id: int | None = None
    #: What to send for that batch, read in the same transaction.
    next_dispatch: dispatch.DispatchSpec | None = None
    #: The job's final status when this change finalized it.
    job_status: str | None = None


@dataclasses.dataclass(frozen=True)
class Started:
    """What :func:`start_run` decided, and what its ``prepare`` callback returned."""

    decision: Start
    outcome: Outcome = Outcome()
    #: The value ``prepare`` returned; None unless the run starts.
    prepared: Any = None


def start_run(run_id: int, prepare: Callable[[orm.Session, int], Any] | None = None) -> Started:
    """Mark a task run running (one more attempt), unless it should not run at all.

    The usual case is one guarded UPDATE (still unfinished, no failed dependency) plus
    its event; why a run may not start is looked up only when that UPDATE matched nothing.
    When the run starts, ``prepare(session, run_id)`` reads what the task needs.

    On PostgreSQL the usual case is a single autocommitted statement (see
    :func:`_started_and_announced`); the reads follow it.
    """
    if get_engine().dialect.name == "postgresql":
        fast = _start_announced(run_id, prepare)
        if fast is not None:
            return fast
    with session_scope() as session:
        connection = session.connection()
        started = connection.execute(START_RUN, {"run_id": run_id, "now": utcnow()}).one_or_none()
        if started is not None:
            # Read before the event locks the job's row: concurrent starts of a batch
            # then queue on that lock for as short a time as possible.
            prepared = None if prepare is None else prepare(session, run_id)
            payload = {"run": run_id, "task": started.task_id, "attempt": started.attempts}
            events.append(session, started.job_id, [("task_started", payload)])
            return Started(Start.RUN, prepared=prepared)
        row = connection.execute(
            sa.select(TaskRun.status, TaskRun.job_id, TaskRun.task_id).where(TaskRun.id == run_id)
        ).one_or_none()
        if row is None or row.status not in UNFINISHED_RUN_STATES:
            return Started(Start.DUPLICATE)
        blocker = connection.scalar(_failed_dependencies(row.job_id, row.task_id).limit(1))
        if blocker is None:
            # It changed under us (a concurrent rerun): leave it to the reconciler.
            return Started(Start.DUPLICATE)
        error = f"skipped: the task it depends on, {blocker!r}, did not succeed"
        return Started(Start.SKIPPED, _finish(session, run_id, RunStatus.SKIPPED, error))


def _start_announced(
    run_id: int, prepare: Callable[[orm.Session, int], Any] | None
) -> Started | None:
    """Start the run and announce it in one autocommitted statement (PostgreSQL).

    The job's row is locked only while that statement runs, instead of across three
    round trips. Returns None when the run did not start (the caller finds out why).
    """
    with statements_committing_alone() as connection:
        started = connection.execute(
            START_AND_ANNOUNCE, {"run_id": run_id, "now": utcnow()}
        ).one_or_none()
        if started is None:
            return None
        notify.announce(started.job_id, started.event_seq)
        if prepare is None:
            return Started(Start.RUN)
        with orm.Session(bind=connection) as session:
            return Started(Start.RUN, prepared=prepare(session, run_id))


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
        return _finish(session, run_id, status, error)


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


def _failed_dependencies(job_id: Any, task_id: Any) -> sa.Select[tuple[str]]:
    """Select the keys of the task's dependencies whose runs in the job did not succeed.

    ``job_id`` and ``task_id`` are values or columns of an enclosing statement.
    """
    deps = task_dependencies.c
    dependency_run = orm.aliased(TaskRun)
    return (
        sa.select(Task.key)
        .join(task_dependencies, deps.depends_on_id == Task.id)
        .join(
            dependency_run,
            sa.and_(dependency_run.task_id == Task.id, dependency_run.job_id == job_id),
        )
        .where(deps.task_id == task_id, dependency_run.status.in_(_NOT_SUCCEEDED))
    )


# Built once: building a statement costs more Python time than running it does.
_NOW = sa.bindparam("now", type_=TaskRun.updated_at.type)
START_RUN = (
    sa.update(TaskRun)
    .where(
        TaskRun.id == sa.bindparam("run_id"),
        TaskRun.status.in_(UNFINISHED_RUN_STATES),
        ~_failed_dependencies(TaskRun.job_id, TaskRun.task_id).exists(),
    )
    .values(
        status=RunStatus.RUNNING, attempts=TaskRun.attempts + 1, started_at=_NOW, updated_at=_NOW
    )
    .returning(TaskRun.job_id, TaskRun.task_id, TaskRun.attempts)
)


def _started_and_announced() -> sa.Select[Any]:
    """Return :data:`START_RUN` with its ``task_started`` event and announcement (PostgreSQL).

    Data-modifying CTEs: the run starts, the job's next event seq is taken, the event is
    stored and ``pg_notify`` announces it, all in one statement.
    """
    started = START_RUN.cte("started")
    seq = (
        sa.update(Job)
        .where(Job.id == started.c.job_id)
        .values(event_seq=Job.event_seq + 1)
        .returning(Job.id, Job.event_seq)
        .cte("seq")
    )
    payload = sa.func.json_build_object(
        "run",
        sa.cast(sa.bindparam("run_id"), sa.Integer),
        "task",
        started.c.task_id,
        "attempt",
        started.c.attempts,
    )
    event = sa.select(seq.c.id, seq.c.event_seq, sa.literal("task_started"), payload, _NOW)
    written = sa.insert(Event).from_select(
        ["job_id", "seq", "type", "payload", "created_at"], event.join_from(seq, started, sa.true())
    )
    announcement = notify.announcement(seq.c.id, seq.c.event_seq)
    return (
        sa.select(
            started.c.job_id, started.c.task_id, started.c.attempts, seq.c.event_seq, announcement
        )
        .join_from(started, seq, sa.true())
        .add_cte(written.cte("written"))
    )


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
START_AND_ANNOUNCE = _started_and_announced()


def _finish(session: orm.Session, run_id: int, status: RunStatus, error: str | None) -> Outcome:
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
