"""Batch and job counters, moved atomically in SQL within an outcome's transaction.

The batch row's lock serializes the increments of its tasks' outcomes, so exactly one
change crosses a batch's total: that change alone completes the batch, starts the next
one and, after the last, finalizes the job.
"""

from __future__ import annotations

import collections
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from db import events
from db.models import Batch, BatchStatus, Job, JobStatus

#: The counters a batch and a job keep, by outcome (``done`` counts them all).
_COUNTERS = ("done", "succeeded", "failed", "skipped", "cancelled")


def increments(row_id: int, counts: collections.Counter[str]) -> dict[str, int]:
    """Parameters of :data:`COUNT_IN_BATCH` and :data:`COUNT_IN_JOB` for ``counts``."""
    added = {f"add_{name}": counts[name] for name in _COUNTERS[1:]}
    return {"row_id": row_id, "add_done": sum(counts.values()), **added}


def _incremented(table: Any, suffix: str = "") -> dict[str, Any]:
    """SET values adding the ``add_<counter>`` parameters to ``table``'s counter columns."""
    return {
        name + suffix: getattr(table, name + suffix) + sa.bindparam(f"add_{name}")
        for name in _COUNTERS
    }


# Built once: building a statement costs more Python time than running it does.
COUNT_IN_BATCH = (
    sa.update(Batch)
    .where(Batch.id == sa.bindparam("row_id"))
    .values(**_incremented(Batch))
    .returning(Batch.id, Batch.index, Batch.mode, Batch.status, Batch.done, Batch.total)
)
COUNT_IN_JOB = (
    sa.update(Job)
    .where(Job.id == sa.bindparam("row_id"))
    .values(
        **_incremented(Job, "_tasks"),
        event_seq=Job.event_seq + sa.bindparam("new_events"),
        completed_batches=Job.completed_batches + sa.bindparam("add_completed_batches"),
        current_batch=sa.func.coalesce(
            sa.bindparam("next_batch_index", type_=sa.Integer), Job.current_batch
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
    )
)


_BATCH_NOW = sa.bindparam("now", type_=Batch.started_at.type)
COMPLETE_BATCH = (
    sa.update(Batch)
    .where(Batch.id == sa.bindparam("row_id"), Batch.status == BatchStatus.RUNNING)
    .values(status=BatchStatus.COMPLETED, finished_at=_BATCH_NOW)
)
START_NEXT_BATCH = (
    sa.update(Batch)
    .where(
        Batch.job_id == sa.bindparam("of_job"),
        Batch.index == sa.bindparam("next_index"),
        Batch.status == BatchStatus.PENDING,
    )
    .values(
        status=BatchStatus.RUNNING,
        started_at=_BATCH_NOW,
        dispatched_at=_BATCH_NOW,
        dispatches=Batch.dispatches + 1,
    )
    .returning(Batch.id, Batch.index, Batch.mode, Batch.status, Batch.done, Batch.total)
)


def count_in_batch(
    session: orm.Session, batch_id: int, counts: collections.Counter[str], now: Any
) -> tuple[sa.Row[Any], bool]:
    """Move the batch's counters; return its row and whether this change completed it."""
    added = sum(counts.values())
    batch = session.connection().execute(COUNT_IN_BATCH, increments(batch_id, counts)).one()
    # The row lock serializes these increments: exactly one change crosses the total.
    crossed = batch.done - added < batch.total <= batch.done
    if not crossed or batch.status != BatchStatus.RUNNING:
        return batch, False
    completed = session.connection().execute(COMPLETE_BATCH, {"row_id": batch_id, "now": now})
    return batch, completed.rowcount == 1


def start_next_batch(session: orm.Session, job_id: int, index: int, now: Any) -> sa.Row[Any] | None:
    """Mark the batch after ``index`` running, once; return it, or None when there is none."""
    parameters = {"of_job": job_id, "next_index": index + 1, "now": now}
    return session.connection().execute(START_NEXT_BATCH, parameters).one_or_none()


def count_in_job(
    session: orm.Session,
    job_id: int,
    counts: collections.Counter[str],
    completed: bool,
    next_batch: sa.Row[Any] | None,
    new_events: int,
) -> sa.Row[Any]:
    parameters = {
        **increments(job_id, counts),
        "new_events": new_events,
        "add_completed_batches": int(completed),
        "next_batch_index": None if next_batch is None else next_batch.index,
    }
    return session.connection().execute(COUNT_IN_JOB, parameters).one()


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


def job_counters(job: sa.Row[Any]) -> dict[str, int]:
    return {
        "done": job.done_tasks,
        "total": job.total_tasks,
        "succeeded": job.succeeded_tasks,
        "failed": job.failed_tasks,
        "skipped": job.skipped_tasks,
        "cancelled": job.cancelled_tasks,
    }
