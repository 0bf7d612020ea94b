"""Batch and job counters, moved atomically in SQL within an outcome's transaction.

The batch row's lock serializes the increments of its tasks' outcomes, so exactly one
change crosses a batch's total: that change alone completes the batch. The job row's
lock does the same for the job: the change that takes its done tasks to its total
finalizes it.
"""

from __future__ import annotations

import collections
import functools
import itertools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects.postgresql import JSONB

from db import events, notify, release
from db.guides import Usage
from db.models import Batch, BatchStatus, Event, Job, JobStatus, utcnow

#: The counters a batch and a job keep, by outcome (``done`` counts them all).
_COUNTERS = ("done", "succeeded", "failed", "skipped", "cancelled")


def increments(counts: collections.Counter[str]) -> dict[str, int]:
    """The ``add_<counter>`` parameters of :func:`count_in_batch` and :data:`COUNT_IN_JOB`."""
    added = {f"add_{name}": counts[name] for name in _COUNTERS[1:]}
    return {"add_done": sum(counts.values()), **added}


def spend_increments(spent: Usage | None) -> dict[str, Any]:
    """Parameters of :data:`COUNT_IN_JOB` adding a guide's AI usage to its job's totals."""
    if spent is None:
        return {"add_prompt_tokens": 0, "add_completion_tokens": 0, "add_cost": 0.0}
    return {
        "add_prompt_tokens": spent.prompt_tokens,
        "add_completion_tokens": spent.completion_tokens,
        "add_cost": spent.cost,
    }


def _incremented(table: Any, suffix: str = "") -> dict[str, Any]:
    """SET values adding the ``add_<counter>`` parameters to ``table``'s counter columns."""
    return {
        name + suffix: getattr(table, name + suffix) + sa.bindparam(f"add_{name}")
        for name in _COUNTERS
    }


_BATCH_NOW = sa.bindparam("now", type_=Batch.started_at.type)
#: True when the increment takes a running batch to its total: exactly one change does.
_COMPLETES = sa.and_(
    Batch.status == BatchStatus.RUNNING,
    Batch.done < Batch.total,
    Batch.done + sa.bindparam("add_done") >= Batch.total,
)


def count_in_batch(batch_id: sa.ColumnElement[Any]) -> sa.Update:
    """Return the update moving a batch's counters by the ``add_<counter>`` parameters.

    When they reach its total it completes the batch (the row's lock serializes these
    increments: exactly one change crosses the total). ``batch_id``: a parameter, or a
    subquery of an enclosing statement.
    """
    return (
        sa.update(Batch)
        .where(Batch.id == batch_id)
        .values(
            **_incremented(Batch),
            status=sa.case((_COMPLETES, BatchStatus.COMPLETED.value), else_=Batch.status),
            finished_at=sa.case((_COMPLETES, _BATCH_NOW), else_=Batch.finished_at),
        )
        .returning(Batch.id, Batch.index, Batch.mode, Batch.status, Batch.done, Batch.total)
    )


# Built once: building a statement costs more Python time than running it does.
COUNT_IN_BATCH = count_in_batch(sa.bindparam("row_id"))
COUNT_IN_JOB = (
    sa.update(Job)
    .where(Job.id == sa.bindparam("row_id"))
    .values(
        **_incremented(Job, "_tasks"),
        event_seq=Job.event_seq + sa.bindparam("new_events"),
        completed_batches=Job.completed_batches + sa.bindparam("add_completed_batches"),
        in_flight=Job.in_flight + sa.bindparam("add_in_flight"),
        total_batches=Job.total_batches + sa.bindparam("add_batches"),
        prompt_tokens=Job.prompt_tokens + sa.bindparam("add_prompt_tokens"),
        completion_tokens=Job.completion_tokens + sa.bindparam("add_completion_tokens"),
        cost=Job.cost + sa.bindparam("add_cost", type_=Job.cost.type),
        current_batch=sa.func.coalesce(
            sa.bindparam("next_batch_index", type_=sa.Integer), Job.current_batch
        ),
        ready_waiting=sa.func.coalesce(
            sa.bindparam("ready_left", type_=sa.Boolean), Job.ready_waiting
        ),
    )
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
        Job.in_flight,
        Job.prompt_tokens,
        Job.completion_tokens,
        Job.cost,
    )
)


