"""Retention: delete old events and finished jobs, in small transactions."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from db.engine import session_scope
from db.models import Event, Job, JobStatus, utcnow

#: Rows deleted per transaction, so a purge never holds locks for long.
CHUNK = 500
_FINISHED = (JobStatus.SUCCEEDED, JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELLED)


def _delete_chunks(model: type, where: sa.ColumnElement[bool]) -> int:
    """Delete matching rows ``CHUNK`` at a time; return how many went."""
    total = 0
    while True:
        with session_scope() as session:
            ids = sa.select(model.id).where(where).limit(CHUNK).scalar_subquery()
            deleted = session.execute(sa.delete(model).where(model.id.in_(ids))).rowcount
        total += deleted
        if deleted < CHUNK:
            return total


def purge(older_than_days: float) -> dict[str, int]:
    """Delete finished jobs (with their batches, runs, events) and events older than the age.

    Guides are kept: they belong to tasks, not to jobs.
    """
    cutoff = utcnow() - dt.timedelta(days=older_than_days)
    jobs = _delete_chunks(Job, sa.and_(Job.status.in_(_FINISHED), Job.finished_at < cutoff))
    events = _delete_chunks(Event, Event.created_at < cutoff)
    return {"jobs": jobs, "events": events}
