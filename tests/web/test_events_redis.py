"""The event stream on Redis + PostgreSQL: a real ``dramatiq workers`` process, LISTEN/NOTIFY."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Callable

import pytest
import redis
import sqlalchemy as sa
from processkit import Cluster
from sse import open_stream
from test_events import TASKS, _open_idle_streams, _read_heartbeats, stored_seqs, submit
from webkit import LiveServer
from workerkit import make_project

from db import get_engine, jobs, session_scope
from db.models import Event
from web import events as web_events


@pytest.fixture
def worker_process(processes: Cluster) -> subprocess.Popen[bytes]:
    """A ``dramatiq workers`` process on our actors, as the Procfile's worker runs it."""
    return processes.start_worker()


@pytest.mark.both_strategies
def test_a_job_run_by_a_worker_process_streams_every_event_and_resumes(
    live_factory: Callable[..., LiveServer], postgres_url: str, redis_url: str, worker_process
):
    # Given the app sending to Redis, and a worker process running the jobs
    live = live_factory(postgres_url, worker=False, REDIS_URL=redis_url)
    job_id = submit(make_project(*TASKS))

    # When a client follows the stream, drops it after a few events and reconnects
    first = open_stream(live.host, live.port, job_id)
    frames, received = [], {}
    for frame in first.events():
        frames.append(frame)
        received[frame.id] = dt.datetime.now(dt.UTC)
        if len(frames) == 5:
            break
    first.close()
    second = open_stream(live.host, live.port, job_id, last_event_id=frames[-1].id)
    for frame in second.events():
        frames.append(frame)
        received[frame.id] = dt.datetime.now(dt.UTC)

    # Then it saw the snapshot and every later event once, in order, up to the final one
    snapshot, events = frames[0], frames[1:]
    assert snapshot.event == "snapshot"
    ids = [f.id for f in events]
    assert ids == list(range(snapshot.id + 1, ids[-1] + 1))
    assert ids[-1] == stored_seqs(job_id)[-1]
    assert events[-1].json()["type"] == "job_finished"
    assert worker_process.poll() is None
    assert jobs.snapshot(job_id)["status"] == "partial"

    # And each event reached the client soon after it was stored (printed, loosely bounded)
    delays = sorted(
        (received[seq] - created).total_seconds()
        for seq, created in created_times(job_id)
        if seq in received and seq > snapshot.id
    )
    print(
        f"commit-to-client latency: median {delays[len(delays) // 2] * 1000:.1f} ms,"
        f" max {delays[-1] * 1000:.1f} ms over {len(delays)} events"
    )
    assert delays[len(delays) // 2] < 5.0


def created_times(job_id: int) -> list[tuple[int, dt.datetime]]:
    with session_scope() as session:
        rows = session.execute(
            sa.select(Event.seq, Event.created_at).where(Event.job_id == job_id)
        ).all()
    return [(seq, created) for seq, created in rows]


def _redis_calls(client: redis.Redis) -> int:
    """Commands served so far, without the INFO/CONFIG calls this test makes to count them."""
    stats = client.info("commandstats")
    return sum(
        value["calls"]
        for name, value in stats.items()
        if name not in {"cmdstat_info", "cmdstat_config"}
    )


def test_idle_streams_cost_no_query_and_no_redis_command(
    live_factory: Callable[..., LiveServer],
    postgres_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
):
    # Given the app on Redis + PostgreSQL, a job nobody runs, and 50 clients on its stream
    monkeypatch.setattr(web_events, "HEARTBEAT_S", 1.0)
    live = live_factory(postgres_url, worker=False, REDIS_URL=redis_url)
    job_id = submit(make_project("a", "b"))
    streams = _open_idle_streams(live, job_id, 50)
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    # When nothing happens for a few seconds
    with redis.Redis.from_url(redis_url) as client:
        before = _redis_calls(client)
        sa.event.listen(get_engine(), "before_cursor_execute", count)
        try:
            started = time.monotonic()
            heartbeats = _read_heartbeats(streams, seconds=3.0)
        finally:
            sa.event.remove(get_engine(), "before_cursor_execute", count)
        after = _redis_calls(client)

    # Then neither the database nor Redis heard from the web process
    assert time.monotonic() - started >= 3.0
    assert statements == []
    assert after - before == 0
    assert min(heartbeats) >= 1
    for stream in streams:
        stream.close()
