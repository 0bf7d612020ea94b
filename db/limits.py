"""Provider limits shared by every worker process: call slots, per-minute slots, a pause.

Takes turns on the slots of :mod:`db.limit_slots`: a turn is one call slot and one
minute slot of a provider, taken in one transaction. A call slot is held until given
back, or until its lease ends (a killed worker's slot comes back); a minute slot is
free again 61 s after its turn started, so no 60 s window ever holds more than
``per_minute`` requests.

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

from db import limit_slots
from db.engine import session_scope
from db.limit_slots import Limits
from db.models import AILimit, AISlot, utcnow

__all__ = ["Ticket", "Turn", "book", "claim", "hold", "take_turn"]

#: A claim counts from at least this long after the booked start.
_AFTER_START = dt.timedelta(microseconds=1)


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
                return Turn(wait_s=limit_slots.seconds(now, paused), reason="paused")
            return Turn()
        return book(session, name, limits, now, None, paused)
    call = limit_slots.take_slot(
        session, name, "call", limits.max_calls, now, limits.lease_s, run_id
    )
    if call is None:
        return park(session, now) if park else Turn(reason="calls")
    return book(session, name, limits, now, call.slot_id, call.paused_until)


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
        taken = limit_slots.take_slot(
            session, name, "minute", per_minute, now, limit_slots.WINDOW_S
        )
        if taken is not None:
            return taken.slot_id, now
    else:
        limit_slots.add_missing_slots(session, name, "minute", per_minute)
    soonest = (
        sa.select(AISlot.id, AISlot.until)
        .where(*limit_slots.slot_rows(name, "minute", per_minute))
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
        minute = (minute_id, start + dt.timedelta(seconds=limit_slots.WINDOW_S))
    for slot in (call, minute):
        if slot is not None:
            session.execute(sa.update(AISlot).where(AISlot.id == slot[0]).values(until=slot[1]))
    ticket = Ticket(start, call, minute)
    return Turn(wait_s=limit_slots.seconds(now, start), reason=reason, ticket=ticket)


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
    for slot, hold_s in ((ticket.call, limits.lease_s), (ticket.minute, limit_slots.WINDOW_S)):
        if slot is None:
            continue
        claimed = (
            sa.update(AISlot)
            .where(AISlot.id == slot[0], AISlot.until == slot[1])
            .values(until=now + dt.timedelta(seconds=hold_s))
            .returning(limit_slots.paused_column(name))
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