def count_in_job(
    session: orm.Session,
    job_id: int,
    counts: collections.Counter[str],
    completed: bool,
    released: release.Released,
    new_events: Sequence[events.NewEvent],
    spent: Usage | None = None,
) -> sa.Row[Any]:
    """Move the job's counters and store ``new_events``, each carrying the counters after.

    ``spent``, the AI usage of the guide this outcome stores, is added to the job's
    token and cost totals in the same statement. On PostgreSQL that is one statement, so
    the job's row stays locked (it numbers the events) for one round trip less.
    """
    parameters = {
        "row_id": job_id,
        **increments(counts),
        "new_events": len(new_events),
        "add_completed_batches": int(completed),
        "add_in_flight": released.slots,
        "add_batches": released.batches,
        "next_batch_index": released.last_index,
        "ready_left": released.ready_left,
        **spend_increments(spent),
    }
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        parameters["now"] = utcnow()
        for i, (kind, payload) in enumerate(new_events):
            parameters.update({f"type_{i}": kind, f"payload_{i}": payload})
        job = connection.execute(counted_and_recorded(len(new_events)), parameters).one()
        notify.announce_after_commit(session, job_id, job.event_seq)
        return job
    job = connection.execute(COUNT_IN_JOB, parameters).one()
    for _, payload in new_events:
        payload["job"] = job_counters(job)
    events.insert(session, job_id, job.event_seq, new_events)
    return job


@functools.lru_cache(maxsize=16)
def counted_and_recorded(count: int) -> sa.Select[Any]:
    """Return :data:`COUNT_IN_JOB` storing and announcing ``count`` events (PostgreSQL).

    Data-modifying CTEs: each event's payload (a parameter) gets the job's counters
    after the change merged in as ``"job"``, the way :func:`job_counters` gives them.
    """
    job = COUNT_IN_JOB.cte("job")
    job_id = sa.cast(sa.bindparam("row_id"), sa.Integer)
    counters = sa.func.jsonb_build_object(
        *itertools.chain.from_iterable(
            (name, job.c[column.key]) for name, column in _JOB_COUNTERS.items()
        )
    )
    carried = sa.func.jsonb_build_object("job", counters)

    def payload(i: int) -> sa.ColumnElement[Any]:
        given = sa.cast(sa.bindparam(f"payload_{i}", type_=Event.payload.type), JSONB)
        return sa.cast(given.op("||")(carried), Event.payload.type)

    rows = [
        sa.select(
            job_id,
            job.c.event_seq - (count - 1 - i),
            sa.bindparam(f"type_{i}", type_=Event.type.type),
            payload(i),
            sa.bindparam("now", type_=Event.created_at.type),
        ).select_from(job)
        for i in range(count)
    ]
    written = sa.insert(Event).from_select(
        ["job_id", "seq", "type", "payload", "created_at"],
        rows[0] if count == 1 else sa.union_all(*rows),
    )
    announcement = notify.announcement(job_id, job.c.event_seq)
    return sa.select(job, announcement).add_cte(written.cte("written"))


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
    job = (
        session.connection()
        .execute(
            sa.update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
            .values(status=final, finished_at=now, current_batch=None)
            .returning(Job.status, Job.done_tasks, Job.succeeded_tasks, Job.failed_tasks)
        )
        .one_or_none()
    )
    if job is None:
        return None
    events.append(session, job_id, [("job_finished", {"status": job.status})])
    return job.status


def batch_payload(batch: sa.Row[Any]) -> dict[str, Any]:
    return {"batch": batch.index, "mode": batch.mode, "done": batch.done, "total": batch.total}


#: The job's counters as events carry them, by their names there.
_JOB_COUNTERS = {
    "done": Job.done_tasks,
    "total": Job.total_tasks,
    "succeeded": Job.succeeded_tasks,
    "failed": Job.failed_tasks,
    "skipped": Job.skipped_tasks,
    "cancelled": Job.cancelled_tasks,
    "in_flight": Job.in_flight,
    "prompt_tokens": Job.prompt_tokens,
    "completion_tokens": Job.completion_tokens,
    "cost": Job.cost,
}


def job_counters(job: sa.Row[Any]) -> dict[str, int | float]:
    return {name: getattr(job, column.key) for name, column in _JOB_COUNTERS.items()}
