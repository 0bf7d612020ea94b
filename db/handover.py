"""An outcome's first step: the run's end, its batch's counters, the links it ends, its slot.

These are the statements whose locks every outcome of a batch (and of a job) takes in
turn, so they go in as few round trips as possible. On PostgreSQL a run that succeeded
takes one statement for all of it (data-modifying CTEs): the guarded update of the run,
then its batch's row, the job's row and the linked runs, locked in that order; the
job's row comes back as it is once locked, with its ``ready_waiting`` flag. A run that
failed first skips the rest of its pipeline, then counts them all in one statement. On
SQLite (in-process, one writer at a time) the same steps run one after the other.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from db import ai_spend, counters, release
from db.models import UNFINISHED_RUN_STATES, Batch, BatchMode, BatchStatus, RunStatus, TaskRun

#: Why a pipeline's later steps are skipped, stored and sent with their events.
PIPELINE_SKIP = "skipped: an earlier step failed"

_NOW = sa.bindparam("now", type_=TaskRun.updated_at.type)
# Built once: building a statement costs more Python time than running it does.
#: Ends a run once: only while it is unfinished.
FINISH_RUN = (
    sa.update(TaskRun)
    .where(TaskRun.id == sa.bindparam("run_id"), TaskRun.status.in_(UNFINISHED_RUN_STATES))
    .values(
        status=sa.bindparam("new_status", type_=TaskRun.status.type),
        error=sa.bindparam("new_error", type_=TaskRun.error.type),
        finished_at=_NOW,
        updated_at=_NOW,
    )
    .returning(
        TaskRun.id,
        TaskRun.job_id,
        TaskRun.batch_id,
        TaskRun.position,
        TaskRun.task_id,
        TaskRun.frees_slot,
    )
)


@dataclasses.dataclass(frozen=True)
class BatchCount:
    """A batch's row after an outcome's count."""

    index: int
    mode: str
    status: str
    done: int
    total: int


@dataclasses.dataclass(frozen=True)
class Counted:
    """What counting an outcome changed."""

    batch: BatchCount
    #: Whether this outcome completed the batch (exactly one does).
    completed: bool
    #: Whether a unit linked to the ended runs became ready.
    became_ready: bool
    #: The job's locked row (:data:`release.FREE_SLOTS`), or None when no slot was freed
    #: and nothing became ready: then nothing can be released and the row is not locked here.
    job: Any | None


@dataclasses.dataclass(frozen=True)
class Ended:
    """A run ended by :func:`end_run`, with what ended with it and how it was counted."""

    #: ``id``, ``job_id``, ``batch_id``, ``position``, ``task_id``, ``frees_slot``.
    run: Any
    #: The later steps of its pipeline, skipped because it failed (``id``, ``task_id``).
    skipped: list[Any]
    counts: collections.Counter[str]
    counted: Counted


def end_run(
    session: orm.Session, run_id: int, status: RunStatus, error: str | None, now: Any
) -> Ended | None:
    """End the run with ``status`` and count it (and any steps skipped with it), once.

    Returns None when the run had already ended (a redelivered or cancelled message).
    """
    connection = session.connection()
    finishing = {"run_id": run_id, "new_status": status, "new_error": error, "now": now}
    counts = collections.Counter({status: 1})
    if status == RunStatus.SUCCEEDED and connection.dialect.name == "postgresql":
        return _end_succeeded(connection, finishing, counts)
    run = connection.execute(FINISH_RUN, finishing).one_or_none()
    if run is None:
        return None
    skipped = []
    if status != RunStatus.SUCCEEDED:
        skipped = _skip_rest_of_pipeline(connection, run.batch_id, run.position, now)
        counts[RunStatus.SKIPPED] += len(skipped)
    ended = [run, *skipped]
    counted = _count_and_unlink(
        session,
        batch_id=run.batch_id,
        job_id=run.job_id,
        ended=[row.id for row in ended],
        counts=counts,
        freed=sum(1 for row in ended if row.frees_slot),
        now=now,
    )
    return Ended(run, skipped, counts, counted)


def _end_succeeded(
    connection: sa.Connection, finishing: dict[str, Any], counts: collections.Counter[str]
) -> Ended | None:
    """:func:`end_run` for a run that succeeded, on PostgreSQL: one statement."""
    now = finishing["now"]
    parameters = {**finishing, **counters.increments(counts), "freed": 1}
    parameters["month_start"] = ai_spend.month_start(now)
    row = connection.execute(ended_counted_unlinked_freed(), parameters).one_or_none()
    if row is None:
        return None
    job = row if row.frees_slot else None
    counted = _counted(connection, _batch_count(row), row.became_ready, job, row.job_id, 1, now)
    return Ended(row, [], counts, counted)


def _count_and_unlink(
    session: orm.Session,
    *,
    batch_id: int,
    job_id: int,
    ended: Sequence[int],
    counts: collections.Counter[str],
    freed: int,
    now: Any,
) -> Counted:
    """Count ``counts`` in the batch, unlink the ``ended`` runs and free ``freed`` slots."""
    connection = session.connection()
    parameters = {"row_id": batch_id, **counters.increments(counts), "now": now}
    parameters["ended"] = list(ended)
    added = sum(counts.values())
    if connection.dialect.name == "postgresql":
        if freed:
            parameters |= release.free_slots_parameters(job_id, freed, now)
        row = connection.execute(counted_unlinked_freed(bool(freed)), parameters).one()
        job = row if freed else None
        return _counted(connection, _batch_count(row), row.became_ready, job, job_id, added, now)
    row = connection.execute(counters.COUNT_IN_BATCH, parameters).one()
    batch = BatchCount(row.index, row.mode, row.status, row.done, row.total)
    became_ready = release.unlink(session, ended)
    job = release.free_slots(connection, job_id, freed=freed, now=now) if freed else None
    return _counted(connection, batch, became_ready, job, job_id, added, now)


def _counted(
    connection: sa.Connection,
    batch: BatchCount,
    became_ready: bool,
    job: Any | None,
    job_id: int,
    added: int,
    now: Any,
) -> Counted:
    """Return what the count changed; lock the job's row if a unit became ready without it."""
    if job is None and became_ready:
        job = release.free_slots(connection, job_id, freed=0, now=now)
    crossed = batch.done - added < batch.total <= batch.done
    return Counted(batch, crossed and batch.status == BatchStatus.COMPLETED, became_ready, job)


