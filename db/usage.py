"""Redis command usage, metered by each process and stored here at a low rate.

One row per flush, process kind, command and job (None: commands not sent for a job's
message, e.g. fetches and heartbeats). The table lives on the shared metadata; its
migration is ``0002_redis_usage``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.orm import Mapped, mapped_column

from db.engine import session_scope
from db.models import Base, TaskRun, utcnow

#: Monthly command cap of the hosted Redis free tier the origin ran out of.
DEFAULT_MONTHLY_CAP = 500_000


class RedisUsage(Base):
    """Redis commands one kind of process sent between two flushes."""

    __tablename__ = "redis_usage"

    id: Mapped[int] = mapped_column(primary_key=True)
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    process_kind: Mapped[str] = mapped_column(sa.String(32))
    command: Mapped[str] = mapped_column(sa.String(64))
    # No foreign key: usage outlives jobs that retention deletes.
    job_id: Mapped[int | None] = mapped_column(index=True)
    count: Mapped[int] = mapped_column(sa.BigInteger)


def record(process_kind: str, counts: Mapping[tuple[str, int | None], int]) -> int:
    """Store counts keyed by (command, task run id or None); return the rows written.

    Task run ids are turned into job ids with one query.
    """
    if not counts:
        return 0
    run_ids = {run_id for _, run_id in counts if run_id is not None}
    now = utcnow()
    with session_scope() as session:
        query = sa.select(TaskRun.id, TaskRun.job_id).where(TaskRun.id.in_(run_ids))
        jobs = {run_id: job_id for run_id, job_id in session.execute(query)}
        totals: dict[tuple[str, int | None], int] = {}
        for (command, run_id), count in counts.items():
            key = (command, jobs.get(run_id) if run_id is not None else None)
            totals[key] = totals.get(key, 0) + count
        session.add_all(
            RedisUsage(recorded_at=now, process_kind=process_kind, command=c, job_id=j, count=n)
            for (c, j), n in totals.items()
        )
    return len(totals)


def job_commands(session: orm.Session, job_id: int) -> int:
    """Return the Redis commands counted (and flushed) for a job so far."""
    total = session.scalar(
        sa.select(sa.func.sum(RedisUsage.count)).where(RedisUsage.job_id == job_id)
    )
    return int(total or 0)


@dataclasses.dataclass(frozen=True)
class Budget:
    """Usage over a recent window and its projection to a month."""

    hours: float
    total: int
    by_process: dict[str, int]
    by_command: dict[str, int]
    monthly_cap: int

    @property
    def per_month(self) -> float:
        """The window's usage projected to 30 days."""
        return self.total * (30 * 24) / self.hours

    @property
    def share_of_cap(self) -> float:
        """The projection as a fraction of the monthly cap."""
        return self.per_month / self.monthly_cap


def budget(*, hours: float = 24, monthly_cap: int = DEFAULT_MONTHLY_CAP) -> Budget:
    """Sum the usage of the last ``hours`` by process kind and by command."""
    since = utcnow() - dt.timedelta(hours=hours)
    recent = RedisUsage.recorded_at >= since
    with session_scope() as session:
        by_process = _sums(session, RedisUsage.process_kind, recent)
        by_command = _sums(session, RedisUsage.command, recent)
    return Budget(
        hours=hours,
        total=sum(by_command.values()),
        by_process=by_process,
        by_command=by_command,
        monthly_cap=monthly_cap,
    )


def _sums(session: orm.Session, column: Any, where: Any) -> dict[str, int]:
    """Return ``{value of column: commands}``, largest first."""
    rows = session.execute(
        sa.select(column, sa.func.sum(RedisUsage.count)).where(where).group_by(column)
    )
    return dict(sorted(((key, int(n)) for key, n in rows), key=lambda item: -item[1]))
