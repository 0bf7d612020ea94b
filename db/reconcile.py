"""Find work that stalled (lost messages, crashed processes) and set it going again.

The database is the source of truth and Redis only the transport: if messages vanish
(a flushed or restarted Redis, a crash between commit and send), the runs they carried
stay unfinished with no sign of life, and this re-dispatches them. Re-dispatching is
safe because outcomes are counted once. A pass that finds nothing costs three SELECTs
and no Redis command.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

import pipelines
from db import counters, dispatch, events
from db.engine import session_scope
from db.models import (
    UNFINISHED_RUN_STATES,
    Batch,
    BatchStatus,
    Job,
    JobStatus,
    TaskRun,
    utcnow,
)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class Repair:
    """One repair: what was done to which job, and the batch to dispatch after commit."""

    job_id: int
    description: str
    dispatch_batch_id: int | None = None
    #: What to send for that batch, read in the repair's transaction.
    dispatch: pipelines.DispatchSpec | None = None


def _stalled_batches(session: orm.Session, cutoff: dt.datetime) -> list[sa.Row[Any]]:
    """Running batches of running jobs with unfinished runs and no sign of life since cutoff.

    A sign of life is any run of the batch changing state (a start, a retry, an outcome)
    or the batch being sent: a pipeline between two steps shows none, but its last step
    finished recently.
    """
    last_sign = sa.func.max(sa.func.coalesce(TaskRun.updated_at, _EPOCH))
    unfinished = sa.func.sum(sa.case((TaskRun.status.in_(UNFINISHED_RUN_STATES), 1), else_=0))
    return list(
        session.execute(
            sa.select(Batch.id, Batch.job_id, Batch.index, Batch.dispatches, unfinished)
            .join(TaskRun, TaskRun.batch_id == Batch.id)
            .join(Job, Job.id == Batch.job_id)
            .where(
                Job.status == JobStatus.RUNNING,
                Batch.status == BatchStatus.RUNNING,
                Batch.dispatched_at < cutoff,
            )
            .group_by(Batch.id, Batch.job_id, Batch.index, Batch.dispatches)
            .having(sa.and_(last_sign < cutoff, unfinished > 0))
        )
    )


def _redispatch(session: orm.Session, batch: sa.Row[Any], stall_s: float) -> Repair | None:
    claimed = session.execute(
        sa.update(Batch)
        .where(
            Batch.id == batch.id,
            Batch.status == BatchStatus.RUNNING,
            Batch.dispatches == batch.dispatches,  # another reconciler got here first
        )
        .values(dispatched_at=utcnow(), dispatches=Batch.dispatches + 1)
    ).rowcount
    if not claimed:
        return None
    tasks = batch[4]
    text = f"re-dispatched {tasks} stalled task(s) of batch {batch.index}"
    payload = {"batch": batch.index, "tasks": tasks, "stall_timeout_s": stall_s}
    events.append(session, batch.job_id, [("batch_redispatched", payload)])
    return Repair(batch.job_id, text, batch.id, dispatch.read_dispatch(session, batch.id))


def _orphaned_successors(session: orm.Session) -> list[Repair]:
    """Start a pending batch whose predecessor completed (defence in depth)."""
    previous = orm.aliased(Batch)
    rows = session.execute(
        sa.select(previous.job_id, previous.index)
        .join(Batch, sa.and_(Batch.job_id == previous.job_id, Batch.index == previous.index + 1))
        .join(Job, Job.id == previous.job_id)
        .where(
            Job.status == JobStatus.RUNNING,
            previous.status == BatchStatus.COMPLETED,
            Batch.status == BatchStatus.PENDING,
        )
    ).all()
    repairs = []
    for job_id, index in rows:
        started = counters.start_next_batch(session, job_id, index, utcnow())
        if started is not None:
            payload = {
                "batch": started.index,
                "mode": started.mode,
                "done": 0,
                "total": started.total,
            }
            events.append(session, job_id, [("batch_started", payload)])
            spec = dispatch.read_dispatch(session, started.id)
            repairs.append(Repair(job_id, f"started batch {started.index}", started.id, spec))
    return repairs


def _unfinalized_jobs(session: orm.Session) -> list[Repair]:
    """Finalize running jobs whose every batch is done (defence in depth)."""
    job_ids = session.scalars(
        sa.select(Job.id).where(
            Job.status == JobStatus.RUNNING, Job.completed_batches >= Job.total_batches
        )
    ).all()
    repairs = []
    for job_id in job_ids:
        status = counters.finalize(session, job_id, utcnow())
        if status is not None:
            repairs.append(Repair(job_id, f"finalized the job as {status}"))
    return repairs


def find_repairs(stall_timeout_s: float) -> list[Repair]:
    """Claim every repair due now, in one transaction; return them with what to send.

    The caller logs each repair and sends its ``dispatch`` after this commits
    (``workers.dispatch.repair``).
    """
    cutoff = utcnow() - dt.timedelta(seconds=stall_timeout_s)
    with session_scope() as session:
        repairs = [
            repair
            for batch in _stalled_batches(session, cutoff)
            if (repair := _redispatch(session, batch, stall_timeout_s)) is not None
        ]
        repairs += _orphaned_successors(session)
        repairs += _unfinalized_jobs(session)
    return repairs
