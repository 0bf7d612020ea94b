"""Provider limits shared by every worker process: call slots, per-minute slots, a pause.

A provider has ``max_calls`` rows of kind ``call`` and ``per_minute`` rows of kind
``minute`` in ``ai_slots``; a slot is free when its ``until`` has passed. A turn is one
slot of each kind, taken with guarded ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE
SKIP LOCKED)`` in one transaction. A call slot is held until given back, or until its
lease ends (a killed worker's slot comes back); a minute slot is free again 60 s after
its request started (plus a margin), so no 60 s window ever holds more than
``per_minute`` starts.

Without a free call slot the message is parked (:mod:`db.limit_waits`) and handed a
slot when one is given back: when that happens is not known ahead. When the only
obstacle is a known time (the minute window rolls, a 429's pause ends), the turn is
booked for that time: the call slot held and a minute slot taken from then on, and the
caller sends its message again, delayed to that moment, with a :class:`Ticket` that
claims them. Nothing here sleeps or polls.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from db.engine import session_scope, statements_committing_alone, upsert_insert
from db.models import AILimit, AISlot, AIWaiter, RunStatus, TaskRun, utcnow

#: ``until`` of a slot that was never taken or was released.
FREE = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: How long a minute slot stays taken, in seconds: the window of the per-minute rate,
#: plus a margin for the time from a turn to its request reaching the provider, which
#: varies (a request booked exactly 60 s after a turn could reach the provider less than
#: 60 s after the earlier request did).
WINDOW_S = 61.0
#: A claim counts from at least this long after the booked start.
_AFTER_START = dt.timedelta(microseconds=1)


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
class Ticket:
    """A turn booked for ``start``: the slots its message claims when it comes back.

    Each slot is named with the ``until`` it was booked with: a claim is a guarded
    update on that value, so a second copy of the message claims nothing.
    """

    start: dt.datetime
    call: tuple[int, dt.datetime] | None = None
    minute: tuple[int, dt.datetime] | None = None

    def to_option(self) -> dict[str, Any]:
        """Return the ticket as a message option (plain JSON)."""
        return {
            "start": self.start.isoformat(),
            "call": _slot_to_json(self.call),
            "minute": _slot_to_json(self.minute),
        }

    @classmethod
    def from_option(cls, option: dict[str, Any]) -> Ticket:
        """Read a ticket back from :meth:`to_option`'s value."""
        return cls(
            start=dt.datetime.fromisoformat(option["start"]),
            call=_slot_from_json(option.get("call")),
            minute=_slot_from_json(option.get("minute")),
        )


def _slot_to_json(slot: tuple[int, dt.datetime] | None) -> list[Any] | None:
    return None if slot is None else [slot[0], slot[1].isoformat()]


def _slot_from_json(value: list[Any] | None) -> tuple[int, dt.datetime] | None:
    return None if value is None else (int(value[0]), dt.datetime.fromisoformat(value[1]))


@dataclasses.dataclass(frozen=True)
class Turn:
    """What :func:`take_turn` decided: go, wait ``wait_s`` seconds, or nothing to send."""

    #: The call slot to give back (``db.limit_waits.end_turn``); None without a call limit.
    slot_id: int | None = None
    wait_s: float = 0.0
    #: Empty when it may go; ``paused`` or ``per_minute``: send the message again after
    #: ``wait_s`` (with ``ticket`` when booked); ``calls``: parked, a holder wakes it;
    #: ``duplicate``: another copy of this message already waits or holds the turn;
    #: ``handed``: a handed-over turn that may start at once (its ``ticket``).
    reason: str = ""
    ticket: Ticket | None = None

    @property
    def granted(self) -> bool:
        """True when the call may start now."""
        return not self.reason


#: Parks the message when no call slot is free: ``park(session, now)`` (db.limit_waits).
Park = Callable[[orm.Session, dt.datetime], Turn]


class _Refused(Exception):
    """Rolls the turn's transaction back and returns ``turn``."""

    def __init__(self, turn: Turn) -> None:
        self.turn = turn


def take_turn(
    name: str,
    limits: Limits,
    now: dt.datetime | None = None,
    *,
    run_id: int | None = None,
    park: Park | None = None,
) -> Turn:
    """Take a call slot and a minute slot of provider ``name``, book them, or park.

    One transaction. The usual case costs one statement per limit set (one ``SELECT``
    of the pause when none is).

    Parameters:
      name: the provider (``openai``).
      limits: its limits; 0 disables one.
      now: the current time (tests); default: the clock.
      run_id: the task run the call is for: a run parked already gets no turn.
      park: parks the message when no call slot is free (default: refused as ``calls``).

    Returns:
      A granted :class:`Turn`, a booked one (``ticket``, ``wait_s``), or a refused one.
    """
    now = now or utcnow()
    with session_scope() as session:
        return _take(session, name, limits, now, run_id, park)


def _take(
    session: orm.Session,
    name: str,
    limits: Limits,
    now: dt.datetime,
    run_id: int | None,
    park: Park | None,
) -> Turn:
    if not limits.max_calls:
        paused = session.scalar(sa.select(AILimit.paused_until).where(AILimit.name == name))
        if not limits.per_minute:
            if paused is not None and paused > now:
                return Turn(wait_s=_seconds(now, paused), reason="paused")
            return Turn()
        return book(session, name, limits, now, None, paused)
    call = take_slot(session, name, "call", limits.max_calls, now, limits.lease_s, run_id)
    if call is None:
        return park(session, now) if park else Turn(reason="calls")
    return book(session, name, limits, now, call.slot_id, call.paused_until)


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
        .where(*_slots(name, kind, limit), AISlot.until <= now)
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
        .returning(AISlot.id, _paused(name))
    )
    row = session.execute(take).one_or_none()
    if row is None and _add_missing_slots(session, name, kind, limit):
        row = session.execute(take).one_or_none()
    return None if row is None else Taken(row.id, row.paused_until)


