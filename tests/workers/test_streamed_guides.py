"""Guides streamed while they are written: told to watchers, never stored, no Redis.

Real worker threads run the offline generator (it streams in pieces of words over its
latency) on SQLite (the in-process signal) and PostgreSQL (NOTIFY on ``handson_text``,
heard by the hub's LISTEN connection); on the Redis broker, ``redis-cli monitor``
records what the server is sent meanwhile.
"""

from __future__ import annotations

import collections
import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import sqlalchemy as sa
from jobwatch import wait_for_job
from redis_kit import CommandMeter
from sqlalchemy import event
from workerkit import Embedded, fast_settings, make_project, start_embedded

import db
from db import jobs, listen, notify, text_stream
from db.models import Event, HandsOn, TaskRun
from db.text_stream import TextDelta
from workers import broker as worker_setup
from workers import dispatch
from workers.actors.generate import generate_hands_on
from workers.redis_meter import METER

LATENCY_MS = 1200
INTERVAL_MS = 200


@contextlib.contextmanager
def counting() -> Iterator[dict[str, Any]]:
    """Count the statements the engine sends (not those of :func:`wait_for_job`'s watcher)
    and the pool checkouts (each one pings the server first) while the block runs."""
    counts: dict[str, Any] = {
        "statements": collections.Counter(),
        "checkouts": 0,
        "in_transaction": collections.Counter(),  # those not autocommitted alone
    }

    def watcher() -> bool:
        # It reads events as often as it is woken: timing, not a cost per task.
        return threading.current_thread().name.endswith("(consume)")

    def record(conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if not watcher():
            counts["statements"][statement] += 1
            if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                counts["in_transaction"][statement] += 1

    def checkout(*_args: Any) -> None:
        if not watcher():
            counts["checkouts"] += 1

    engine = db.get_engine()
    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine.pool, "checkout", checkout)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine.pool, "checkout", checkout)


def run_job() -> dict[str, Any]:
    """Run a job of two independent tasks; return what it cost and what a watcher heard."""
    project_id = make_project("api", "docs", name="Streamed")
    hub = listen.get_hub()
    with counting() as counts:
        job_id = dispatch.submit(project_id, batch_size=5, max_batch_size=50, max_tasks=100)
        heard = hub.subscribe(job_id, text=True)  # long before the first flush
        try:
            job, _ = wait_for_job(job_id, timeout=60)
        finally:
            hub.unsubscribe(job_id, heard)
    assert job["status"] == "succeeded"
    deltas: dict[int, list[TextDelta]] = collections.defaultdict(list)
    with contextlib.suppress(queue.Empty):
        while True:
            item = heard.get_nowait()
            if isinstance(item, TextDelta):
                deltas[item.run_id].append(item)
    with db.session_scope() as session:
        guides = dict(session.execute(sa.select(HandsOn.task_id, HandsOn.markdown)).all())
        runs = {run["id"]: run["task_id"] for b in job["batches"] for run in b["runs"]}
        types = session.scalars(
            sa.select(Event.type).where(Event.job_id == job_id).order_by(Event.seq)
        ).all()
    return {
        "counts": counts,
        "deltas": deltas,
        "guides": {run: guides[task] for run, task in runs.items()},
        "types": list(types),
        "text_so_far": hub.text_so_far(job_id),
    }


