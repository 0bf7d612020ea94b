"""An outcome's counting step: its batch's counters, the links it ends, the slots it frees.

These are the statements whose locks every outcome of a batch (and of a job) takes in
turn, so they go in as few round trips as possible. On PostgreSQL they are one statement
(data-modifying CTEs): the batch's row, the job's row and the linked runs are locked in
that order, and the job's row comes back as it is once locked, with its
``ready_waiting`` flag. On SQLite (in-process, one writer at a time) they run one after
the other.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from db import counters, release
from db.models import BatchStatus


@dataclasses.dataclass(frozen=True)
class Counted:
    """What :func:`count_and_unlink` changed."""

    #: The batch's row after the count: ``index``, ``mode``, ``status``, ``done``, ``total``.
    batch: Any
    #: Whether this outcome completed the batch (exactly one does).
    completed: bool
    #: Whether a unit linked to the ended runs became ready.
    became_ready: bool
    #: The job's locked row (:data:`release.FREE_SLOTS`), or None when no slot was freed
    #: and nothing became ready: then nothing can be released and the row is not locked here.
    job: Any | None


_BATCH_COLUMNS = ("index", "mode", "status", "done", "total")


@dataclasses.dataclass(frozen=True)
class _BatchRow:
    index: int
    mode: str
    status: str
    done: int
    total: int


def count_and_unlink(
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
    parameters = {**counters.increments(batch_id, counts), "now": now, "ended": list(ended)}
    if connection.dialect.name == "postgresql":
        if freed:
            parameters |= release.free_slots_parameters(job_id, freed, now)
        row = connection.execute(counted_unlinked_freed(bool(freed)), parameters).one()
        batch = _BatchRow(row.b_index, row.b_mode, row.b_status, row.b_done, row.b_total)
        became_ready, job = row.became_ready, row if freed else None
    else:
        batch = connection.execute(counters.COUNT_IN_BATCH, parameters).one()
        became_ready = release.unlink(session, ended)
        job = release.free_slots(connection, job_id, freed=freed, now=now) if freed else None
    if job is None and became_ready:
        job = release.free_slots(connection, job_id, freed=0, now=now)
    added = sum(counts.values())
    crossed = batch.done - added < batch.total <= batch.done
    completed = crossed and batch.status == BatchStatus.COMPLETED
    return Counted(batch, completed, became_ready, job)


@functools.lru_cache(maxsize=2)
def counted_unlinked_freed(frees: bool) -> sa.Select[Any]:
    """Return the one statement of :func:`count_and_unlink` on PostgreSQL.

    Each data-modifying CTE runs once, to completion; the main query reads the batch's
    row, whether a linked unit became ready and (``frees``) the job's locked row.
    """
    batch = counters.COUNT_IN_BATCH.cte("counted_batch")
    unlinked = release.UNLINK.cte("unlinked")
    ready = sa.func.coalesce(sa.func.bool_or(unlinked.c.waiting_on <= 0), sa.false())
    columns = [
        *(batch.c[name].label(f"b_{name}") for name in _BATCH_COLUMNS),
        sa.select(ready).scalar_subquery().label("became_ready"),
    ]
    if not frees:
        return sa.select(*columns)
    freed = release.FREE_SLOTS.cte("freed")
    return sa.select(*columns, *freed.c).select_from(batch.join(freed, sa.true()))
