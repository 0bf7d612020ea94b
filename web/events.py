"""``GET /api/jobs/<id>/events``: a job's progress as server-sent events, pushed, never polled.

A stream sends a ``snapshot`` event first (the whole job, ``id`` = its newest event
seq), then every event of the job in order, each with ``id: <seq>``, and ends after the
job's final event. A client reconnecting with ``Last-Event-ID: <seq>`` gets the events
after ``seq`` (no snapshot), exactly once, in order; when there is nothing left to send
for a finished job the answer is ``204`` (which tells ``EventSource`` to stop).

While a task's guide is being written, ``guide_text`` events carry it as it grows:
``{"run_id", "stream", "offset", "text"}``, ``text`` going at character ``offset`` of
that run's ``stream`` (a new stream per attempt). They have no ``id`` (they are not
stored, so ``Last-Event-ID`` replay is unchanged). A stream that opens mid-guide first
sends one per running guide with its text so far (as heard by this process), then the
new pieces; pieces can overlap what a client has, which it skips by their offsets.

Cost: a stream subscribes to the process's one :class:`db.listen.EventHub` and blocks on
its queue. While nothing happens it makes no database query and no Redis command; every
``HEARTBEAT_S`` it writes a ``: keepalive`` comment (so proxies keep the connection, and
so a gone client is noticed). A commit wakes the job's streams; the first reads the new
events with one query and the others get them from :class:`web.feed.EventFeed`.
"""

from __future__ import annotations

import json
import queue
import threading
import weakref
from collections.abc import Generator, Iterator
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, current_app

from db import events as db_events
from db import jobs, listen
from db.engine import session_scope
from db.models import Job, JobStatus
from db.pool import PoolExhaustedError
from db.text_stream import TextDelta
from web import inputs
from web.errors import ApiError
from web.feed import EventFeed

bp = Blueprint("events", __name__)

#: Seconds between keep-alive comments on an idle stream (proxies drop silent ones ~30-60 s).
HEARTBEAT_S = 20.0
#: How long a disconnected EventSource waits before reconnecting, in milliseconds.
RETRY_MS = 2000
#: Events read per query when catching up.
READ_LIMIT = 500
#: Headers that keep proxies from buffering or caching the stream.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: Events that end a run's guide being written (its text so far is dropped then).
RUN_OUTCOMES = frozenset({"task_succeeded", "task_failed", "task_skipped", "task_cancelled"})


class Streams:
    """The open streams of one app: lets a shutting-down server end them all at once."""

    def __init__(self) -> None:
        self.closing = threading.Event()
        #: Recent events shared by this app's streams (one read per commit, not per stream).
        self.feed = EventFeed(_read_page)
        self._lock = threading.Lock()
        self._queues: set[queue.SimpleQueue[Any]] = set()

    def add(self, wakeups: queue.SimpleQueue[Any]) -> None:
        """Track a stream's wake-up queue."""
        with self._lock:
            self._queues.add(wakeups)

    def discard(self, wakeups: queue.SimpleQueue[Any]) -> None:
        """Forget a stream that ended."""
        with self._lock:
            self._queues.discard(wakeups)

    def __len__(self) -> int:
        with self._lock:
            return len(self._queues)

    def close(self) -> None:
        """End every open stream (each returns at its next wake-up, which this sends)."""
        self.closing.set()
        with self._lock:
            targets = list(self._queues)
        for wakeups in targets:
            wakeups.put(-1)


_registries: weakref.WeakSet[Streams] = weakref.WeakSet()


def streams_of(app: Any) -> Streams:
    """Return the app's stream registry, creating it on first use."""
    registry = app.extensions.get("handson_streams")
    if registry is None:
        registry = app.extensions["handson_streams"] = Streams()
        _registries.add(registry)
    return registry


def close_all_streams() -> None:
    """End every open stream of every app of this process (the server is stopping)."""
    for registry in list(_registries):
        registry.close()


