"""Provider limits shared by every worker process: call slots, per-minute slots, a pause.

A provider has ``max_calls`` rows of kind ``call`` and ``per_minute`` rows of kind
``minute`` in ``ai_slots``; a slot is free when its ``until`` has passed. Taking a turn
takes one free slot of each kind with a guarded ``UPDATE ... WHERE id = (SELECT ... FOR
UPDATE SKIP LOCKED)``, in one transaction, and only while the provider is not paused (a
429's ``Retry-After``, in ``ai_limits``). A call slot is held until released, or until
its lease ends (a killed worker's slot comes back); a minute slot frees itself 60 s
after its request started, so no 60 s window ever holds more than ``per_minute`` starts.
When no slot is free, the caller learns how long to wait: nothing here sleeps or polls.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa
from sqlalchemy import orm

from db.engine import session_scope, statements_committing_alone, upsert_insert
from db.models import AILimit, AISlot, RunStatus, TaskRun, utcnow

#: ``until`` of a slot that was never taken or was released.
FREE = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: How long a minute slot stays taken, in seconds: the window of the per-minute rate.
WINDOW_S = 60.0


@dataclasses.dataclass(frozen=True)
class Limits:
    """A provider's limits.

    Parameters:
      max_calls: calls in flight at once; 0: no limit.
      per_minute: requests started in any 60 s window; 0: no limit.
      lease_s: seconds a call slot stays taken unless given back (a killed worker's).
      recheck_s: seconds to wait when every call slot is taken (when one frees is not
        known ahead).
    """

    max_calls: int = 0
    per_minute: int = 0
    lease_s: float = 330.0
    recheck_s: float = 1.0


@dataclasses.dataclass(frozen=True)
class Turn:
    """What :func:`take_turn` decided: go (``wait_s`` 0) or wait ``wait_s`` seconds."""

    #: The call slot to give back with :func:`end_turn`; None without a call limit.
    slot_id: int | None = None
    wait_s: float = 0.0
    #: Why it must wait: ``paused``, ``per_minute`` or ``calls``; empty when it may go.
    reason: str = ""

    @property
    def granted(self) -> bool:
        """True when the call may start now."""
        return not self.reason


class _Refused(Exception):
    def __init__(self, turn: Turn) -> None:
        self.turn = turn


def take_turn(name: str, limits: Limits, now: dt.datetime | None = None) -> Turn:
    """Take a call slot and a minute slot of provider ``name``, or say how long to wait.

    One transaction: both slots or neither. Costs one statement per limit set (one
    ``SELECT`` when none is: the pause alone), plus a look-up when refused.

    Parameters:
      name: the provider (``openai``).
      limits: its limits; 0 disables one.
      now: the current time (tests); default: the clock.

    Returns:
      A granted :class:`Turn` (release its ``slot_id`` with :func:`end_turn`), or a
      refused one with the seconds until a slot frees, the window rolls or the pause ends.
    """
    now = now or utcnow()
    try:
        with session_scope() as session:
            return _take(session, name, limits, now)
    except _Refused as refused:
        return refused.turn


def _take(session: orm.Session, name: str, limits: Limits, now: dt.datetime) -> Turn:
    if not (limits.max_calls or limits.per_minute):
        _refuse_if_paused(session, name, now)
        return Turn()
    if limits.per_minute and _take_slot(session, name, "minute", limits.per_minute, now) is None:
        _refuse_if_paused(session, name, now)
        soonest = session.scalar(
            sa.select(sa.func.min(AISlot.until)).where(*_slots(name, "minute", limits.per_minute))
        )
        raise _Refused(Turn(wait_s=_seconds_until(soonest, now), reason="per_minute"))
    slot_id = None
    if limits.max_calls:
        slot_id = _take_slot(session, name, "call", limits.max_calls, now, limits.lease_s)
        if slot_id is None:
            _refuse_if_paused(session, name, now)
            raise _Refused(Turn(wait_s=limits.recheck_s, reason="calls"))
    return Turn(slot_id=slot_id)


def _slots(name: str, kind: str, limit: int) -> tuple[sa.ColumnElement[bool], ...]:
    return (AISlot.name == name, AISlot.kind == kind, AISlot.n < limit)


def _take_slot(
    session: orm.Session,
    name: str,
    kind: str,
    limit: int,
    now: dt.datetime,
    hold_s: float = WINDOW_S,
) -> int | None:
    """Take one free slot (none while paused); create the slots the first time."""
    paused = sa.exists().where(AILimit.name == name, AILimit.paused_until > now)
    free = (
        sa.select(AISlot.id)
        .where(*_slots(name, kind, limit), AISlot.until <= now, ~paused)
        .order_by(AISlot.until)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    until = now + dt.timedelta(seconds=hold_s)
    take = sa.update(AISlot).where(AISlot.id == free).values(until=until).returning(AISlot.id)
    slot_id = session.scalar(take)
    if slot_id is None and _add_missing_slots(session, name, kind, limit):
        slot_id = session.scalar(take)
    return slot_id


def _add_missing_slots(session: orm.Session, name: str, kind: str, limit: int) -> bool:
    """Create the provider's slots of ``kind`` up to ``limit``; True when some were missing."""
    have = session.scalar(sa.select(sa.func.count()).where(*_slots(name, kind, limit)))
    if have >= limit:
        return False
    insert = upsert_insert(session.get_bind().dialect.name, AISlot).values(
        [{"name": name, "kind": kind, "n": n, "until": FREE} for n in range(limit)]
    )
    session.execute(insert.on_conflict_do_nothing())
    return True


def _refuse_if_paused(session: orm.Session, name: str, now: dt.datetime) -> None:
    until = session.scalar(sa.select(AILimit.paused_until).where(AILimit.name == name))
    if until is not None and until > now:
        raise _Refused(Turn(wait_s=_seconds_until(until, now), reason="paused"))


def _seconds_until(when: dt.datetime | None, now: dt.datetime) -> float:
    return max(0.0, (when - now).total_seconds()) if when is not None else 0.0


def end_turn(slot_id: int | None) -> None:
    """Give back a call slot taken by :func:`take_turn` (nothing when ``slot_id`` is None)."""
    if slot_id is None:
        return
    with statements_committing_alone() as connection:
        connection.execute(sa.update(AISlot).where(AISlot.id == slot_id).values(until=FREE))


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
    """Show that queued run ``run_id`` waits for its turn (its ``updated_at``, a sign of life).

    The reconciler then leaves it alone: it re-sends runs silent for the stall timeout,
    and a run can wait longer than that for a busy provider.
    """
    with statements_committing_alone() as connection:
        connection.execute(
            sa.update(TaskRun)
            .where(TaskRun.id == run_id, TaskRun.status == RunStatus.QUEUED)
            .values(updated_at=utcnow())
        )
