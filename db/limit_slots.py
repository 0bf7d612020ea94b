"""The slots of a provider's limits, and its pause: the rows every worker process shares.

A provider has ``max_calls`` rows of kind ``call`` and ``per_minute`` rows of kind
``minute`` in ``ai_slots``, created on first need; a slot is free when its ``until`` has
passed. A slot is taken by a guarded ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE
SKIP LOCKED)``. A 429's ``Retry-After`` pauses the provider (``ai_limits``). How turns
use them: :mod:`db.limits`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from db.engine import statements_committing_alone, upsert_insert
from db.models import AILimit, AISlot, AIWaiter, RunStatus, TaskRun, utcnow

#: ``until`` of a slot that was never taken or was released.
FREE = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: How long a minute slot stays taken, in seconds: the window of the per-minute rate,
#: plus a margin for the time from a turn to its request reaching the provider, which
#: varies (a request booked exactly 60 s after a turn could reach the provider less than
#: 60 s after the earlier request did).
WINDOW_S = 61.0


@dataclasses.dataclass(frozen=True)
class Limits:
    """A provider's limits.

    Parameters:
      max_calls: calls in flight at once; 0: no limit.
      per_minute: requests started in any 60 s window; 0: no limit.
      lease_s: seconds a call slot stays taken unless given back (a killed worker's).
    """

    max_calls: int = 0
    per_minute: int = 0
    lease_s: float = 330.0


@dataclasses.dataclass(frozen=True)
class Taken:
    """A slot :func:`take_slot` took, and the provider's pause read with it."""

    slot_id: int
    paused_until: dt.datetime | None


def take_slot(
    session: orm.Session,
    name: str,
    kind: str,
    limit: int,
    now: dt.datetime,
    hold_s: float,
    run_id: int | None = None,
) -> Taken | None:
    """Take one free slot of ``kind`` for ``hold_s`` seconds; None when none is free.

    Creates the provider's slots the first time. With ``run_id``, a run parked already
    (a second copy of its message) takes nothing either.
    """
    free = (
        sa.select(AISlot.id)
        .where(*slot_rows(name, kind, limit), AISlot.until <= now)
        .order_by(AISlot.until)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    parked = sa.exists().where(AIWaiter.run_id == run_id)
    take = (
        sa.update(AISlot)
        .where(AISlot.id == free, *(() if run_id is None else (~parked,)))
        .values(until=now + dt.timedelta(seconds=hold_s))
        .returning(AISlot.id, paused_column(name))
    )
    row = session.execute(take).one_or_none()
    if row is None and add_missing_slots(session, name, kind, limit):
        row = session.execute(take).one_or_none()
    return None if row is None else Taken(row.id, row.paused_until)


def paused_column(name: str) -> sa.Label[Any]:
    """Return the provider's pause as a column to return with a slot's update."""
    paused = sa.select(AILimit.paused_until).where(AILimit.name == name).scalar_subquery()
    return paused.label("paused_until")


def slot_rows(name: str, kind: str, limit: int) -> tuple[sa.ColumnElement[bool], ...]:
    """Return the conditions selecting the provider's slots of ``kind`` up to ``limit``."""
    return (AISlot.name == name, AISlot.kind == kind, AISlot.n < limit)


def add_missing_slots(session: orm.Session, name: str, kind: str, limit: int) -> bool:
    """Create the provider's slots of ``kind`` up to ``limit`` (and its row in ``ai_limits``).

    Returns True when some were missing.
    """
    have = session.scalar(sa.select(sa.func.count()).where(*slot_rows(name, kind, limit)))
    if have >= limit:
        return False
    dialect = session.get_bind().dialect.name
    slots = upsert_insert(dialect, AISlot).values(
        [{"name": name, "kind": kind, "n": n, "until": FREE} for n in range(limit)]
    )
    session.execute(slots.on_conflict_do_nothing())
    provider = upsert_insert(dialect, AILimit).values(name=name, paused_until=None)
    session.execute(provider.on_conflict_do_nothing())
    return True


def seconds(now: dt.datetime, when: dt.datetime) -> float:
    """Return the seconds from ``now`` until ``when`` (0 when it has passed)."""
    return max(0.0, (when - now).total_seconds())


def pause(name: str, seconds: float, now: dt.datetime | None = None) -> dt.datetime:
    """Pause every call to provider ``name`` for ``seconds``, in every process.

    A longer pause already set is kept. Returns the end of the pause now in force.
    """
    until = (now or utcnow()) + dt.timedelta(seconds=seconds)
    with statements_committing_alone() as connection:
        insert = upsert_insert(connection.dialect.name, AILimit).values(
            name=name, paused_until=until
        )
        current = AILimit.__table__.c.paused_until
        longer = sa.case(
            (
                sa.or_(current.is_(None), current < insert.excluded.paused_until),
                insert.excluded.paused_until,
            ),
            else_=current,
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[AILimit.name], set_={"paused_until": longer}
        ).returning(AILimit.paused_until)
        return connection.scalar(upsert)


def note_waiting(run_id: int) -> None:
    """Show that queued run ``run_id`` waits for its booked turn (a sign of life).

    The reconciler then leaves it alone: it re-sends runs silent for the stall timeout,
    and a pause can last longer than that. (A parked run needs none: see
    ``db.reconcile``.)
    """
    with statements_committing_alone() as connection:
        connection.execute(
            sa.update(TaskRun)
            .where(TaskRun.id == run_id, TaskRun.status == RunStatus.QUEUED)
            .values(updated_at=utcnow())
        )