def book(
    session: orm.Session,
    name: str,
    limits: Limits,
    now: dt.datetime,
    call_id: int | None,
    paused: dt.datetime | None,
    *,
    ticketed: bool = False,
) -> Turn:
    """Given call slot ``call_id`` (if limited), take a minute slot now or book the turn.

    The turn starts when the pause ends and a minute slot is free (the soonest one,
    taken by no other waiter). Starting later, or ``ticketed`` (a handed-over slot),
    the call slot is held and the minute slot taken until then: the :class:`Ticket`.
    """
    earliest = max(now, paused) if paused is not None else now
    minute_id, start = None, earliest
    if limits.per_minute:
        minute_id, start = _minute_slot(session, name, limits.per_minute, now, earliest)
    if start <= now and not ticketed:
        return Turn(slot_id=call_id)
    reason = "per_minute" if start > earliest else "paused" if earliest > now else "handed"
    return hold(session, limits, now, start, call_id, minute_id, reason)


def _minute_slot(
    session: orm.Session, name: str, per_minute: int, now: dt.datetime, earliest: dt.datetime
) -> tuple[int, dt.datetime]:
    """Take a free minute slot now, or pick (locked) the one that frees soonest."""
    if earliest <= now:
        taken = take_slot(session, name, "minute", per_minute, now, WINDOW_S)
        if taken is not None:
            return taken.slot_id, now
    else:
        _add_missing_slots(session, name, "minute", per_minute)
    soonest = (
        sa.select(AISlot.id, AISlot.until)
        .where(*_slots(name, "minute", per_minute))
        .order_by(AISlot.until)
        .limit(1)
    )
    # Another waiter books each slot it locks: skip those; all locked: queue on one.
    row = session.execute(soonest.with_for_update(skip_locked=True)).one_or_none()
    row = row or session.execute(soonest.with_for_update()).one()
    return row.id, max(earliest, row.until)


def hold(
    session: orm.Session,
    limits: Limits,
    now: dt.datetime,
    start: dt.datetime,
    call_id: int | None,
    minute_id: int | None,
    reason: str,
) -> Turn:
    """Hold the call slot and take the minute slot for a turn at ``start``; its ticket."""
    call = minute = None
    if call_id is not None:
        call = (call_id, start + dt.timedelta(seconds=limits.lease_s))
    if minute_id is not None:
        minute = (minute_id, start + dt.timedelta(seconds=WINDOW_S))
    for slot in (call, minute):
        if slot is not None:
            session.execute(sa.update(AISlot).where(AISlot.id == slot[0]).values(until=slot[1]))
    ticket = Ticket(start, call, minute)
    return Turn(wait_s=_seconds(now, start), reason=reason, ticket=ticket)


def claim(name: str, limits: Limits, ticket: Ticket, now: dt.datetime | None = None) -> Turn:
    """Claim the slots booked by ``ticket`` for the call that starts now.

    A guarded update per slot (still booked as the ticket says): a second copy of the
    message, or one whose booking ran out, claims nothing (``duplicate``). The call
    slot's lease and the minute window then count from now. A pause that began since
    the booking books the turn again for its end.
    """
    now = now or utcnow()
    try:
        with session_scope() as session:
            return _claim(session, name, limits, ticket, now)
    except _Refused as refused:
        return refused.turn


def _claim(
    session: orm.Session, name: str, limits: Limits, ticket: Ticket, now: dt.datetime
) -> Turn:
    # Counted from after the booked start: a claimed slot's ``until`` never equals the
    # booked one, so a second claim matches nothing.
    now = max(now, ticket.start + _AFTER_START)
    paused = None
    for slot, hold_s in ((ticket.call, limits.lease_s), (ticket.minute, WINDOW_S)):
        if slot is None:
            continue
        claimed = (
            sa.update(AISlot)
            .where(AISlot.id == slot[0], AISlot.until == slot[1])
            .values(until=now + dt.timedelta(seconds=hold_s))
            .returning(_paused(name))
        )
        row = session.execute(claimed).one_or_none()
        if row is None:
            raise _Refused(Turn(reason="duplicate"))
        paused = row.paused_until
    call_id = ticket.call[0] if ticket.call else None
    if paused is not None and paused > now:
        minute_id = ticket.minute[0] if ticket.minute else None
        return hold(session, limits, now, paused, call_id, minute_id, "paused")
    return Turn(slot_id=call_id)


def _paused(name: str) -> sa.Label[Any]:
    """The provider's pause, as a column to return with a slot's update."""
    paused = sa.select(AILimit.paused_until).where(AILimit.name == name).scalar_subquery()
    return paused.label("paused_until")


def _slots(name: str, kind: str, limit: int) -> tuple[sa.ColumnElement[bool], ...]:
    return (AISlot.name == name, AISlot.kind == kind, AISlot.n < limit)


def _add_missing_slots(session: orm.Session, name: str, kind: str, limit: int) -> bool:
    """Create the provider's slots of ``kind`` up to ``limit`` (and its row in ``ai_limits``).

    Returns True when some were missing.
    """
    have = session.scalar(sa.select(sa.func.count()).where(*_slots(name, kind, limit)))
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


def _seconds(now: dt.datetime, when: dt.datetime) -> float:
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
