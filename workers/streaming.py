"""Stream a guide to watchers while it is written: pieces coalesced into a few deltas.

A generator hands every piece of text it writes to ``on_text``; sending each would cost
a statement per token. A :class:`Coalescer` collects them and flushes what is new at
most once per ``interval_s`` per run, from a one-shot timer armed when a piece arrives
(no thread loops or polls, and the generator's thread never waits for a flush). What
a run streams is capped (``max_chars``); a flush is cut into payloads PostgreSQL
accepts (:func:`db.text_stream.split`) and sent as one statement. The tail is flushed
at the end of a run that streamed anything, before its outcome; a run done within one
interval streams nothing (its outcome brings the guide at once).

Streaming stays off the run's critical path: a flush that fails is logged at debug
level and dropped, and the run streams nothing more (a database that fails a NOTIFY
would slow every later flush too); the stored guide is the generator's whole text.
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
        with self._lock:
            self._cancel_timer()
            self._closed = True
            streamed = self._sent > 0  # a flush went out, or is going out now
            due = time.monotonic() - self._last >= self.interval_s  # its timer was cancelled
        if flush and (streamed or due):
            self.flush(final=True)

    def flush(self, *, final: bool = False) -> None:
        """Send what is pending as one flush (nothing when nothing is pending)."""
        with self._send_lock:
            with self._lock:
                if not self._pending or self._failed or (self._closed and not final):
                    return
                delta = TextDelta(
                    self.job_id, self.run_id, self.stream, self._sent, "".join(self._pending)
                )
                self._pending.clear()
                self._sent = delta.end
                self._last = time.monotonic()
                self._cancel_timer()
            try:
                self._send(text_stream.split(delta))
            except Exception as error:  # never the run's failure: drop it, stream no more
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
def guide_stream(job_id: int | None, run_id: int, settings: Settings) -> Iterator[OnText | None]:
    """Yield the ``on_text`` that streams run ``run_id``'s guide, or None when off.

    Streaming is off with ``GUIDE_STREAM_INTERVAL_MS`` 0 and for a run of no known job.
    The tail is flushed when the block ends normally; after an error nothing more is sent.
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
    coalescer.close()
