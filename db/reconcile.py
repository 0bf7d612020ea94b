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
from db import counters, dispatch, events, release
from db.engine import session_scope
from db.models import (
    UNFINISHED_RUN_STATES,
    AIWaiter,
    Batch,
    BatchStatus,
    Job,
    JobStatus,
    RunStatus,
    TaskRun,
    utcnow,
)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class Repair:
    """One repair: what was done to which job, and the batch to dispatch after commit."""

    job_id: int
    description: str
    #: What to send, read or released in the repair's transaction.
    dispatches: tuple[pipelines.DispatchSpec, ...] = ()


def _stalled_batches(session: orm.Session, cutoff: dt.datetime) -> list[sa.Row[Any]]:
    """Running batches of running jobs with unfinished runs and no sign of life since cutoff.

    A sign of life is any run of the batch changing state (a start, a retry, an outcome)
    or the batch being sent: a pipeline between two steps shows none, but its last step
    finished recently. A batch with a run parked for an AI call slot is alive: a holder
    of a slot wakes it, or the backstop (``db.limit_waits.wake_lost``) does.
    """
    last_sign = sa.func.max(sa.func.coalesce(TaskRun.updated_at, _EPOCH))
    waiting = orm.aliased(TaskRun)
    parked = (
        sa.select(AIWaiter.id)
        .join(waiting, waiting.id == AIWaiter.run_id)
        .where(waiting.batch_id == Batch.id)
        .exists()
    )
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
                ~parked,
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
    spec = dispatch.read_dispatch(session, batch.id)
    return Repair(batch.job_id, text, () if spec is None else (spec,))


def _unreleased_ready_units(session: orm.Session) -> list[Repair]:
    """Release ready units of running jobs that have free slots (defence in depth).

    An outcome releases what it makes ready in its own transaction; this finds what
    none released (a job whose plan was changed by hand, a bug).
    """
    job_ids = session.scalars(
        sa.select(TaskRun.job_id)
        .join(Job, Job.id == TaskRun.job_id)
        .where(
            Job.status == JobStatus.RUNNING,
            Job.in_flight < Job.max_in_flight,
            TaskRun.status == RunStatus.WAITING,
            TaskRun.step == 0,
            TaskRun.waiting_on <= 0,
        )
        .distinct()
    ).all()
    repairs = []
    for job_id in job_ids:
        released = release.release(session, job_id, freed=0, now=utcnow())
        release.record(session, job_id, released)
        if released.batches:
            text = f"released {released.batches} ready batch(es) that nothing had released"
            repairs.append(Repair(job_id, text, released.dispatches))
    return repairs


def _unfinalized_jobs(session: orm.Session) -> list[Repair]:
    """Finalize running jobs whose every task is done (defence in depth)."""
    job_ids = session.scalars(
        sa.select(Job.id).where(Job.status == JobStatus.RUNNING, Job.done_tasks >= Job.total_tasks)
    ).all()
    repairs = []
    for job_id in job_ids:
        status = counters.finalize(session, job_id, utcnow())
        if status is not None:
            repairs.append(Repair(job_id, f"finalized the job as {status}"))
    return repairs


def find_repairs(stall_timeout_s: float) -> list[Repair]:
    """Claim every repair due now, in one transaction; return them with what to send.

    The caller logs each repair and sends its ``dispatches`` after this commits
    (``workers.dispatch.repair``).
    """
    cutoff = utcnow() - dt.timedelta(seconds=stall_timeout_s)
    with session_scope() as session:
        repairs = [
            repair
            for batch in _stalled_batches(session, cutoff)
            if (repair := _redispatch(session, batch, stall_timeout_s)) is not None
        ]
        repairs += _unreleased_ready_units(session)
        repairs += _unfinalized_jobs(session)
    return repairs
