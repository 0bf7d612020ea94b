"""A job's events: numbered per job in commit order, stored, announced, replayed."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from db import notify
from db.models import Event, Job, utcnow

#: An event before it is stored: its type and JSON payload.
NewEvent = tuple[str, dict[str, Any]]


def payload_from_row(fields: Mapping[str, str], row: sa.Row[Any]) -> dict[str, Any]:
    """Return a payload whose ``fields`` (key -> column name) are taken from ``row``.

    The same ``fields`` give the payload in SQL (:func:`payload_in_sql`), so SQLite
    (Python) and PostgreSQL (one statement) store the same events.
    """
    return {key: row._mapping[column] for key, column in fields.items()}


def payload_in_sql(fields: Mapping[str, str], source: Any) -> sa.ColumnElement[Any]:
    """Return the JSON object :func:`payload_from_row` builds, as SQL over ``source``'s columns."""
    return sa.func.json_build_object(
        *itertools.chain.from_iterable((key, source.c[column]) for key, column in fields.items())
    )


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
    """Return an INSERT of ``count`` events of one job, built once per count.

    The rows come from a ``SELECT ... UNION ALL SELECT ...`` of bound values rather
    than a multi-row ``VALUES``: SQLAlchemy caches the compiled form of the former
    only, and compiling it anew cost more than running it.
    """
    columns = ["job_id", "seq", "type", "payload", "created_at"]

    def bound(name: str, column: str) -> sa.BindParameter[Any]:
        return sa.bindparam(name, type_=Event.__table__.c[column].type)

    rows = [
        sa.select(
            bound("of_job", "job_id"),
            bound(f"seq_{i}", "seq"),
            bound(f"type_{i}", "type"),
            bound(f"payload_{i}", "payload"),
            bound("now", "created_at"),
        )
        for i in range(count)
    ]
    selected = rows[0] if count == 1 else sa.union_all(*rows)
    return sa.insert(Event).from_select(columns, selected)


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


# Built once: building a statement costs more Python time than running it does.
_SINCE = (
    sa.select(Event.seq, Event.type, Event.payload)
    .where(Event.job_id == sa.bindparam("job_id"), Event.seq > sa.bindparam("after_seq"))
    .order_by(Event.seq)
    .limit(sa.bindparam("limit"))
)


def since(
    session: orm.Session, job_id: int, after_seq: int, *, limit: int = 500
) -> Sequence[sa.Row[Any]]:
    """Return the job's events (seq, type, payload) with ``seq > after_seq``, oldest first."""
    parameters = {"job_id": job_id, "after_seq": after_seq, "limit": limit}
    return session.connection().execute(_SINCE, parameters).all()
