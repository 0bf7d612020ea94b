"""Busy notices: an idle worker learns that another one started holding messages.

A worker that dies holding messages is found by another worker's maintenance pass, which
runs every heartbeat timeout while that worker is busy or saw a live heartbeat, but only
hourly when it is idle (an idle worker bills almost nothing). An idle worker is not woken
by work that other processes run, so without a notice a dead worker's messages could wait
an hour while every survivor idles.

So a worker that goes from holding nothing to holding messages adds its id to the sorted
set ``<namespace>:__busy__`` (one ``ZADD`` inside its fetch script), and every idle
worker process blocks in ``BZPOPMIN <namespace>:__busy__ 0`` on a connection of its own:
one of them takes the notice and watches (maintenance every heartbeat timeout while it
sees a live heartbeat), so the dead worker's messages are requeued within about two
heartbeat timeouts of its death. The set holds at most one entry per worker. The wait
has no timeout, so an idle process bills nothing for it; TCP keepalive notices a
vanished peer within the safety interval, and if a notice is lost anyway (a proxy that
answers keepalive probes itself) the hourly maintenance pass is the backstop.

A worker that takes its own notice gives it back when it is still busy (for another
idle worker) and drops it otherwise; it waits for notices only while it holds nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from workers.redis_waiter import CLOSE_TIMEOUT_S, RECONNECT_DELAY_S, blocking_client


class BusyWatch:
    """Waits for busy notices while armed; calls ``on_notice(worker_id)`` for each.

    Parameters:
      client(redis.Redis): The broker's client; the watch makes its own connection like it.
      key(str): The sorted set of notices (``dramatiq:__busy__``).
      safety_interval(float): Longest time a vanished peer goes unnoticed, in seconds.
      on_notice(Callable[[str], None]): Called from the watch thread with the worker id.
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        *,
        safety_interval: float,
        on_notice: Callable[[str], None],
    ) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.key = key
        self._client = blocking_client(client, safety_interval)
        self._on_notice = on_notice
        self._armed = threading.Event()
        self._closed = False
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self) -> None:
        """Wait for the next notice (or keep waiting); disarmed again once one comes."""
        if self._closed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="busy-watch", daemon=True)
            self._thread.start()
        self._armed.set()

    def close(self) -> None:
        """Stop waiting: the blocked call fails at once because its socket is shut."""
        self._closed = True
        self._closing.set()
        self._armed.set()
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while True:
            self._client.connection_pool.disconnect(inuse_connections=True)
            thread = self._thread
            if thread is None or thread is threading.current_thread():
                break
            thread.join(timeout=0.05)
            if not thread.is_alive() or time.monotonic() > deadline:
                break
        self._client.close()

    def _run(self) -> None:
        while True:
            self._armed.wait()
            if self._closed:
                return
            try:
                found = self._client.bzpopmin(self.key, 0)
            except (redis.RedisError, OSError, ValueError) as error:
                if self._closed:
                    return
                self.logger.info("Waiting for busy notices failed: %s; reconnecting.", error)
                self._closing.wait(RECONNECT_DELAY_S)
                continue
            if found:
                self._armed.clear()
                member = found[1]
                self._on_notice(member.decode() if isinstance(member, bytes) else member)
