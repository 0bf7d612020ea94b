"""The job event stream: snapshot, every event in order, resume by Last-Event-ID, no idle cost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import workerkit
from jobwatch import wait_for_job
from sse import Stream, open_stream
from webkit import LiveServer
from workerkit import make_project

from db import get_engine, jobs, session_scope
from db.models import Event
from web import events as web_events

#: Tasks of the test project: two pipelines and a group, so several batches.
TASKS = [
    {"key": "a", "title": "A"},
    {"key": "b", "title": "B", "depends_on": ["a"]},
    {"key": "c", "title": "C", "depends_on": ["b"]},
    {"key": "d", "title": "D"},
    {"key": "e", "title": "E"},
    {"key": "f", "title": "F", "depends_on": ["c", "d", "e"]},
    {"key": "g", "title": "G [fail]"},
]


def submit(project_id: int, batch_size: int = 2) -> int:
    return workerkit.submit(project_id, batch_size)


def stored_seqs(job_id: int) -> list[int]:
    with session_scope() as session:
        return list(
            session.scalars(sa.select(Event.seq).where(Event.job_id == job_id).order_by(Event.seq))
        )


def read_to_end(stream: Stream) -> list:
    return list(stream.events())


@pytest.mark.both_strategies
def test_a_stream_sends_a_snapshot_then_every_event_in_order_and_ends(
    live_factory: Callable[..., LiveServer], database_url: str
):
    # Given a served app with an embedded worker, and a job whose tasks take a while (its
    # critical path, 4 tasks, outlasts opening the stream even on a loaded machine)
    live = live_factory(database_url, GENERATOR_LATENCY_MS=150)
    job_id = submit(make_project(*TASKS))

    # When a client opens the job's stream while the job runs
    stream = open_stream(live.host, live.port, job_id)
    frames = read_to_end(stream)

    # Then it gets a snapshot, then each later event exactly once, in order, then the end
    assert stream.status == 200
    assert stream.response.getheader("Content-Type").startswith("text/event-stream")
    snapshot = frames[0]
    assert snapshot.event == "snapshot"
    assert snapshot.id == snapshot.json()["event_seq"]
    events = frames[1:]
    assert [f.id for f in events] == [f.json()["seq"] for f in events]
    assert [f.id for f in events] == list(range(snapshot.id + 1, events[-1].id + 1))
    assert events[-1].json()["type"] == "job_finished"
    assert [f.id for f in events][-1] == stored_seqs(job_id)[-1]
    job = jobs.snapshot(job_id)
    assert job["status"] == "partial"  # G fails for good
    assert any(f.json()["type"] == "task_failed" for f in events)


@pytest.mark.both_strategies
def test_a_reconnect_with_last_event_id_resumes_exactly_once(
    live_factory: Callable[..., LiveServer], database_url: str
):
    # Given a running job and a client that saw its first few events, then lost the stream
    live = live_factory(database_url, GENERATOR_LATENCY_MS=60)
    job_id = submit(make_project(*TASKS))
    first = open_stream(live.host, live.port, job_id, last_event_id=0)
    seen = []
    for frame in first.events():
        seen.append(frame)
        if len(seen) == 4:
            break
    first.close()

    # When it reconnects with Last-Event-ID
    second = open_stream(live.host, live.port, job_id, last_event_id=seen[-1].id)
    rest = read_to_end(second)

    # Then the two parts are every stored event, each once, in order, without a snapshot
    assert all(f.event == "message" for f in rest)
    ids = [f.id for f in seen + rest]
    assert ids == stored_seqs(job_id) == list(range(1, len(ids) + 1))

    # And a reconnect after the final event is told to stop (204), a mid-way one replays
    assert open_stream(live.host, live.port, job_id, last_event_id=ids[-1]).status == 204
    replay = read_to_end(open_stream(live.host, live.port, job_id, last_event_id=ids[-3]))
    assert [f.id for f in replay] == ids[-2:]


def test_a_finished_job_streams_its_snapshot_and_ends(
    live_factory: Callable[..., LiveServer], sqlite_url: str
):
    live = live_factory(sqlite_url)
    job_id = submit(make_project("a", "b"))
    wait_for_job(job_id)
    frames = read_to_end(open_stream(live.host, live.port, job_id))
    assert [f.event for f in frames] == ["snapshot"]
    assert frames[0].json()["status"] == "succeeded"


def test_stream_errors(client):
    assert client.get("/api/jobs/9/events").status_code == 404
    assert client.get("/api/jobs/9/events").json["error"]["code"] == "not_found"
    bad = client.get("/api/jobs/9/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400
    assert client.post("/api/jobs/9/events").status_code == 405


def _open_idle_streams(live: LiveServer, job_id: int, count: int) -> list[Stream]:
    streams = [open_stream(live.host, live.port, job_id, timeout=30) for _ in range(count)]
    for stream in streams:
        assert next(stream.events()).event == "snapshot"
    return streams


def test_idle_streams_cost_no_database_query(
    live_factory: Callable[..., LiveServer], database_url: str, monkeypatch: pytest.MonkeyPatch
):
    # Given a job that waits (no worker runs it) and 50 clients on its stream
    monkeypatch.setattr(web_events, "HEARTBEAT_S", 1.0)
    live = live_factory(database_url, worker=False)
    job_id = submit(make_project("a", "b"))
    streams = _open_idle_streams(live, job_id, 50)
    assert len(web_events.streams_of(live.app)) == 50

    # When nothing happens for a few seconds, counting every statement the app sends
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    sa.event.listen(get_engine(), "before_cursor_execute", count)
    try:
        heartbeats = _read_heartbeats(streams, seconds=3.0)
    finally:
        sa.event.remove(get_engine(), "before_cursor_execute", count)

    # Then no query was made, while every stream got its keep-alive comments
    assert statements == []
    assert all(beats >= 1 for beats in heartbeats)
    for stream in streams:
        stream.close()


def _read_heartbeats(streams: list[Stream], *, seconds: float) -> list[int]:
    """Read keep-alive comments from every stream for ``seconds``; return counts."""
    counts = [0] * len(streams)
    deadline = time.monotonic() + seconds

    def read(index: int, stream: Stream) -> None:
        for frame in stream:
            if frame.comment == "keepalive":
                counts[index] += 1
            if time.monotonic() > deadline:
                return

    threads = [
        threading.Thread(target=read, args=(i, s), daemon=True) for i, s in enumerate(streams)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 10)
    return counts


def test_streams_end_when_the_server_stops(
    live_factory: Callable[..., LiveServer], sqlite_url: str
):
    # Given open streams on a job that waits
    live = live_factory(sqlite_url, worker=False)
    job_id = submit(make_project("a"))
    streams = _open_idle_streams(live, job_id, 5)

    # When the server shuts its streams down (gunicorn does it on SIGTERM)
    started = time.monotonic()
    web_events.close_all_streams()

    # Then every stream ends promptly, and new ones are refused with 503
    for stream in streams:
        assert [f for f in stream.events()] == []
    assert time.monotonic() - started < 10
    assert len(web_events.streams_of(live.app)) == 0
    assert open_stream(live.host, live.port, job_id).status == 503


def test_a_stream_never_read_is_released(app, client, monkeypatch: pytest.MonkeyPatch):
    # Given a job that waits, and a count of the hub's subscriptions
    from db import listen

    live: set[object] = set()
    subscribe, unsubscribe = listen.EventHub.subscribe, listen.EventHub.unsubscribe

    def counting_subscribe(hub, job_id, **options):  # type: ignore[no-untyped-def]
        wakeups = subscribe(hub, job_id, **options)
        live.add(wakeups)
        return wakeups

    def counting_unsubscribe(hub, job_id, wakeups):  # type: ignore[no-untyped-def]
        live.discard(wakeups)
        unsubscribe(hub, job_id, wakeups)

    monkeypatch.setattr(listen.EventHub, "subscribe", counting_subscribe)
    monkeypatch.setattr(listen.EventHub, "unsubscribe", counting_unsubscribe)
    job_id = submit(make_project("a"))

    # When a client asks only for the headers (HEAD) or drops the body unread
    head = client.head(f"/api/jobs/{job_id}/events")
    assert head.status_code == 200
    head.close()  # what a WSGI server does after sending a response
    client.get(f"/api/jobs/{job_id}/events", buffered=False).close()

    # Then nothing stays subscribed
    assert len(web_events.streams_of(app)) == 0
    assert live == set()


def test_streams_beyond_the_cap_are_refused(
    live_factory: Callable[..., LiveServer], sqlite_url: str
):
    # Given a server that may hold two streams (gunicorn sets the cap from its threads)
    live = live_factory(sqlite_url, worker=False, MAX_STREAMS=2)
    job_id = submit(make_project("a"))
    streams = _open_idle_streams(live, job_id, 2)

    # When a third client connects, Then it is refused with a JSON 503
    third = open_stream(live.host, live.port, job_id)
    assert third.status == 503
    assert third.response.getheader("Content-Type") == "application/json"
    for stream in streams:
        stream.close()


@pytest.mark.both_strategies
def test_many_streams_of_one_job_share_each_read(
    live_factory: Callable[..., LiveServer], database_url: str
):
    # Given 20 clients following a running job
    live = live_factory(database_url, GENERATOR_LATENCY_MS=30)
    project_id = make_project(*TASKS)
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if "FROM events" in statement:
            statements.append(statement)

    job_id = submit(project_id)
    streams = [open_stream(live.host, live.port, job_id) for _ in range(20)]
    sa.event.listen(get_engine(), "before_cursor_execute", count)
    try:
        # When they all read the job to its end
        results: list[list[int]] = [[] for _ in streams]

        def read(index: int) -> None:
            results[index].extend(frame.id for frame in streams[index].events())

        threads = [threading.Thread(target=read, args=(i,)) for i in range(len(streams))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sa.event.remove(get_engine(), "before_cursor_execute", count)

    # Then every client got every event, and the events were read about once per commit,
    # not once per client (20 clients reading alone would make 20 times as many reads)
    seqs = stored_seqs(job_id)
    for ids in results:
        assert ids[1:] == list(range(ids[0] + 1, seqs[-1] + 1))
    print(f"{len(statements)} event reads for {len(seqs)} events and {len(streams)} streams")
    assert len(statements) <= len(seqs) + len(streams)
