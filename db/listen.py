"""Learn of new job events by being told: one listener per process, fanned out to watchers.

Sources: the in-process signal sent after every commit in this process (embedded mode,
same-process writers) and, on PostgreSQL, ``LISTEN`` on :data:`db.notify.CHANNEL` for
commits in other processes. Watchers block on a queue; nobody polls.

Guides being written travel the same way (:mod:`db.text_stream`): the
:data:`~db.text_stream.guide_text` signal, or ``LISTEN`` on
:data:`db.text_stream.CHANNEL` on the same connection. The hub keeps each streaming
run's text so far (:class:`~db.text_stream.TextSoFar`) for watchers who join mid-guide.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from db import events, notify, pool, text_stream
from db.engine import get_engine, pool_options, session_scope
from db.text_stream import TextDelta

logger = logging.getLogger(__name__)

#: How long the first subscriber waits for LISTEN to take effect, in seconds.
LISTEN_START_TIMEOUT_S = 10.0
#: Longest wait of the listener before it checks whether to stop, in seconds.
LISTEN_CHECK_S = 5.0
#: Pause between attempts to reconnect the listener, in seconds.
RECONNECT_DELAY_S = 1.0
#: ``application_name`` of the LISTEN connection (one per process at most).
LISTENER_NAME = f"{pool.APPLICATION}/listen"
#: Event types after which a job has no more events.
FINAL_EVENTS = frozenset({"job_finished", "job_cancelled"})
#: What a subscriber's queue receives: a job's newest event seq (-1: unknown), or, for a
#: subscriber of guide text, a :class:`~db.text_stream.TextDelta`.
Wakeup = int | TextDelta


class EventHub:
    """Fans out "job N has new events" wake-ups to the queues of its subscribers.

    On PostgreSQL one connection LISTENs for the whole process, opened by the first
    subscriber; once nobody has subscribed for ``idle_timeout_s`` it is closed (0:
    never), and the next subscriber opens it again. Subscribers of guide text also get
    the job's text deltas, and :meth:`text_so_far` gives what was heard of each run.
    """

    def __init__(self, *, idle_timeout_s: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[int, set[queue.SimpleQueue[Any]]] = collections.defaultdict(set)
        self._readers: dict[int, set[queue.SimpleQueue[Any]]] = collections.defaultdict(set)
        self._texts = text_stream.TextSoFar()
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._pg_thread: threading.Thread | None = None
        self._idle_s = idle_timeout_s
        self._unwatched_since = time.monotonic()
        notify.job_event.connect(self._on_local_event, weak=False)
        text_stream.guide_text.connect(self._on_local_text, weak=False)

    def subscribe(self, job_id: int, *, text: bool = False) -> queue.SimpleQueue[Any]:
        """Return a queue that receives the job's newest seq whenever it has new events.

        Once this returns, every later commit of an event of the job wakes the queue;
        with ``text``, the deltas of its runs' guides being written go to it too.
        """
        wakeups: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self._lock:  # before the listener check: an unwatched listener retires
            self._subscribers[job_id].add(wakeups)
            if text:
                self._readers[job_id].add(wakeups)
        try:
            self._ensure_pg_listener()
        except BaseException:
            self.unsubscribe(job_id, wakeups)
            raise
        return wakeups

    def unsubscribe(self, job_id: int, wakeups: queue.SimpleQueue[Any]) -> None:
        """Stop sending wake-ups to ``wakeups``."""
        with self._lock:
            self._subscribers[job_id].discard(wakeups)
            if job_id in self._readers:
                self._readers[job_id].discard(wakeups)
                if not self._readers[job_id]:
                    del self._readers[job_id]
            if not self._subscribers[job_id]:
                del self._subscribers[job_id]
            if not self._subscribers:
                self._unwatched_since = time.monotonic()

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
        notify.job_event.disconnect(self._on_local_event)
        text_stream.guide_text.disconnect(self._on_local_text)

    def wake(self, job_id: int, seq: int) -> None:
        """Wake every subscriber of ``job_id``."""
        with self._lock:
            targets = list(self._subscribers.get(job_id, ()))
        for wakeups in targets:
            wakeups.put(seq)

    def wake_all(self) -> None:
        """Wake every subscriber (after a reconnect, when notifications may have been lost)."""
        with self._lock:
            job_ids = list(self._subscribers)
        for job_id in job_ids:
            self.wake(job_id, -1)

    def hear_text(self, delta: TextDelta) -> None:
        """Keep ``delta`` with its run's text so far and pass it to the job's text readers."""
        with self._lock:
            self._texts.add(delta, time.monotonic())
            targets = list(self._readers.get(delta.job_id, ()))
        for wakeups in targets:
            wakeups.put(delta)

    def text_so_far(self, job_id: int) -> list[TextDelta]:
        """Return the text heard so far of each of the job's runs being written."""
        with self._lock:
            return self._texts.of_job(job_id, time.monotonic())

    def forget_text(self, job_id: int, run_id: int | None = None) -> None:
        """Drop what was heard of a run's guide (its outcome is known), or of the whole job."""
        with self._lock:
            if run_id is None:
                self._texts.forget_job(job_id)
            else:
                self._texts.forget(run_id)

    def _on_local_event(self, _sender: Any, *, job_id: int, seq: int) -> None:
        self.wake(job_id, seq)

    def _on_local_text(self, _sender: Any, *, deltas: list[TextDelta]) -> None:
        for delta in deltas:
            self.hear_text(delta)

    def _on_note(self, channel: str, payload: str) -> None:
        """Handle one notification of either channel; a malformed one is logged and dropped."""
        try:
            if channel == text_stream.CHANNEL:
                self.hear_text(TextDelta.parse(payload))
            else:
                job_id, _, seq = payload.partition(":")
                self.wake(int(job_id), int(seq))
        except ValueError:
            logger.warning("Ignored a malformed notification on %s.", channel)

    def _ensure_pg_listener(self) -> None:
        engine = get_engine()
        if engine.dialect.name != "postgresql":
            return
        with self._lock:
            if self._pg_thread is None:
                url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
                self._pg_thread = threading.Thread(
                    target=self._listen_pg, args=(url,), name="handson-listen", daemon=True
                )
                self._pg_thread.start()
        # Subscribers must not miss a commit made before LISTEN took effect.
        if not self._listening.wait(LISTEN_START_TIMEOUT_S):
            raise TimeoutError("the PostgreSQL event listener did not start")

    def _listen_pg(self, conninfo: str) -> None:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        # Named in pg_stat_activity (see db.pool), unless the URL names it already.
        named = (
            {}
            if "application_name" in conninfo_to_dict(conninfo)
            else {"application_name": LISTENER_NAME}
        )
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, **named) as connection:
                    # One connection for both channels (one LISTEN connection per process).
                    connection.execute(f"LISTEN {notify.CHANNEL}")
                    connection.execute(f"LISTEN {text_stream.CHANNEL}")
                    if self._listening.is_set():
                        self.wake_all()  # a reconnect: commits in between went unheard
                    self._listening.set()
                    # The timeout lets close() end this thread, and an unwatched listener
                    # retire; only this hub's memory is read, never the database.
                    while not self._stop.is_set():
                        for note in connection.notifies(timeout=self._check_s()):
                            self._on_note(note.channel, note.payload)
                        if self._retire_if_unwatched():
                            return
            except psycopg.OperationalError as error:
                if self._retire_if_unwatched():
                    return  # not worth a reconnect (which would wake a suspended server)
                if not self._stop.is_set():
                    logger.warning("The event listener lost PostgreSQL (%s); reconnecting.", error)
                self._stop.wait(RECONNECT_DELAY_S)

    def _check_s(self) -> float:
        return min(LISTEN_CHECK_S, self._idle_s) if self._idle_s > 0 else LISTEN_CHECK_S

    def _retire_if_unwatched(self) -> bool:
        """Give the listener up when nobody subscribed for ``idle_timeout_s``; True if so."""
        with self._lock:
            if self._idle_s <= 0 or self._subscribers:
                return False
            if time.monotonic() - self._unwatched_since < self._idle_s:
                return False
            self._pg_thread = None  # the next subscriber starts another
            self._listening.clear()
        logger.info("Closed the idle event listener (no watcher for %g s).", self._idle_s)
        return True