def test_a_running_guide_is_told_in_coalesced_deltas_and_never_stored(
    database_url: str, embedded_factory: Callable[..., Embedded]
):
    # Given the same job run with streaming off, then on
    embedded_factory(
        threads=2, GENERATOR="offline", GENERATOR_LATENCY_MS=LATENCY_MS, GUIDE_STREAM_INTERVAL_MS=0
    )
    quiet = run_job()
    embedded_factory(
        threads=2,
        GENERATOR="offline",
        GENERATOR_LATENCY_MS=LATENCY_MS,
        GUIDE_STREAM_INTERVAL_MS=INTERVAL_MS,
    )
    streamed = run_job()

    # Then with streaming off nothing was heard; on, each guide came whole, in order,
    # in a few flushes (at most one per interval, plus the tail)
    assert quiet["deltas"] == {}
    assert set(streamed["deltas"]) == set(streamed["guides"])
    for run_id, deltas in streamed["deltas"].items():
        assert "".join(d.text for d in deltas) == streamed["guides"][run_id]
        assert [d.offset for d in deltas] == [0] + [d.end for d in deltas[:-1]]
        assert 3 <= len(deltas) <= math.ceil(LATENCY_MS / INTERVAL_MS) + 1
    # The hub kept each run's text so far (the whole guide once it was written)
    assert {d.run_id: d.text for d in streamed["text_so_far"]} == streamed["guides"]

    # And the job wrote the same events, none of them text
    assert streamed["types"] == quiet["types"]

    # And the only statements added are one NOTIFY per flush on PostgreSQL (each on a
    # connection checked out for it), none on SQLite
    added = streamed["counts"]["statements"] - quiet["counts"]["statements"]
    assert not quiet["counts"]["statements"] - streamed["counts"]["statements"]
    flushes = sum(len(deltas) for deltas in streamed["deltas"].values())
    if db.get_engine().dialect.name == "postgresql":
        assert list(added) == [next(s for s in added if "pg_notify('handson_text'" in s)]
        assert sum(added.values()) == flushes
        assert streamed["counts"]["checkouts"] - quiet["counts"]["checkouts"] == flushes
    else:
        assert not added


def test_a_worker_process_sends_each_tail_with_its_outcome_heard_before_its_event(
    postgres_url: str,
):
    # Given worker threads in a process with no watcher of its own (as `dramatiq workers`
    # runs), and a watcher elsewhere: a LISTEN connection of its own, as a web process has
    listen.close_hub()
    embedded = start_embedded(
        postgres_url,
        threads=2,
        GENERATOR="offline",
        GENERATOR_LATENCY_MS=LATENCY_MS,
        GUIDE_STREAM_INTERVAL_MS=INTERVAL_MS,
    )
    url = db.get_engine().url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(url, autocommit=True) as watcher, counting() as counts:
            watcher.execute(f"LISTEN {notify.CHANNEL}")
            watcher.execute(f"LISTEN {text_stream.CHANNEL}")
            job_id = dispatch.submit(
                make_project("api", "docs"), batch_size=5, max_batch_size=50, max_tasks=9
            )
            heard = hear_until_finished(watcher, job_id)
    finally:
        embedded.worker.stop()
        embedded.broker.close()

    # Then each run's guide came whole, as stored, and every piece of it before its
    # outcome's event
    deltas = [item for item in heard if isinstance(item, TextDelta)]
    outcomes = outcome_seqs(job_id)
    with db.session_scope() as session:
        stored = dict(
            session.execute(
                sa.select(TaskRun.id, HandsOn.markdown)
                .join(HandsOn, HandsOn.task_id == TaskRun.task_id)
                .where(TaskRun.job_id == job_id)
            ).all()
        )
    assert stored.keys() == outcomes.keys()
    for run_id, guide in stored.items():
        assert "".join(d.text for d in deltas if d.run_id == run_id) == guide
    for run_id, seq in outcomes.items():
        assert heard_before(heard, run_id, seq)
    # And each run's tail went in the transaction recording its outcome, in one statement
    # with its guide: the other flushes are a statement on a connection of their own
    notifying = {s for s in counts["statements"] if "pg_notify('handson_text'" in s}
    assert sum(counts["statements"][s] for s in notifying) == len(deltas)
    tails = [s for s in notifying if counts["in_transaction"][s]]
    assert len(tails) == 1 and "INSERT INTO hands_on" in tails[0]
    assert 1 <= counts["in_transaction"][tails[0]] == counts["statements"][tails[0]]
    assert counts["statements"][tails[0]] <= len(outcomes)


