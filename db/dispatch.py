"""What to send for a running batch: its unfinished runs, in order."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import orm

from db.engine import session_scope
from db.models import UNFINISHED_RUN_STATES, Batch, BatchMode, BatchStatus, HandsOn, Job, TaskRun
from pipelines import DispatchSpec

__all__ = ["DispatchSpec", "load_dispatch", "read_dispatch"]


# Built once: building a statement costs more Python time than running it does.
#: One row per run of the batch, in order, each with the batch's and job's settings.
_RUNS_TO_SEND = (
    sa.select(
        Batch.mode,
        Batch.status.label("batch_status"),
        Job.max_retries,
        TaskRun.id,
        TaskRun.status,
        TaskRun.task_id,
        TaskRun.rank,
    )
    .join(Job, Job.id == Batch.job_id)
    .join(TaskRun, TaskRun.batch_id == Batch.id)
    .where(Batch.id == sa.bindparam("batch_id"))
    .order_by(TaskRun.position)
)


def load_dispatch(batch_id: int) -> DispatchSpec | None:
    """Return what to send for a running batch: its unfinished runs in order."""
    with session_scope() as session:
        return read_dispatch(session, batch_id)


def read_dispatch(session: orm.Session, batch_id: int) -> DispatchSpec | None:
    """Like :func:`load_dispatch`, inside the caller's transaction (the one starting it)."""
    connection = session.connection()
    runs = connection.execute(_RUNS_TO_SEND, {"batch_id": batch_id}).all()
    if not runs or runs[0].batch_status != BatchStatus.RUNNING:
        return None
    batch = runs[0]
    pending = [i for i, run in enumerate(runs) if run.status in UNFINISHED_RUN_STATES]
    previous_output = None
    if batch.mode == BatchMode.PIPELINE and pending and pending[0] > 0:
        previous_task = runs[pending[0] - 1].task_id
        previous_output = connection.scalar(
            sa.select(HandsOn.markdown).where(HandsOn.task_id == previous_task)
        )
    return DispatchSpec(
        mode=batch.mode,
        run_ids=tuple(runs[i].id for i in pending),
        max_retries=batch.max_retries,
        previous_output=previous_output,
        ranks=tuple(runs[i].rank for i in pending),
    )
