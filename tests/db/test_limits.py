"""Provider limits in the database: call slots, an exact per-minute window, a shared pause."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from workerkit import make_project

import db
from db import jobs, limits
from db.models import TaskRun

T0 = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_at_most_max_calls_in_flight_and_a_given_back_slot_serves_again(database_url: str):
    # Given a provider allowing 2 calls at once
    db.configure(database_url)
    two = limits.Limits(max_calls=2, recheck_s=0.5)
    first, second = limits.take_turn("p", two, at(0)), limits.take_turn("p", two, at(0))
    # When a third call asks while both are in flight
    third = limits.take_turn("p", two, at(1))
    # Then it waits the recheck delay, and gets a turn once one is given back
    assert first.granted and second.granted and first.slot_id != second.slot_id
    assert (third.granted, third.reason, third.wait_s) == (False, "calls", 0.5)
    limits.end_turn(first.slot_id)
    assert limits.take_turn("p", two, at(2)).slot_id == first.slot_id
    # And a slot its holder never gave back (a killed worker) comes back when its lease ends
    assert not limits.take_turn("p", two, at(2)).granted
    assert limits.take_turn("p", two, at(two.lease_s + 1)).granted
    # And another provider has its own slots
    assert limits.take_turn("q", two, at(2)).granted


def test_no_60_s_window_holds_more_than_per_minute_starts(database_url: str):
    # Given a provider allowing 3 requests a minute, taken at 0, 10 and 20 s
    db.configure(database_url)
    three = limits.Limits(per_minute=3)
    assert all(limits.take_turn("p", three, at(s)).granted for s in (0, 10, 20))
    # When a fourth asks at 30 s, then at the second the first one's minute ends
    refused = limits.take_turn("p", three, at(30))
    # Then it must wait until the window rolls past the first start (30 s), not a full minute
    assert (refused.granted, refused.reason, refused.wait_s) == (False, "per_minute", 30.0)
    assert not limits.take_turn("p", three, at(59.9)).granted
    assert limits.take_turn("p", three, at(60)).granted
    assert limits.take_turn("p", three, at(65)).wait_s == 5.0


def test_a_pause_stops_every_turn_until_it_ends_and_keeps_the_longer_one(database_url: str):
    # Given a provider with limits, and one without any
    db.configure(database_url)
    some, none = limits.Limits(max_calls=5, per_minute=100), limits.Limits()
    # When a 429 pauses it for 2 s (and a shorter pause arrives after)
    assert limits.pause("p", 2.0, at(0)) == at(2)
    assert limits.pause("p", 1.0, at(0.5)) == at(2)
    # Then no turn is given until the pause ends, with or without limits, and none is used
    for limit in (some, none):
        turn = limits.take_turn("p", limit, at(0.5))
        assert (turn.granted, turn.reason, turn.wait_s) == (False, "paused", 1.5)
    assert limits.take_turn("p", none, at(2)).granted
    granted = [limits.take_turn("p", some, at(2)) for _ in range(5)]
    assert all(turn.granted for turn in granted)
    assert limits.take_turn("p", some, at(2)).reason == "calls"


def test_a_run_waiting_for_its_turn_shows_a_sign_of_life(database_url: str):
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
    limits.note_waiting(queued)
    limits.note_waiting(running)
    # Then the queued one shows a recent sign of life (the reconciler leaves it), only it
    with db.session_scope() as session:
        changed = dict(session.execute(sa.select(TaskRun.id, TaskRun.updated_at)).all())
    assert changed[queued] > limits.utcnow() - dt.timedelta(minutes=1)
    assert changed[running] == long_ago
