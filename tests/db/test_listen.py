"""Following a job's events: told of new commits, never reading for what it already has."""

from __future__ import annotations

import threading

import sqlalchemy as sa
from sqlalchemy import event
from workerkit import make_project

import db
from db import events, jobs, listen


def append_event(job_id: int, kind: str) -> int:
    with db.session_scope() as session:
        return events.append(session, job_id, [(kind, {})])


def test_a_watcher_told_of_events_it_already_read_waits_for_newer_ones(database_url: str):
    # Given a job with three events, followed by a watcher that has read them
    db.configure(database_url)
    job_id = jobs.create_job(
        make_project("a"), batch_size=5, max_batch_size=50, max_tasks=100
    ).job_id
    for kind in ("one", "two", "three"):
        last_seen = append_event(job_id, kind)
    hub = listen.EventHub()
    watcher = listen.watch(job_id, last_seen - 3, hub=hub)
    reads: list[str] = []

    def count_reads(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if "FROM events" in statement:
            reads.append(statement)

    event.listen(db.get_engine(), "before_cursor_execute", count_reads)
    try:
        assert [next(watcher)["type"] for _ in range(3)] == ["one", "two", "three"]

        # When it is told (late) of the last event it read, then a new one is committed
        hub.wake(job_id, last_seen)
        later = threading.Timer(0.2, append_event, args=(job_id, "job_finished"))
        later.start()
        newest = next(watcher)
        later.join()
    finally:
        event.remove(db.get_engine(), "before_cursor_execute", count_reads)
        hub.close()

    # Then it read the events twice in all: once for the three, once for the new one
    assert newest["type"] == "job_finished" and newest["seq"] == last_seen + 1
    assert len(reads) == 2
    assert list(watcher) == []


def test_unknown_wake_ups_always_make_the_watcher_read(database_url: str):
    # Given a job with one event, followed by a watcher that has read it
    db.configure(database_url)
    job_id = jobs.create_job(
        make_project("a"), batch_size=5, max_batch_size=50, max_tasks=100
    ).job_id
    seen = append_event(job_id, "one")
    hub = listen.EventHub()
    watcher = listen.watch(job_id, seen - 1, hub=hub)
    assert next(watcher)["type"] == "one"

    # When an event is stored without an announcement (a lost notification), and the
    # hub wakes everyone as it does after reconnecting
    with db.get_engine().begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO events (job_id, seq, type, payload, created_at)"
                " VALUES (:job, :seq, 'job_finished', '{}', CURRENT_TIMESTAMP)"
            ),
            {"job": job_id, "seq": seen + 1},
        )
    hub.wake_all()

    # Then the watcher reads and finds it
    try:
        assert next(watcher)["seq"] == seen + 1
    finally:
        hub.close()
