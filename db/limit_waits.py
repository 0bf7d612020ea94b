"""Tasks waiting for an AI call slot: parked in the database, woken when a slot frees.

A task that finds every call slot of its provider taken is parked: its message is
stored in ``ai_waiters`` and nothing re-checks on a timer. The holder that gives a
slot back hands it, in the same transaction, to the oldest waiter (``FOR UPDATE SKIP
LOCKED``; SQLite has one writer), books its minute slot, and returns a :class:`Wake`
that the worker sends after commit (``workers.dispatch.wake``): one waiter per freed
slot. Parking and giving back lock the provider's ``ai_limits`` row first, so a slot
given back while a task parks is seen by one of them. A slot whose holder died comes
back when its lease ends; the reconciler's pass then hands it on (:func:`wake_lost`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy import orm

from db import limit_slots, limits
from db.engine import session_scope, upsert_insert
from db.limit_slots import Limits
from db.limits import Ticket, Turn
from db.models import AILimit, AISlot, AIWaiter, utcnow

#: Most waiters one reconciler pass wakes per provider without a call limit.
MAX_WAKES_PER_PASS = 1_000


@dataclasses.dataclass(frozen=True)
class Wake:
    """A parked message to send again after commit, ``delay_s`` from now, with its turn."""

    message: str
    ticket: Ticket
    delay_s: float


def parker(
    name: str, limits_: Limits, run_id: int | None, encode: Callable[[], str]
) -> limits.Park:
    """Return what parks a message of run ``run_id`` (``encode()`` gives its text).

    Under the provider's lock, a call slot given back meanwhile is taken instead; a run
    parked already is a second copy of its message (``duplicate``).
    """

    def park(session: orm.Session, now: dt.datetime) -> Turn:
        _lock_provider(session, name)
        call = limit_slots.take_slot(
            session, name, "call", limits_.max_calls, now, limits_.lease_s, run_id
        )
        if call is not None:
            return limits.book(session, name, limits_, now, call.slot_id, call.paused_until)
        insert = upsert_insert(session.get_bind().dialect.name, AIWaiter).values(
            name=name, run_id=run_id, message=encode(), since=now
        )
        parked = session.scalar(insert.on_conflict_do_nothing().returning(AIWaiter.id))
        return Turn(reason="calls" if parked is not None else "duplicate")

    return park


def end_turn(
    slot_id: int | None, name: str, limits_: Limits, now: dt.datetime | None = None
) -> list[Wake]:
    """Give call slot ``slot_id`` back: to the oldest waiter, or free.

    Returns the waiter's message to send after commit (empty when none waited).
    """
    if slot_id is None:
        return []
    now = now or utcnow()
    with session_scope() as session:
        paused = _lock_provider(session, name)
        woken = _hand(session, name, limits_, now, slot_id, paused)
        if woken is None:
            session.execute(
                sa.update(AISlot).where(AISlot.id == slot_id).values(until=limit_slots.FREE)
            )
            return []
        return [woken]


def wake_lost(limits_: Limits, now: dt.datetime | None = None) -> list[Wake]:
    """Hand free call slots to waiters that no holder woke (the reconciler's backstop).

    A slot comes back without a hand-over when its holder died (its lease ended) or
    could not reach the database. One ``SELECT`` when nothing waits.
    """
    now = now or utcnow()
    with session_scope() as session:
        names = session.scalars(sa.select(AIWaiter.name).distinct()).all()
    wakes: list[Wake] = []
    for name in names:
        with session_scope() as session:
            wakes += _wake_free(session, name, limits_, now)
    return wakes


def _wake_free(session: orm.Session, name: str, limits_: Limits, now: dt.datetime) -> list[Wake]:
    paused = _lock_provider(session, name)
    wakes: list[Wake] = []
    while len(wakes) < MAX_WAKES_PER_PASS:
        slot_id = None
        if limits_.max_calls:
            taken = limit_slots.take_slot(
                session, name, "call", limits_.max_calls, now, limits_.lease_s
            )
            if taken is None:
                break
            slot_id = taken.slot_id
        woken = _hand(session, name, limits_, now, slot_id, paused)
        if woken is None:
            if slot_id is not None:
                free = sa.update(AISlot).where(AISlot.id == slot_id).values(until=limit_slots.FREE)
                session.execute(free)
            break
        wakes.append(woken)
    return wakes


def _hand(
    session: orm.Session,
    name: str,
    limits_: Limits,
    now: dt.datetime,
    slot_id: int | None,
    paused: dt.datetime | None,
) -> Wake | None:
    """Hand call slot ``slot_id`` to the oldest waiter and book its turn; None: no waiter."""
    oldest = (
        sa.select(AIWaiter.id)
        .where(AIWaiter.name == name)
        .order_by(AIWaiter.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    waiter = session.execute(
        sa.delete(AIWaiter).where(AIWaiter.id == oldest).returning(AIWaiter.message)
    ).one_or_none()
    if waiter is None:
        return None
    turn = limits.book(session, name, limits_, now, slot_id, paused, ticketed=True)
    assert turn.ticket is not None
    return Wake(waiter.message, turn.ticket, turn.wait_s)


def _lock_provider(session: orm.Session, name: str) -> dt.datetime | None:
    """Lock the provider's row (parking and giving back take turns); return its pause."""
    select = sa.select(AILimit.paused_until).where(AILimit.name == name).with_for_update()
    row = session.execute(select).one_or_none()
    if row is None:
        insert = upsert_insert(session.get_bind().dialect.name, AILimit).values(name=name)
        session.execute(insert.on_conflict_do_nothing())
        row = session.execute(select).one()
    return row.paused_until
