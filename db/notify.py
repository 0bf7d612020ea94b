"""Tell watchers that a job has new events: told, never asked.

Writers call :func:`publish` inside their transaction. On PostgreSQL that is a
``pg_notify`` (delivered to every listening process at commit, dropped on rollback); in
every database it also queues an in-process signal sent right after commit, which is
how the embedded mode (one process) and same-process watchers learn of events.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import sqlalchemy as sa
from blinker import Namespace
from sqlalchemy import event, orm

from db.engine import Session

logger = logging.getLogger(__name__)

#: PostgreSQL channel carrying ``"<job_id>:<seq>"`` payloads.
CHANNEL = "handson_events"

_signals = Namespace()
#: Sent after commit with ``job_id`` and ``seq`` (the job's newest event).
job_event = _signals.signal("job-event")

_PENDING = "handson_pending_notifications"


def publish(
    session: orm.Session,
    job_id: int,
    seq: int,
    along: sa.Insert | None = None,
    with_: dict[str, Any] | None = None,
) -> None:
    """On commit of ``session``'s transaction, announce that ``job_id`` has events to ``seq``.

    ``along`` is a write to run with it (its parameters in ``with_``): on PostgreSQL both
    go in one statement (the write as a data-modifying CTE of the ``SELECT pg_notify``),
    one round trip less while the writer holds the job's row lock.
    """
    if session.get_bind().dialect.name == "postgresql":
        parameters = {**(with_ or {}), "notify_payload": f"{job_id}:{seq}"}
        session.connection().execute(_announcement(along), parameters)
    elif along is not None:
        session.connection().execute(along, with_ or {})
    announce_after_commit(session, job_id, seq)


def announce_after_commit(session: orm.Session, job_id: int, seq: int) -> None:
    """Have :func:`announce` run once ``session``'s transaction commits (never on rollback)."""
    session.info.setdefault(_PENDING, {})[job_id] = seq


@functools.lru_cache(maxsize=16)
def _announcement(along: sa.Insert | None) -> sa.Select[Any]:
    """Return ``SELECT pg_notify(...)`` with ``along`` as a CTE, built once per write."""
    announce = sa.select(sa.func.pg_notify(CHANNEL, sa.bindparam("notify_payload")))
    return announce if along is None else announce.add_cte(along.cte("written"))


def announcement(job_id: Any, seq: Any) -> sa.ColumnElement[Any]:
    """Return ``pg_notify`` of ``job_id``'s events up to ``seq`` (columns of a statement)."""
    as_text = sa.cast(job_id, sa.String) + ":" + sa.cast(seq, sa.String)
    return sa.func.pg_notify(CHANNEL, as_text)


def announce(job_id: int, seq: int) -> None:
    """Tell this process's watchers that ``job_id`` has committed events up to ``seq``."""
    # A failing observer is logged here; it never breaks the writer.
    try:
        job_event.send(None, job_id=job_id, seq=seq)
    except Exception:
        logger.exception("A job-event observer failed for job %s.", job_id)


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: orm.Session) -> None:
    for job_id, seq in session.info.pop(_PENDING, {}).items():
        announce(job_id, seq)


@event.listens_for(Session, "after_rollback")
def _drop_after_rollback(session: orm.Session) -> None:
    session.info.pop(_PENDING, None)