def _skip_rest_of_pipeline(
    connection: sa.Connection, batch_id: int, position: int, now: Any
) -> list[sa.Row[Any]]:
    """Mark the queued steps after ``position`` skipped, when the batch is a pipeline."""
    is_pipeline = (
        sa.select(Batch.id).where(Batch.id == batch_id, Batch.mode == BatchMode.PIPELINE).exists()
    )
    return list(
        connection.execute(
            sa.update(TaskRun)
            .where(
                TaskRun.batch_id == batch_id,
                TaskRun.position > position,
                TaskRun.status == RunStatus.QUEUED,
                is_pipeline,
            )
            .values(status=RunStatus.SKIPPED, error=PIPELINE_SKIP, finished_at=now)
            .returning(TaskRun.id, TaskRun.task_id, TaskRun.frees_slot)
        )
    )


_BATCH_COLUMNS = ("index", "mode", "status", "done", "total")


def _batch_count(row: Any) -> BatchCount:
    return BatchCount(*(getattr(row, f"b_{name}") for name in _BATCH_COLUMNS))


def _counted_columns(batch: sa.CTE, unlinked: sa.CTE) -> list[sa.ColumnElement[Any]]:
    """The batch's row after the count (``b_<column>``) and whether a unit became ready."""
    ready = sa.func.coalesce(sa.func.bool_or(unlinked.c.waiting_on <= 0), sa.false())
    return [
        *(batch.c[name].label(f"b_{name}") for name in _BATCH_COLUMNS),
        sa.select(ready).scalar_subquery().label("became_ready"),
    ]


@functools.lru_cache(maxsize=2)
def counted_unlinked_freed(frees: bool) -> sa.Select[Any]:
    """Return the one statement counting ended runs in their batch (PostgreSQL).

    It unlinks them and, with ``frees``, frees their slots (``freed``) and returns the
    job's locked row. Each data-modifying CTE runs once, to completion.
    """
    batch = counters.COUNT_IN_BATCH.cte("counted_batch")
    columns = _counted_columns(batch, release.UNLINK.cte("unlinked"))
    if not frees:
        return sa.select(*columns)
    freed = release.FREE_SLOTS.cte("freed")
    return sa.select(*columns, *freed.c).select_from(batch.join(freed, sa.true()))


@functools.cache
def ended_counted_unlinked_freed() -> sa.Select[Any]:
    """Return the one statement ending a run that succeeded and counting it (PostgreSQL).

    The run's batch, the links it ends and, when it frees a slot, the job's row (whose
    columns are NULL otherwise) all follow from the run's row; none changes when the
    run had already ended, and then no row comes back.
    """
    run = FINISH_RUN.cte("finished")
    batch = counters.count_in_batch(sa.select(run.c.batch_id).scalar_subquery())
    batch_cte = batch.cte("counted_batch")
    unlinked = release.unlink_runs(sa.select(run.c.id)).cte("unlinked")
    job_id = sa.select(run.c.job_id).where(run.c.frees_slot).scalar_subquery()
    freed = release.free_slots_of(job_id).cte("freed")
    return sa.select(*run.c, *_counted_columns(batch_cte, unlinked), *freed.c).select_from(
        run.join(batch_cte, sa.true()).outerjoin(freed, sa.true())
    )
