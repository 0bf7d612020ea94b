"""A named lease in the database: of several contenders, exactly one is active.

Works the same on SQLite and PostgreSQL. The holder renews it well before it expires;
when the holder dies, another contender takes it over once it has expired.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from db.engine import session_scope, upsert_insert
from db.models import Lease, utcnow


def acquire(name: str, holder: str, *, ttl_s: float) -> bool:
    """Take or renew lease ``name`` for ``holder``; return True when ``holder`` has it."""
    now = utcnow()
    expires = now + dt.timedelta(seconds=ttl_s)
    with session_scope() as session:
        renewed = session.execute(
            sa.update(Lease)
            .where(Lease.name == name, sa.or_(Lease.holder == holder, Lease.expires_at < now))
            .values(holder=holder, expires_at=expires)
        ).rowcount
        if renewed:
            return True
        # Nobody held it yet: of two contenders inserting at once, one wins.
        inserted = session.execute(
            upsert_insert(session.get_bind().dialect.name, Lease)
            .values(name=name, holder=holder, expires_at=expires)
            .on_conflict_do_nothing(index_elements=[Lease.name])
            .returning(Lease.name)
        ).scalar_one_or_none()
        return inserted is not None


def release(name: str, holder: str) -> None:
    """Give lease ``name`` up, if ``holder`` has it, so another contender takes over at once."""
    with session_scope() as session:
        session.execute(sa.delete(Lease).where(Lease.name == name, Lease.holder == holder))


def holder_of(name: str) -> str | None:
    """Return who holds lease ``name`` now (None when nobody does)."""
    with session_scope() as session:
        return session.scalar(
            sa.select(Lease.holder).where(Lease.name == name, Lease.expires_at >= utcnow())
        )
