"""A job's events: numbered per job in commit order, stored, announced, replayed."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from db import notify
from db.models import Event, Job, utcnow

#: An event before it is stored: its type and JSON payload.
NewEvent = tuple[str, dict[str, Any]]


def insert(session: orm.Session, job_id: int, last_seq: int, events: Sequence[NewEvent]) -> None:
    """Store ``events`` as the job's events ending at ``last_seq`` and announce them.

    ``last_seq`` must come from an ``UPDATE jobs SET event_seq = event_seq + n`` in the
    same transaction: the job's row lock then keeps sequence order equal to commit
    order, so a watcher that saw seq ``s`` has seen everything before it.
    """
    if not events:
        return
    first = last_seq - len(events) + 1
    now = utcnow()
    parameters: dict[str, Any] = {"of_job": job_id, "now": now}
    for i, (kind, payload) in enumerate(events):
        parameters.update({f"seq_{i}": first + i, f"type_{i}": kind, f"payload_{i}": payload})
    notify.publish(session, job_id, last_seq, along=_insert_events(len(events)), with_=parameters)


@functools.lru_cache(maxsize=16)
def _insert_events(count: int) -> sa.Insert:
    """Return an INSERT of ``count`` events of one job, built once per count."""
    job_id, now = sa.bindparam("of_job"), sa.bindparam("now", type_=Event.created_at.type)
    return sa.insert(Event).values(
        [
            {
                "job_id": job_id,
                "seq": sa.bindparam(f"seq_{i}"),
                "type": sa.bindparam(f"type_{i}", type_=Event.type.type),
                "payload": sa.bindparam(f"payload_{i}", type_=Event.payload.type),
                "created_at": now,
            }
            for i in range(count)
        ]
    )


RESERVE_SEQ = (
    sa.update(Job)
    .where(Job.id == sa.bindparam("job_id"))
    .values(event_seq=Job.event_seq + sa.bindparam("count"))
    .returning(Job.event_seq)
)


def append(session: orm.Session, job_id: int, events: Sequence[NewEvent]) -> int:
    """Reserve sequence numbers on the job row, store ``events``; return the last seq."""
    parameters = {"job_id": job_id, "count": len(events)}
    last_seq = session.connection().execute(RESERVE_SEQ, parameters).scalar_one()
    insert(session, job_id, last_seq, events)
    return last_seq


def since(session: orm.Session, job_id: int, after_seq: int, *, limit: int = 500) -> list[Event]:
    """Return the job's events with ``seq > after_seq``, oldest first."""
    return list(
        session.scalars(
            sa.select(Event)
            .where(Event.job_id == job_id, Event.seq > after_seq)
            .order_by(Event.seq)
            .limit(limit)
        )
    )
