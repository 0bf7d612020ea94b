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

from collections.abc import Callable
from typing import Any

import redis

from workers.redis_waiter import BlockingWait


class BusyWatch(BlockingWait):
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
        super().__init__(client, key, safety_interval=safety_interval, name="busy-watch")
        self._on_notice = on_notice

    def _call(self) -> Any:
        return self._client.bzpopmin(self.key, 0)

    def _on_result(self, result: Any) -> None:
        self._armed.clear()
        member = result[1]
        self._on_notice(member.decode() if isinstance(member, bytes) else member)