def hear_until_finished(watcher: psycopg.Connection, job_id: int) -> list[Any]:
    """Return what ``watcher`` heard of the job, in order (deltas, event seqs), to its end."""
    heard: list[Any] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for note in watcher.notifies(timeout=1, stop_after=1):
            if note.channel == text_stream.CHANNEL:
                heard.append(TextDelta.parse(note.payload))
            elif note.payload.startswith(f"{job_id}:"):
                heard.append(int(note.payload.partition(":")[2]))
                if jobs.snapshot(job_id)["status"] in ("succeeded", "partial", "failed"):
                    return heard
    raise AssertionError(f"job {job_id} did not end in 60 s")


def outcome_seqs(job_id: int) -> dict[int, int]:
    """Return the seq of each run's ``task_succeeded`` event."""
    with db.session_scope() as session:
        rows = session.execute(
            sa.select(Event.seq, Event.payload).where(
                Event.job_id == job_id, Event.type == "task_succeeded"
            )
        ).all()
    return {payload["run"]: seq for seq, payload in rows}


def heard_before(heard: list[Any], run_id: int, outcome_seq: int) -> bool:
    """Whether every delta of the run came before the first wake-up up to its outcome."""
    told = next(i for i, item in enumerate(heard) if isinstance(item, int) and item >= outcome_seq)
    return not any(isinstance(item, TextDelta) and item.run_id == run_id for item in heard[told:])


def test_streaming_a_guide_sends_no_redis_command(redis_url, postgres_url, tmp_path):
    # Given the worker side on our Redis broker, a job sent to Redis, and a listening hub
    worker_setup.configure(
        fast_settings(
            postgres_url,
            REDIS_URL=redis_url,
            GENERATOR="offline",
            GENERATOR_LATENCY_MS=1000,
            GUIDE_STREAM_INTERVAL_MS=100,
        )
    )
    job_id = dispatch.submit(make_project("api"), batch_size=5, max_batch_size=50, max_tasks=9)
    with db.session_scope() as session:
        run_id = session.scalar(sa.select(TaskRun.id).where(TaskRun.job_id == job_id))
    hub = listen.get_hub()
    heard = hub.subscribe(job_id, text=True)
    monitor = CommandMeter(redis_url, tmp_path / "monitor.log")
    METER.take()

    # When the task's actor writes its guide here (streaming it as it goes)
    start = time.time()
    generate_hands_on.fn(run_id)
    end = time.time()

    # Then watchers heard it in several flushes, and Redis was sent nothing meanwhile
    deltas = [heard.get(timeout=10) for _ in range(3)]
    hub.unsubscribe(job_id, heard)
    assert all(isinstance(d, TextDelta) and d.run_id == run_id for d in deltas)
    time.sleep(0.3)  # MONITOR output reaches its log
    billed = monitor.bill(start, end)
    monitor.stop()
    assert billed == {}
    assert METER.take() == {}


def test_a_failing_notify_never_fails_the_task(
    sqlite_url: str, embedded_factory: Callable[..., Embedded], monkeypatch
):
    # Given flushes that fail (the database refuses the NOTIFY)
    tried: list[int] = []

    def refuse(deltas) -> None:  # type: ignore[no-untyped-def]
        tried.append(len(deltas))
        raise sa.exc.OperationalError("SELECT pg_notify(...)", {}, Exception("gone"))

    monkeypatch.setattr(text_stream, "send", refuse)
    embedded_factory(
        threads=1, GENERATOR="offline", GENERATOR_LATENCY_MS=600, GUIDE_STREAM_INTERVAL_MS=50
    )

    # When a task writes its guide
    job_id = dispatch.submit(make_project("api"), batch_size=5, max_batch_size=50, max_tasks=9)
    job, _ = wait_for_job(job_id, timeout=30)

    # Then the task succeeded with its whole guide, after one flush tried and dropped
    assert job["status"] == "succeeded"
    with db.session_scope() as session:
        guide = session.scalar(sa.select(HandsOn.markdown))
    assert guide.startswith("# Hands-on: Api") and guide.endswith("\n")
    assert tried == [1]