_hub: EventHub | None = None
_hub_url: str | None = None
_hub_lock = threading.Lock()


def get_hub() -> EventHub:
    """Return this process's event hub for the configured database, created on first use."""
    global _hub, _hub_url
    url = get_engine().url.render_as_string(hide_password=False)
    with _hub_lock:
        if _hub is None or _hub_url != url:
            if _hub is not None:
                _hub.close()  # the process moved to another database (tests do)
            _hub, _hub_url = EventHub(idle_timeout_s=pool_options().idle_timeout_s), url
        return _hub


def close_hub() -> None:
    """Stop and forget this process's hub, if any (before its database goes away)."""
    global _hub, _hub_url
    with _hub_lock:
        if _hub is not None:
            _hub.close()
        _hub = _hub_url = None


def drain(wakeups: queue.SimpleQueue[int], newest: int) -> int:
    """Take every wake-up queued so far; return the newest seq announced (-1: unknown)."""
    return drain_with_text(wakeups, newest)[0]


def drain_with_text(wakeups: queue.SimpleQueue[Any], newest: int) -> tuple[int, list[TextDelta]]:
    """Take everything queued so far: the newest seq announced (-1: unknown) and the
    text deltas, in the order they came."""
    deltas: list[TextDelta] = []
    while not wakeups.empty():
        item = wakeups.get_nowait()
        if isinstance(item, TextDelta):
            deltas.append(item)
        else:
            newest = -1 if -1 in (newest, item) else max(newest, item)
    return newest, deltas


def _wait_beyond(wakeups: queue.SimpleQueue[int], seen: int) -> None:
    """Block until a wake-up announces an event after ``seen`` (or an unknown seq).

    Commits announced while the last read ran were often read already: reading again
    for them would cost a query each and find nothing new.
    """
    newest = drain(wakeups, wakeups.get())  # one read covers every wake-up so far
    while -1 < newest <= seen:
        newest = drain(wakeups, wakeups.get())


def event_data(event: Any) -> dict[str, Any]:
    """Return an event row as plain data."""
    return {"seq": event.seq, "type": event.type, "payload": event.payload}


def watch(
    job_id: int, after_seq: int = 0, *, hub: EventHub | None = None, limit: int = 500
) -> Iterator[dict[str, Any]]:
    """Yield the job's events after ``after_seq`` in order, waiting for new ones until it ends.

    Between batches of events this blocks on a wake-up from the hub: no sleeping, no
    re-reading state on a timer.
    """
    hub = hub or get_hub()
    wakeups = hub.subscribe(job_id)  # before the first read, so nothing slips between
    try:
        while True:
            with session_scope() as session:
                new = [event_data(e) for e in events.since(session, job_id, after_seq, limit=limit)]
            for event in new:
                after_seq = event["seq"]
                yield event
                if event["type"] in FINAL_EVENTS:
                    return
            if len(new) < limit:  # caught up: sleep until told about the next commit
                _wait_beyond(wakeups, after_seq)
    finally:
        hub.unsubscribe(job_id, wakeups)
