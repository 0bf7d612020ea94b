"""A worker heartbeat that beats only while the process holds unacked messages.

Dramatiq's Redis broker writes ``ZADD __heartbeats__`` on every script call, so an idle
worker pays for a heartbeat every second. Others requeue a worker's unacked messages
once its heartbeat is older than ``heartbeat_timeout``; a worker that holds nothing has
nothing to lose, so it needs no heartbeat at all. One busy on a long task must keep it
fresh: this thread beats every quarter of the timeout while anything is held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import redis

#: Smallest interval between two heartbeats, in seconds (guards tiny test timeouts).
MIN_INTERVAL_S = 0.25


class Heartbeat:
    """Tracks the messages a broker holds and keeps its heartbeat fresh while it holds any.

    Parameters:
      beat(Callable[[], None]): Writes one heartbeat (one ``ZADD``).
      heartbeat_timeout(int): Dramatiq's timeout, in milliseconds; we beat 4 times per timeout.
    """

    def __init__(self, beat: Callable[[], None], *, heartbeat_timeout: int) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self._beat = beat
        self.interval = max(MIN_INTERVAL_S, heartbeat_timeout / 4000)
        self._held: set[str] = set()
        self._last_beat = float("-inf")
        self._condition = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def due(self) -> bool:
        """Return True when a heartbeat written now would not be redundant."""
        return time.monotonic() - self._last_beat >= self.interval

    def stale_for_watchers(self) -> bool:
        """Return True when nothing is held and the last heartbeat is half a timeout old
        or more: a worker watching this one may have stopped (``workers.redis_watch``)."""
        return not self._held and time.monotonic() - self._last_beat >= 2 * self.interval

    def beaten(self) -> None:
        """Note that a heartbeat was just written (e.g. by the fetch script)."""
        self._last_beat = time.monotonic()

    def hold(self, redis_message_ids: Iterable[str]) -> None:
        """Start beating for these messages (fetched, not yet acked)."""
        with self._condition:
            self._held.update(redis_message_ids)
            self._start()
            self._condition.notify_all()

    def release(self, redis_message_id: str) -> None:
        """Stop beating for this message (acked, nacked or requeued)."""
        with self._condition:
            self._held.discard(redis_message_id)

    @property
    def held(self) -> int:
        """How many messages this process holds."""
        return len(self._held)

    def close(self) -> None:
        """Stop the heartbeat thread."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    def _start(self) -> None:
        # Started lazily: a producer-only process (web, CLI) never holds a message.
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="redis-heartbeat", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        with self._condition:
            while not self._closed:
                if not self._held:
                    self._condition.wait()
                    continue
                wait = self.interval - (time.monotonic() - self._last_beat)
                if wait > 0:
                    self._condition.wait(wait)
                    continue
                self._condition.release()
                try:
                    self._beat()
                    self.beaten()
                except redis.RedisError as error:
                    # Retried at the next interval; the timeout allows about three misses.
                    self.logger.warning("Could not write the worker heartbeat: %s", error)
                    self._last_beat = time.monotonic()
                finally:
                    self._condition.acquire()
