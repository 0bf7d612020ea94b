"""Provider limits in the database: call slots, an exact per-minute window, a shared pause."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from workerkit import make_project

import db
from db import jobs, limit_slots, limit_waits, limits, reconcile
from db.models import Batch, TaskRun, utcnow

T0 = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_at_most_max_calls_in_flight_and_a_given_back_slot_serves_again(database_url: str):
    # Given a provider allowing 2 calls at once
    db.configure(database_url)
    two = limit_slots.Limits(max_calls=2)
    first, second = limits.take_turn("p", two, at(0)), limits.take_turn("p", two, at(0))
    # When a third call asks while both are in flight (no one parks it)
    third = limits.take_turn("p", two, at(1))
    # Then it gets no turn, and gets one once a slot is given back (nobody waits for it)
    assert first.granted and second.granted and first.slot_id != second.slot_id
    assert (third.granted, third.reason) == (False, "calls")
    assert limit_waits.end_turn(first.slot_id, "p", two, at(1.5)) == []
    assert limits.take_turn("p", two, at(2)).slot_id == first.slot_id
    # And a slot its holder never gave back (a killed worker) comes back when its lease ends
    assert not limits.take_turn("p", two, at(2)).granted
    assert limits.take_turn("p", two, at(two.lease_s + 1)).granted
    # And another provider has its own slots
    assert limits.take_turn("q", two, at(2)).granted


def parked_runs(count: int) -> list[int]:
    job_id = jobs.create_job(
        make_project(*[f"t{n}" for n in range(count)]),
        batch_size=count,
        max_batch_size=50,
        max_tasks=50,
    ).job_id
    with db.session_scope() as session:
        return list(session.scalars(sa.select(TaskRun.id).where(TaskRun.job_id == job_id)))


def park(run_id: int, limit: limit_slots.Limits, now: dt.datetime) -> limits.Turn:
    parker = limit_waits.parker("p", limit, run_id, lambda: f"message of {run_id}")
    return limits.take_turn("p", limit, now, run_id=run_id, park=parker)


def test_each_slot_given_back_wakes_the_oldest_waiter_once(database_url: str):
    # Given a provider allowing 2 calls at once, both in flight, and 3 tasks parked
    db.configure(database_url)
    two = limit_slots.Limits(max_calls=2)
    held = [limits.take_turn("p", two, at(0)).slot_id for _ in range(2)]
    runs = parked_runs(3)
    assert [park(run, two, at(1 + n)).reason for n, run in enumerate(runs)] == ["calls"] * 3
    # When a second copy of a parked task's message asks for a turn
    copy = park(runs[0], two, at(5))
    # Then it gets none, and is not parked twice
    assert copy.reason == "duplicate"
    # When the slots are given back, one at a time
    first = limit_waits.end_turn(held[0], "p", two, at(10))
    second = limit_waits.end_turn(held[1], "p", two, at(11))
    # Then each wakes exactly one waiter, the oldest first, handing it that slot at once
    assert [w.message for w in first + second] == [f"message of {r}" for r in runs[:2]]
    assert [w.ticket.call[0] for w in first + second] == held
    assert [w.delay_s for w in first + second] == [0.0, 0.0]
    # And the woken message claims its slot once: a second copy of it claims nothing
    ticket = first[0].ticket
    assert limits.claim("p", two, ticket, at(10.1)).slot_id == held[0]
    assert limits.claim("p", two, ticket, at(10.2)).reason == "duplicate"
    # And no newcomer takes a handed slot; the last waiter gets the next one given back
    assert limits.take_turn("p", two, at(12)).reason == "calls"
    assert [w.message for w in limit_waits.end_turn(held[0], "p", two, at(13))] == [
        f"message of {runs[2]}"
    ]
    assert limit_waits.end_turn(held[1], "p", two, at(14)) == []


def test_a_slot_whose_holder_died_is_handed_on_by_the_reconciler_pass(database_url: str):
    # Given a provider allowing 1 call at once, held by a worker that died, and a waiter
    db.configure(database_url)
    one = limit_slots.Limits(max_calls=1, lease_s=100)
    assert limits.take_turn("p", one, at(0)).granted
    (run,) = parked_runs(1)
    assert park(run, one, at(1)).reason == "calls"
    # When the reconciler's pass runs before the lease ends, then after
    before = limit_waits.wake_lost(one, at(50))
    after = limit_waits.wake_lost(one, at(101))
    # Then the slot is handed to the waiter once it came back, and only once
    assert before == []
    assert [w.message for w in after] == [f"message of {run}"]
    assert limit_waits.wake_lost(one, at(102)) == []


def test_waiters_for_the_minute_window_each_book_their_own_freed_request(database_url: str):
    # Given a provider allowing 2 calls at once and 2 requests a minute, used at 0 and 10 s
    db.configure(database_url)
    limit = limit_slots.Limits(max_calls=2, per_minute=2)
    for s in (0, 10):
        turn = limits.take_turn("p", limit, at(s))
        assert turn.granted
        limit_waits.end_turn(turn.slot_id, "p", limit, at(s + 1))
    # When two more ask at 20 s
    third, fourth = limits.take_turn("p", limit, at(20)), limits.take_turn("p", limit, at(20))
    # Then each is booked for its own freed request: at 60 s and at 70 s, not both at 60
    assert (third.reason, third.wait_s, fourth.wait_s) == ("per_minute", 41.0, 51.0)
    assert third.ticket.start == at(61) and fourth.ticket.start == at(71)
    # And holds a call slot until then: a fifth has none, and parks
    assert limits.take_turn("p", limit, at(20)).reason == "calls"
    # And claiming at its time starts it (the window counts from the claim)
    assert limits.claim("p", limit, third.ticket, at(61)).granted
    assert limits.claim("p", limit, third.ticket, at(61.5)).reason == "duplicate"


def test_no_60_s_window_holds_more_than_per_minute_starts(database_url: str):
    # Given a provider allowing 3 requests a minute, taken at 0, 10 and 20 s
    db.configure(database_url)
    three = limit_slots.Limits(per_minute=3)
    assert all(limits.take_turn("p", three, at(s)).granted for s in (0, 10, 20))
    # When a fourth asks at 30 s, and a fifth just before the first start rolls off
    refused = limits.take_turn("p", three, at(30))
    later = limits.take_turn("p", three, at(59.9))
    # Then the fourth is booked for when the window rolls past the first start (+1 s), not
    # a full minute later; the fifth for the second start's (the first one is booked)
    assert (refused.granted, refused.reason, refused.wait_s) == (False, "per_minute", 31.0)
    assert (later.reason, round(later.wait_s, 3)) == ("per_minute", 11.1)
    assert limits.take_turn("p", three, at(81)).granted
    assert limits.take_turn("p", three, at(85)).wait_s == 37.0


def test_a_pause_stops_every_turn_until_it_ends_and_keeps_the_longer_one(database_url: str):
    # Given a provider with limits, and one without any
    db.configure(database_url)
    some, none = limit_slots.Limits(max_calls=5, per_minute=100), limit_slots.Limits()
    # When a 429 pauses it for 2 s (and a shorter pause arrives after)
    assert limit_slots.pause("p", 2.0, at(0)) == at(2)
    assert limit_slots.pause("p", 1.0, at(0.5)) == at(2)
    # Then no turn is given until the pause ends, with or without limits
    turns = [limits.take_turn("p", limit, at(0.5)) for limit in (some, none)]
    assert [(t.granted, t.reason, t.wait_s) for t in turns] == [(False, "paused", 1.5)] * 2
    # And with limits, the turn is booked for the pause's end (its call slot held)
    assert limits.take_turn("p", none, at(2)).granted
    assert limits.claim("p", some, turns[0].ticket, at(2)).granted
    granted = [limits.take_turn("p", some, at(2)) for _ in range(4)]
    assert all(turn.granted for turn in granted)
    assert limits.take_turn("p", some, at(2)).reason == "calls"


def test_a_run_booked_for_later_shows_a_sign_of_life(database_url: str):
    # Given a queued run last changed long ago, and a running one
    db.configure(database_url)
    job_id = jobs.create_job(
        make_project("a", "b"), batch_size=5, max_batch_size=50, max_tasks=10
    ).job_id
    long_ago = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with db.session_scope() as session:
        queued, running = session.scalars(sa.select(TaskRun.id).where(TaskRun.job_id == job_id))
        session.execute(sa.update(TaskRun).values(updated_at=long_ago, status="queued"))
        session.execute(sa.update(TaskRun).where(TaskRun.id == running).values(status="running"))
    # When both are noted waiting
    limit_slots.note_waiting(queued)
    limit_slots.note_waiting(running)
    # Then the queued one shows a recent sign of life (the reconciler leaves it), only it
    with db.session_scope() as session:
        changed = dict(session.execute(sa.select(TaskRun.id, TaskRun.updated_at)).all())
    assert changed[queued] > utcnow() - dt.timedelta(minutes=1)
    assert changed[running] == long_ago


def test_the_reconciler_leaves_a_batch_with_a_parked_run_alone(database_url: str):
    # Given a job whose runs were all sent long ago, one of them parked for a call slot
    db.configure(database_url)
    one = limit_slots.Limits(max_calls=1)
    runs = parked_runs(2)
    assert limits.take_turn("p", one).granted
    assert park(runs[0], one, utcnow()).reason == "calls"
    long_ago = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with db.session_scope() as session:
        session.execute(sa.update(TaskRun).values(updated_at=long_ago))
        session.execute(sa.update(Batch).values(dispatched_at=long_ago))
    # When the reconciler looks for stalled work
    repairs = reconcile.find_repairs(stall_timeout_s=60)
    # Then it re-sends nothing: a holder of the slot wakes the parked run
    assert [r.description for r in repairs] == []
    # And once nothing is parked, the silent batch is re-sent
    limit_waits.end_turn(1, "p", one)
    assert "re-dispatched" in reconcile.find_repairs(stall_timeout_s=60)[0].description