def frame(data: dict[str, Any], *, event: str | None = None, event_id: int | None = None) -> str:
    """Return one server-sent event."""
    lines = [] if event is None else [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


def text_frame(delta: TextDelta) -> str:
    """Return a ``guide_text`` event (no ``id``: it is not a stored event)."""
    return frame(delta.data(), event="guide_text")


def _read_page(job_id: int, after_seq: int) -> list[dict[str, Any]]:
    """Read one page of the job's events after ``after_seq`` from the database."""
    with session_scope() as session:
        return [
            listen.event_data(e)
            for e in db_events.since(session, job_id, after_seq, limit=READ_LIMIT)
        ]


def _job_over(job_id: int) -> bool:
    """Return whether the job has ended.

    Raises:
      jobs.NotFoundError: when it does not exist (any more).
    """
    with session_scope() as session:
        status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
    if status is None:
        raise jobs.NotFoundError(f"job {job_id} does not exist")
    return bool(status != JobStatus.RUNNING)


def _read(feed: EventFeed, job_id: int, after_seq: int, newest: int) -> tuple[list[Any], bool]:
    """Return the events after ``after_seq``, and whether the job is over when there are none."""
    new = feed.after(job_id, after_seq, newest, limit=READ_LIMIT)
    if new or not _job_over(job_id):
        return new, False
    # Over, yet nothing new: read again, after the status, so that a final event
    # committed in between (its wake-up still queued) is not missed.
    new = feed.after(job_id, after_seq, -1, limit=READ_LIMIT)
    return new, not new


#: What a stream sends first: frames, the seq they reach, whether the stream ends after
#: them, and whether more events may already be stored (the read hit ``READ_LIMIT``).
Opening = tuple[list[str], int, bool, bool]


def _opening(feed: EventFeed, job_id: int, last_seen: int | None, hub: listen.EventHub) -> Opening:
    """Return what the stream sends first (see :data:`Opening`)."""
    if last_seen is None:
        snapshot = jobs.snapshot(job_id)
        first = frame(snapshot, event="snapshot", event_id=snapshot["event_seq"])
        over = snapshot["status"] != JobStatus.RUNNING
        return [first], snapshot["event_seq"], over, False
    new, over = _read(feed, job_id, last_seen, -1)
    for event in new:
        _forget_written(hub, job_id, event)
    frames = [frame(e, event_id=e["seq"]) for e in new]
    final = any(e["type"] in listen.FINAL_EVENTS for e in new)
    return frames, new[-1]["seq"] if new else last_seen, over or final, len(new) == READ_LIMIT


def _wait(wakeups: queue.SimpleQueue[Any], closing: threading.Event) -> Generator[str, None, int]:
    """Block until woken, yielding a keep-alive comment every ``HEARTBEAT_S`` while idle.

    Guide text that comes meanwhile is passed on at once. Returns the newest seq
    announced (``-1`` when unknown, e.g. after a lost listener).
    """
    while not closing.is_set():
        try:
            woken = wakeups.get(timeout=HEARTBEAT_S)
        except queue.Empty:
            yield ": keepalive\n\n"
            continue
        if isinstance(woken, TextDelta):
            yield text_frame(woken)
            continue
        # One read covers every wake-up so far.
        newest, deltas = listen.drain_with_text(wakeups, woken)
        yield from (text_frame(delta) for delta in deltas)
        return newest
    return -1


def _follow(
    job_id: int,
    after_seq: int,
    wakeups: Any,
    registry: Streams,
    hub: listen.EventHub,
    *,
    read_first: bool,
) -> Iterator[str]:
    """Yield the job's events after ``after_seq`` as they are committed, until its final one.

    The stream subscribed before its opening read, so anything committed since then has
    queued a wake-up: it waits first and reads only when told (``read_first`` when the
    opening read stopped at ``READ_LIMIT``).
    """
    closing = registry.closing
    while not closing.is_set():
        newest = -1
        if not read_first:
            newest = yield from _wait(wakeups, closing)
            if closing.is_set():
                return
        new, over = _read(registry.feed, job_id, after_seq, newest)
        for event in new:
            after_seq = event["seq"]
            _forget_written(hub, job_id, event)
            yield frame(event, event_id=event["seq"])
            if event["type"] in listen.FINAL_EVENTS:
                return
        if over:
            return
        read_first = len(new) == READ_LIMIT  # more may be stored already


def _forget_written(hub: listen.EventHub, job_id: int, event: dict[str, Any]) -> None:
    """Drop the hub's text so far of a run whose outcome this is (of every run at the end)."""
    if event["type"] in RUN_OUTCOMES and isinstance(event["payload"].get("run"), int):
        hub.forget_text(job_id, event["payload"]["run"])
    elif event["type"] in listen.FINAL_EVENTS:
        hub.forget_text(job_id)


@bp.get("/api/jobs/<id:job_id>/events")
def job_events(job_id: int) -> Response:
    """Stream the job's progress as server-sent events (see the module docstring)."""
    last_seen = inputs.last_event_id()
    registry = streams_of(current_app)
    if registry.closing.is_set():
        raise ApiError(503, "The server is shutting down; reconnect in a moment.")
    limit = current_app.config.get("MAX_STREAMS")
    if limit and len(registry) >= limit:
        # Each stream holds a server thread: keep some for pages and API calls.
        raise ApiError(503, "This server holds as many event streams as it can; retry later.")
    hub = listen.get_hub()
    # Subscribe before the first read, so no event committed in between is missed.
    wakeups = hub.subscribe(job_id, text=True)
    registry.add(wakeups)
    try:
        opening = _opening(registry.feed, job_id, last_seen, hub)
    except BaseException as error:
        _release(job_id, hub, registry, wakeups)
        if isinstance(error, jobs.NotFoundError):
            raise ApiError(404, f"Job {job_id} does not exist.") from None
        raise
    opening = _unless_unheard(opening)
    frames, _, done, _ = opening
    if done and not frames:
        _release(job_id, hub, registry, wakeups)
        return Response(status=204)
    body = _run(job_id, opening, hub, registry, wakeups)
    response = Response(body, mimetype="text/event-stream", headers=STREAM_HEADERS)
    # Also when the body is never iterated (HEAD, a client gone before the first write),
    # where the generator's own ``finally`` would not run.
    response.call_on_close(lambda: _release(job_id, hub, registry, wakeups))
    return response


def _unless_unheard(opening: Opening) -> Opening:
    """End a stream this process could not keep live, saying why (an ``unfollowable`` event).

    On SQLite a job run by another process commits events nobody announces here: the
    stream would look live and stay frozen. The page says so instead, and a reload (a
    new stream) shows the newest figures.
    """
    frames, seq, done, more = opening
    if done:
        return opening
    from workers import embedded

    reason = embedded.unheard_reason(current_app.config["HANDSON"])
    if reason is None:
        return opening
    message = f"Not live: {reason}. Reload the page for newer figures."
    return [*frames, frame({"message": message}, event="unfollowable")], seq, True, more


def _run(
    job_id: int,
    opening: Opening,
    hub: listen.EventHub,
    registry: Streams,
    wakeups: queue.SimpleQueue[Any],
) -> Iterator[str]:
    frames, after_seq, done, more = opening
    try:
        yield f"retry: {RETRY_MS}\n\n"
        yield from frames
        if not done:
            # Read after subscribing: a piece heard since is both here and queued.
            yield from (text_frame(delta) for delta in hub.text_so_far(job_id))
            yield from _follow(job_id, after_seq, wakeups, registry, hub, read_first=more)
    except jobs.NotFoundError:
        return  # the job was deleted while watched: nothing more will come
    except PoolExhaustedError:
        # The database stayed busy: end the stream; the client reconnects after
        # RETRY_MS with Last-Event-ID and misses nothing.
        return
    finally:
        _release(job_id, hub, registry, wakeups)


def _release(
    job_id: int, hub: listen.EventHub, registry: Streams, wakeups: queue.SimpleQueue[Any]
) -> None:
    """Forget a stream (safe to call twice)."""
    hub.unsubscribe(job_id, wakeups)
    registry.discard(wakeups)
