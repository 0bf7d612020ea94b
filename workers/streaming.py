"""Stream a guide to watchers while it is written: pieces coalesced into a few deltas.

A generator hands every piece of text it writes to ``on_text``; sending each would cost
a statement per token. A :class:`Coalescer` collects them and flushes what is new at
most once per ``interval_s`` per run, from a one-shot timer armed when a piece arrives
(no thread loops or polls, and the generator's thread never waits for a flush). What
a run streams is capped (``max_chars``); a flush is cut into payloads PostgreSQL
accepts (:func:`db.text_stream.split`) and sent as one statement. The tail is flushed
at the end of a run that streamed anything, before its outcome; a run done within one
interval streams nothing (its outcome brings the guide at once). A worker process
sends the tail in the transaction recording the outcome instead: no connection checked
out for it, heard at that commit just before the outcome's event.

Streaming stays off the run's critical path: a flush that fails is logged at debug
level and dropped, and the run streams nothing more (a database that fails a NOTIFY
would slow every later flush too); the stored guide is the generator's whole text. (A
tail sent with the outcome fails only where the outcome's own NOTIFY would.)
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from db import text_stream
from db.text_stream import TextDelta
from settings import Settings
from workers.generators.base import OnText

logger = logging.getLogger(__name__)

#: What sends a flush's deltas (one statement on PostgreSQL).
Sender = Callable[[Sequence[TextDelta]], None]


class Coalescer:
    """Collects the pieces of one run's guide and flushes them as bounded deltas.

    Call it with each piece (it is an ``on_text``), then :meth:`close` once.

    Parameters:
      job_id: the run's job (watchers follow jobs).
      run_id: the task run whose guide this is.
      interval_s: least time between two flushes, in seconds.
      max_chars: most text streamed for the run, in characters (the rest is not sent).
      send: sends a flush's deltas (default: :func:`db.text_stream.send`).
    """

    def __init__(
        self,
        *,
        job_id: int,
        run_id: int,
        interval_s: float,
        max_chars: int,
        send: Sender | None = None,
    ) -> None:
        self.job_id, self.run_id = job_id, run_id
        self.interval_s, self.max_chars = interval_s, max_chars
        #: Tells this attempt's deltas from an earlier attempt's of the same run.
        self.stream = secrets.token_hex(4)
        #: Flushes sent so far.
        self.flushes = 0
        self._send = send or text_stream.send
        self._lock = threading.Lock()  # guards the fields below
        self._send_lock = threading.Lock()  # one flush at a time, in offset order
        self._pending: list[str] = []
        self._sent = 0  # characters flushed: the offset of what is pending
        self._kept = 0  # characters accepted (flushed and pending)
        self._last = time.monotonic()  # the first flush waits one interval too
        self._timer: threading.Timer | None = None
        self._closed = False  # no more pieces taken; only the tail's flush goes out
        self._failed = False  # a flush failed: nothing more is sent

    def __call__(self, piece: str) -> None:
        """Take the next piece of the guide; a flush follows once the interval has passed.

        The flush runs on a one-shot timer's thread, never on the caller's: the
        generator goes on writing (or reading its provider's stream) meanwhile.
        """
        with self._lock:
            piece = piece.replace("\0", "")[: self.max_chars - self._kept]
            if self._closed or self._failed or not piece:
                return
            self._pending.append(piece)
            self._kept += len(piece)
            if self._timer is None:
                wait = self.interval_s - (time.monotonic() - self._last)
                self._timer = threading.Timer(max(0.0, wait), self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def close(self, *, flush: bool = True) -> None:
        """Stop streaming; flush the tail when ``flush`` and a flush went out or was due."""
        if not flush:
            self._stop()
        elif tail := self.take_tail():
            self._deliver(tail)

    def take_tail(self) -> list[TextDelta]:
        """Stop streaming; return the tail's deltas for the caller to send instead.

        What :meth:`close` would flush: nothing when no flush went out or was due (a run
        done within one interval) or a flush failed. A flush on its way goes out first.
        """
        if not self._stop():
            return []
        with self._send_lock, self._lock:
            delta = self._take_pending()
        return [] if delta is None else text_stream.split(delta)

    def flush(self) -> None:
        """Send what is pending as one flush (nothing when nothing is pending or closed)."""
        with self._send_lock:
            with self._lock:
                delta = None if self._closed else self._take_pending()
            if delta is not None:
                self._deliver(text_stream.split(delta))

    def _stop(self) -> bool:
        """Take no more pieces; return whether the tail is to go out (streamed, or due)."""
        with self._lock:
            self._cancel_timer()
            self._closed = True
            streamed = self._sent > 0  # a flush went out, or is going out now
            due = time.monotonic() - self._last >= self.interval_s  # its timer was cancelled
        return streamed or due

    def _take_pending(self) -> TextDelta | None:
        """Take what is pending as the next delta (with ``_lock`` held); None: nothing to send."""
        if not self._pending or self._failed:
            return None
        delta = TextDelta(self.job_id, self.run_id, self.stream, self._sent, "".join(self._pending))
        self._pending.clear()
        self._sent = delta.end
        self._last = time.monotonic()
        self._cancel_timer()
        return delta

    def _deliver(self, deltas: list[TextDelta]) -> None:
        """Send one flush's deltas; on failure, stream nothing more (never the run's failure)."""
        try:
            self._send(deltas)
        except Exception as error:  # drop it, stream no more
            logger.debug("Dropped a flush of run %s's guide: %s", self.run_id, error)
            with self._lock:
                self._failed = True
            return
        with self._lock:
            self.flushes += 1

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
        self.flush()

    def _cancel_timer(self) -> None:
        """Cancel the armed timer, if any (with ``_lock`` held)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@contextlib.contextmanager
def guide_stream(
    job_id: int | None, run_id: int, settings: Settings, *, tail: list[TextDelta] | None = None
) -> Iterator[OnText | None]:
    """Yield the ``on_text`` that streams run ``run_id``'s guide, or None when off.

    Streaming is off with ``GUIDE_STREAM_INTERVAL_MS`` 0 and for a run of no known job.
    The tail is flushed when the block ends normally or, given a ``tail`` list, added
    to it for the caller to send in the transaction recording the run's outcome (with
    :func:`db.text_stream.send_on`: no connection of its own), where that keeps it
    ahead of the outcome's event for every watcher
    (:func:`db.text_stream.heard_in_order_with_commits`). After an error nothing more
    is sent.
    """
    if job_id is None or settings.GUIDE_STREAM_INTERVAL_MS <= 0:
        yield None
        return
    coalescer = Coalescer(
        job_id=job_id,
        run_id=run_id,
        interval_s=settings.GUIDE_STREAM_INTERVAL_MS / 1000,
        max_chars=max(0, settings.GUIDE_STREAM_MAX_CHARS),
    )
    try:
        yield coalescer
    except BaseException:
        coalescer.close(flush=False)
        raise
    if tail is not None and text_stream.heard_in_order_with_commits():
        tail.extend(coalescer.take_tail())
    else:
        coalescer.close()
