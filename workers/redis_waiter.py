"""Wait for a message on a Redis list without polling, waking one waiter per message.

``BLMOVE queue taken LEFT RIGHT timeout`` moves the head id of the queue list to the
consumer's own "taken" list in one atomic step and returns as soon as any producer
(ours or stock Dramatiq's, which need not cooperate) pushes to the queue. The id moves
away, so Redis hands each pushed id to one blocked waiter only: a push of one message
wakes one consumer, a group of n wakes at most n (each then fetches more for its idle
threads). The consumer's fetch script then takes the taken id (and more) into its acks
set; an id left in a taken list by a process that died in between is requeued by
maintenance. One billed command per wake-up or per ``timeout``, none while waiting.

The blocking call runs on a thread and a connection of its own, so the consumer thread
keeps returning to Dramatiq's worker loop (shutdown, delayed messages) without a
command, and closing the waiter (shutting its socket) ends the wait at once.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

#: Pause before a new blocking call after a connection error, in seconds.
RECONNECT_DELAY_S = 1.0
#: Longest wait for the waiter thread to end when closing, in seconds.
CLOSE_TIMEOUT_S = 2.0

#: Probes sent after the first idle period, before the kernel gives a connection up.
KEEPALIVE_PROBES = 4


def keepalive_options(safety_interval: float) -> dict[int, int]:
    """Return TCP keepalive socket options that notice a vanished peer within ``safety_interval``.

    Probes are answered by the peer's kernel and cost no Redis command. The first is sent
    after half the interval of silence (which also keeps NAT and load-balancer state
    alive), then one every eighth of it; four unanswered probes end the connection, so a
    peer that vanished silently is noticed within ``safety_interval`` seconds.
    """
    idle, interval = max(1, int(safety_interval / 2)), max(1, int(safety_interval / 8))
    wanted = {"TCP_KEEPIDLE": idle, "TCP_KEEPINTVL": interval, "TCP_KEEPCNT": KEEPALIVE_PROBES}
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


def blocking_client(client: redis.Redis, safety_interval: float) -> redis.Redis:
    """Return a one-connection client like ``client``, fit for waits of any length.

    No socket timeout (a blocking call may last longer than any read timeout), TCP
    keepalive probes within ``safety_interval`` seconds (:func:`keepalive_options`), no
    automatic retry (the waiter decides what to do after an error).
    """
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs.update(
        socket_timeout=None,
        socket_keepalive=True,
        socket_keepalive_options=keepalive_options(safety_interval),
        retry=None,
        retry_on_error=[],
    )
    return redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, max_connections=1, **kwargs
        )
    )


class BlockingWait:
    """A blocking Redis call issued on a thread and a connection of its own while armed.

    Subclasses say which call (:meth:`_call`) and what a result or an error means
    (:meth:`_on_result`, :meth:`_on_error`). Closing shuts the socket, so a call blocked
    for any length ends at once.

    Parameters:
      client(redis.Redis): The broker's client; the wait makes its own connection like it.
      key(str): The key the call blocks on.
      safety_interval(float): Longest time a vanished peer goes unnoticed, in seconds
        (TCP keepalive, no Redis command).
      name(str): The thread's name.
    """

    def __init__(self, client: redis.Redis, key: str, *, safety_interval: float, name: str) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.key = key
        self._client = blocking_client(client, safety_interval)
        self._name = name
        self._armed = threading.Event()
        self._closed = False
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self) -> None:
        """Start (or keep) waiting."""
        if self._closed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._armed.set()

    def close(self) -> None:
        """Stop waiting: the blocked call fails at once because its socket is shut."""
        self._closed = True
        self._closing.set()
        self._armed.set()
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while True:
            # Again until the thread is gone: it may have been about to open a new
            # connection (or send its call) when the previous one was shut.
            self._client.connection_pool.disconnect(inuse_connections=True)
            thread = self._thread
            if thread is None or thread is threading.current_thread():
                break
            thread.join(timeout=0.05)
            if not thread.is_alive() or time.monotonic() > deadline:
                break
        self._client.close()

    def _call(self) -> Any:
        """Issue the blocking call; return its result (None: it timed out)."""
        raise NotImplementedError

    def _on_result(self, result: Any) -> None:
        """Act on a call's result (not None)."""
        raise NotImplementedError

    def _on_error(self) -> None:
        """Act on a failed call, before the back-off and the next try."""

    def _run(self) -> None:
        while True:
            self._armed.wait()
            if self._closed:
                return
            try:
                result = self._call()
            except (redis.RedisError, OSError, ValueError) as error:
                # OSError/ValueError: redis-py reading a socket that close() just shut.
                if self._closed:
                    return
                self.logger.info("Waiting on %r failed: %s; reconnecting.", self.key, error)
                self._on_error()
                # A back-off before reconnecting, cut short by close().
                self._closing.wait(RECONNECT_DELAY_S)
                continue
            if result is not None:
                self._on_result(result)


class ListWaiter(BlockingWait):
    """Blocks on a Redis list while armed; moves an id to ``destination``, calls ``on_ready``.

    Parameters:
      client(redis.Redis): The broker's client; the waiter makes its own connection like it.
      key(str): The full key of the list (``dramatiq:default``).
      destination(str): The list the id that ends a wait is moved to (the consumer's own).
      timeout(float): Longest single blocking call, in seconds; a timed-out call is
        simply issued again, so this bounds how long a lost wait can go unnoticed when
        keepalive probes cannot tell (a proxy that answers them itself).
      safety_interval(float): Longest time a vanished peer goes unnoticed, in seconds
        (TCP keepalive, no Redis command).
      on_ready(Callable[[], None]): Called from the waiter thread after a wake-up or error.
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        *,
        destination: str,
        timeout: float,
        safety_interval: float,
        on_ready: Callable[[], None],
    ) -> None:
        super().__init__(client, key, safety_interval=safety_interval, name=f"wait:{key}")
        self.destination = destination
        self.timeout = timeout
        self._on_ready = on_ready
        self._ready = threading.Event()

    def arm(self) -> None:
        """Start (or keep) waiting: the next id pushed is moved to ``destination``."""
        if not self._ready.is_set():
            super().arm()

    def take_ready(self) -> bool:
        """Return True, once, when an id was moved (or an error happened: one may have been)."""
        if self._ready.is_set():
            self._ready.clear()
            return True
        return False

    def _call(self) -> Any:
        return self._client.blmove(self.key, self.destination, self.timeout, "LEFT", "RIGHT")

    def _on_result(self, result: Any) -> None:
        self._signal()

    def _on_error(self) -> None:
        # Let the consumer fetch: it reports a lasting outage to Dramatiq's consumer
        # thread, which restarts it.
        self._signal()

    def _signal(self) -> None:
        self._armed.clear()
        self._ready.set()
        self._on_ready()
