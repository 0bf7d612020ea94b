"""Writing a release: its batches, and each released run queued into its batch.

On PostgreSQL that is one statement whose shape does not depend on how many batches or
runs it writes (arrays, unnested): the batches are inserted in a data-modifying CTE and
the runs queued into them by index. On SQLite, a bulk insert then an update per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from db.models import Batch, BatchStatus, RunStatus, TaskRun

#: A batch to write: its mode and its runs, in order.
NewBatch = tuple[str, Sequence[int]]

_NOW = sa.bindparam("now", type_=TaskRun.updated_at.type)
# Built once: building a statement costs more Python time than running it does.
#: Puts one released run into its batch.
QUEUE_RUN = (
    sa.update(TaskRun)
    .where(TaskRun.id == sa.bindparam("run_id"), TaskRun.status == RunStatus.WAITING)
    .values(
        status=RunStatus.QUEUED,
        batch_id=sa.bindparam("into_batch"),
        position=sa.bindparam("at"),
        updated_at=_NOW,
    )
)


def _unnest(name: str, item: Any) -> sa.ColumnElement[Any]:
    return sa.func.unnest(sa.bindparam(name, type_=ARRAY(item)))


def _queued_in_new_batches() -> sa.Update:
    """Return the PostgreSQL statement of :func:`write_batches`.

    Its parameters (none named as a column, so none becomes a SET clause): ``of_job``,
    ``now``, the batches' ``indexes``, ``modes`` and ``totals``, and the runs' ``run_ids``,
    ``into_indexes`` and ``positions``.
    """
    columns = ["job_id", "index", "mode", "total", "status", "started_at", "dispatched_at"]
    batches = sa.select(
        sa.bindparam("of_job", type_=sa.Integer),
        _unnest("indexes", sa.Integer),
        _unnest("modes", sa.String),
        _unnest("totals", sa.Integer),
        sa.literal(BatchStatus.RUNNING.value),
        sa.bindparam("now", type_=Batch.started_at.type),
        sa.bindparam("now", type_=Batch.started_at.type),
        sa.literal(1),
    )
    inserted = (
        sa.insert(Batch)
        .from_select([*columns, "dispatches"], batches)
        .returning(Batch.id, Batch.index)
        .cte("new_batches")
    )
    runs = sa.select(
        _unnest("run_ids", sa.Integer).label("run_id"),
        _unnest("into_indexes", sa.Integer).label("batch_index"),
        _unnest("positions", sa.Integer).label("at"),
    ).subquery("released")
    return (
        sa.update(TaskRun)
        .where(
            TaskRun.id == runs.c.run_id,
            TaskRun.status == RunStatus.WAITING,
            inserted.c.index == runs.c.batch_index,
        )
        .values(
            status=RunStatus.QUEUED,
            batch_id=inserted.c.id,
            position=runs.c.at,
            updated_at=_NOW,
        )
    )


QUEUED_IN_NEW_BATCHES = _queued_in_new_batches()


def write_batches(
    connection: sa.Connection, job_id: int, batches: Sequence[NewBatch], first: int, now: Any
) -> None:
    """Insert ``batches``, numbered from ``first``, and queue their runs into them."""
    indexes = [first + i for i in range(len(batches))]
    if connection.dialect.name == "postgresql":
        parameters = {
            "of_job": job_id,
            "now": now,
            "indexes": indexes,
            "modes": [mode for mode, _ in batches],
            "totals": [len(run_ids) for _, run_ids in batches],
            "run_ids": [run_id for _, run_ids in batches for run_id in run_ids],
            "into_indexes": [i for i, (_, ids) in zip(indexes, batches, strict=True) for _ in ids],
            "positions": [position for _, ids in batches for position in range(len(ids))],
        }
        connection.execute(QUEUED_IN_NEW_BATCHES, parameters)
        return
    rows = [
        {
            "job_id": job_id,
            "index": index,
            "mode": mode,
            "total": len(run_ids),
            "status": BatchStatus.RUNNING,
            "started_at": now,
            "dispatched_at": now,
            "dispatches": 1,
        }
        for index, (mode, run_ids) in zip(indexes, batches, strict=True)
    ]
    returning = sa.insert(Batch).returning(Batch.id, sort_by_parameter_order=True)
    batch_ids = connection.execute(returning, rows).scalars().all()
    queued = [
        {"run_id": run_id, "into_batch": batch_id, "at": position, "now": now}
        for batch_id, (_, run_ids) in zip(batch_ids, batches, strict=True)
        for position, run_id in enumerate(run_ids)
    ]
    connection.execute(QUEUE_RUN, queued)
