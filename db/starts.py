"""Starting a task run: marked running once per attempt, or skipped, or dropped.

A start is a guarded ``UPDATE ... WHERE status IN (unfinished)`` that also checks the
run's dependencies, plus its ``task_started`` event. On PostgreSQL both go in one
autocommitted statement, so the job's row (which numbers events) is locked only while
it runs.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from db import events, notify, progress
from db.engine import get_engine, session_scope, statements_committing_alone
from db.models import (
    UNFINISHED_RUN_STATES,
    Event,
    Job,
    RunStatus,
    Task,
    TaskRun,
    task_dependencies,
    utcnow,
)
from db.run_reads import RunRead

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
class Started:
    """What :func:`start_run` decided, and what its ``prepare`` callback returned."""

    decision: Start
    outcome: progress.Outcome = dataclasses.field(default_factory=progress.Outcome)
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
            return _not_started(session, run_id)
    with session_scope() as session:
        connection = session.connection()
        started = connection.execute(START_RUN, {"run_id": run_id, "now": utcnow()}).one_or_none()
        if started is None:
            return _not_started(session, run_id)
        # Read before the event locks the job's row: concurrent starts of a batch
        # then queue on that lock for as short a time as possible.
        prepared = None if prepare is None else prepare(session, run_id)
        payload = events.payload_from_row(STARTED_PAYLOAD, started)
        events.append(session, started.job_id, [("task_started", payload)])
        return Started(Start.RUN, prepared=prepared)


def _not_started(session: orm.Session, run_id: int) -> Started:
    """Find out why the run's guarded start matched nothing; record a skip if that is why."""
    connection = session.connection()
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
    return Started(Start.SKIPPED, progress.finish(session, run_id, RunStatus.SKIPPED, error))


def _start_announced(
    run_id: int, prepare: Callable[[orm.Session, int], Any] | None
) -> Started | None:
    """Start the run and announce it in one autocommitted statement (PostgreSQL).

    The job's row is locked only while that statement runs, instead of across three
    round trips; a ``prepare`` that is a :class:`~db.run_reads.RunRead` is read in it
    too. Returns None when the run did not start (the caller finds out why).
    """
    read = prepare if isinstance(prepare, RunRead) else None
    statement = START_AND_ANNOUNCE if read is None else start_and_read(read)
    with statements_committing_alone() as connection:
        rows = connection.execute(statement, {"run_id": run_id, "now": utcnow()}).all()
        if not rows:
            return None
        notify.announce(rows[0].job_id, rows[0].event_seq)
        if read is not None:
            return Started(Start.RUN, prepared=read.parse(_read_rows(rows)))
        if prepare is None:
            return Started(Start.RUN)
        with orm.Session(bind=connection) as session:
            return Started(Start.RUN, prepared=prepare(session, run_id))


#: Prefix of a riding read's columns in the start's statement.
_READ = "read_"


@functools.lru_cache(maxsize=8)
def start_and_read(read: RunRead) -> sa.Select[Any]:
    """Return :data:`START_AND_ANNOUNCE` with ``read``'s rows joined on, built once per read.

    Its side effects run once, whatever the number of rows. The join is an outer one:
    a start never goes unseen for want of rows to read. (Its parameters are those of
    :data:`START_AND_ANNOUNCE`: compile it ahead the same way.)
    """
    announced = START_AND_ANNOUNCE.cte("announced")
    rows = read.select.order_by(None).subquery("read")
    return (
        sa.select(announced, *(column.label(_READ + column.key) for column in rows.c))
        .select_from(announced)
        .outerjoin(rows, sa.true())
        .order_by(*(rows.c[name] for name in read.order_by))
    )


def _read_rows(rows: Sequence[sa.Row[Any]]) -> list[dict[str, Any]]:
    """Return the riding read's part of the start's rows (none when it found nothing)."""
    parts = [
        {key[len(_READ) :]: value for key, value in row._mapping.items() if key.startswith(_READ)}
        for row in rows
    ]
    return [part for part in parts if any(value is not None for value in part.values())]


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
    .returning(TaskRun.id, TaskRun.job_id, TaskRun.task_id, TaskRun.attempts)
)
#: The ``task_started`` payload: its keys and the columns of the started run they hold
#: (built from this one mapping in Python on SQLite and in SQL on PostgreSQL).
STARTED_PAYLOAD = {"run": "id", "task": "task_id", "attempt": "attempts"}


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
    payload = events.payload_in_sql(STARTED_PAYLOAD, started)
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


START_AND_ANNOUNCE = _started_and_announced()
