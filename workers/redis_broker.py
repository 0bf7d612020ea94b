"""A Dramatiq Redis broker that costs (almost) no commands while idle.

Same Redis layout and message semantics as Dramatiq's :class:`RedisBroker` (stock
producers and consumers can share queues with it), fewer billed commands:

- consumers block on the queue lists instead of polling (:mod:`workers.redis_consumer`);
- the heartbeat is written only while the process holds unacked messages
  (:mod:`workers.redis_heartbeat`);
- enqueue and ack are two plain pipelined/ordered commands instead of a script that also
  writes a heartbeat; fetch is a leaner script (``workers/lua/fetch.lua``);
- dead workers' messages are requeued by a timed maintenance script
  (``workers/lua/maintenance.lua``) instead of on 0.1% of all calls;
- redis-py's ``CLIENT SETINFO``/``MAINT_NOTIFICATIONS`` on each new connection are off.

Every command the broker's connections send is counted in memory by
:mod:`workers.redis_meter` (for ``handson budget``); nothing is sent to Redis for it.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import (
    DEFAULT_DEAD_MESSAGE_TTL,
    DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_MAINTENANCE_CHANCE,
    RedisBroker,
)
from dramatiq.common import current_millis
from dramatiq.middleware import Middleware

try:
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # redis-py < 7 has no maintenance notifications
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

from workers import redis_meter
from workers.redis_consumer import FrugalConsumer
from workers.redis_heartbeat import Heartbeat

#: Longest time a blocked connection whose peer vanished silently (no FIN, no RST) goes
#: unnoticed, in seconds: TCP keepalive probes, free of Redis commands, enforce it.
DEFAULT_SAFETY_INTERVAL = 120
#: Bounds of the safety interval, in seconds (the kernel takes whole seconds).
SAFETY_INTERVAL_RANGE = (8, 3600)
#: Longest single blocking wait on a queue list, in milliseconds. Messages wake a
#: waiter at once whoever sent them; this only re-arms the wait (one billed command),
#: the backstop for a proxy that answers keepalive probes after losing the server side.
DEFAULT_WAIT_TIMEOUT = 30 * 60 * 1000
#: How often a worker requeues dead workers' messages and drops expired dead letters,
#: in milliseconds (stock Dramatiq: on a random 0.1% of its calls).
DEFAULT_MAINTENANCE_INTERVAL = 60 * 60 * 1000

#: Options of :class:`FrugalRedisBroker` that Dramatiq's ``RedisBroker`` does not take.
FRUGAL_OPTIONS = ("wait_timeout", "safety_interval", "maintenance_interval")

_LUA = Path(__file__).resolve().parent / "lua"


def no_housekeeping() -> dict[str, Any]:
    """Return redis-py options that stop billable commands on each new connection.

    ``CLIENT SETINFO LIB-NAME``/``LIB-VER`` (two commands) and, on RESP3, ``CLIENT
    MAINT_NOTIFICATIONS ON`` (one) are sent by default; HELLO, AUTH and SELECT are free.
    """
    base = getattr(redis.connection, "AbstractConnection", redis.Connection)
    accepted = inspect.signature(base.__init__).parameters
    options: dict[str, Any] = (
        {"driver_info": None}
        if "driver_info" in accepted
        else {"lib_name": None, "lib_version": None}
    )
    if MaintNotificationsConfig is not None:
        options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    return options


class FrugalRedisBroker(RedisBroker):
    """A :class:`RedisBroker` whose consumers block instead of polling.

    Parameters:
      url(str): An optional connection URL (``redis://``, ``rediss://``).
      wait_timeout(int): Longest single blocking wait, in milliseconds.
      safety_interval(int): Longest time a silently vanished peer of a blocked connection
        goes unnoticed, in seconds (TCP keepalive; between 8 and 3600).
      maintenance_interval(int): Interval between two requeues of dead workers'
        messages by a worker, in milliseconds (the first comes one heartbeat timeout
        after a consumer starts).
      **kwargs: As for :class:`RedisBroker` (``namespace``, ``heartbeat_timeout``,
        ``dead_message_ttl``, ``client``, connection parameters).
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        wait_timeout: int = DEFAULT_WAIT_TIMEOUT,
        safety_interval: int = DEFAULT_SAFETY_INTERVAL,
        maintenance_interval: int = DEFAULT_MAINTENANCE_INTERVAL,
        maintenance_chance: int = DEFAULT_MAINTENANCE_CHANCE,
        heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT,
        dead_message_ttl: int = DEFAULT_DEAD_MESSAGE_TTL,
        **parameters: Any,
    ) -> None:
        low, high = SAFETY_INTERVAL_RANGE
        if not low <= safety_interval <= high:
            raise ValueError(f"safety_interval must be {low}-{high} seconds, got {safety_interval}")
        if url and "client" not in parameters:
            parameters["connection_pool"] = redis.ConnectionPool.from_url(url, **no_housekeeping())
        elif "client" not in parameters and "connection_pool" not in parameters:
            parameters.update(no_housekeeping())
        super().__init__(
            maintenance_chance=maintenance_chance,
            heartbeat_timeout=heartbeat_timeout,
            dead_message_ttl=dead_message_ttl,
            **parameters,
        )
        # Count every command this process sends (workers.redis_meter), for the budget.
        redis_meter.meter_pool(self.client.connection_pool)
        self._batch = threading.local()
        #: Set when a worker starts shutting down: consumers then stop waiting long.
        self.stopping = threading.Event()
        self.add_middleware(_ShutdownNotice())
        self.wait_timeout = wait_timeout
        self.safety_interval = safety_interval
        self.maintenance_interval = maintenance_interval
        self.heartbeat = Heartbeat(self._beat, heartbeat_timeout=heartbeat_timeout)
        for name in ("fetch", "maintenance"):
            source = (_LUA / f"{name}.lua").read_bytes()
            self.scripts[f"frugal_{name}"] = self.client.register_script(source)

    @property
    def consumer_class(self) -> type[FrugalConsumer]:
        return FrugalConsumer

    def key(self, queue_name: str) -> str:
        """Return the full Redis key of a queue list."""
        return f"{self.namespace}:{queue_name}"

    def close(self) -> None:
        """Stop the heartbeat and close idle connections (they reopen if used again)."""
        self.heartbeat.close()
        self.client.connection_pool.disconnect(inuse_connections=False)
        super().close()

    @contextlib.contextmanager
    def batched_enqueues(self) -> Iterator[None]:
        """Send this thread's enqueues of the block together when it ends.

        For a group of N messages: one HSET and one RPUSH per queue (2 commands, one
        round trip) instead of 2 N. All or nothing: if the block raises, none of its
        messages is sent. Nested blocks join the outer one.

        Example:

          >>> with broker.batched_enqueues():
          ...     dramatiq.group(messages).run()
        """
        if getattr(self._batch, "pending", None) is not None:
            yield
            return
        pending: list[tuple[str, str, bytes]] = []
        self._batch.pending = pending
        try:
            yield
        finally:
            self._batch.pending = None
        self._push(pending)

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> None:
        """Store a message and push its id: HSET then RPUSH, one round trip, no script.

        The data is written before the id is pushed, so a consumer never pops an id
        without its data; no heartbeat is written (a producer holds nothing).
        """
        pending = getattr(self._batch, "pending", None)
        if pending is not None:
            pending.append((queue_name, message_id, data))
        else:
            self._push([(queue_name, message_id, data)])

    def _push(self, messages: list[tuple[str, str, bytes]]) -> None:
        by_queue: dict[str, dict[str, bytes]] = {}
        for queue_name, message_id, data in messages:
            by_queue.setdefault(queue_name, {})[message_id] = data
        if not by_queue:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for queue_name, batch in by_queue.items():
                key = self.key(queue_name)
                pipe.hset(f"{key}.msgs", mapping=batch)
                pipe.rpush(key, *batch)
            pipe.execute()

    def do_ack(self, queue_name: str, message_id: str) -> None:
        """Acknowledge a message: drop its data only if this worker still held it.

        The same condition as Dramatiq's ack script, as two plain commands: if another
        worker requeued the message meanwhile (this one was taken for dead), that
        worker owns it now.
        """
        key = self.key(queue_name)
        if self.client.srem(f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}", message_id):
            self.client.hdel(f"{key}.msgs", message_id)

    def fetch(self, queue_name: str, count: int) -> list[tuple[str, bytes]]:
        """Take up to ``count`` messages off a queue; return (redis id, data) pairs."""
        key = self.key(queue_name)
        beat = self.heartbeat.due()
        flat = self.scripts["frugal_fetch"](
            keys=[
                key,
                f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}",
                f"{key}.msgs",
                f"{self.namespace}:__heartbeats__",
            ],
            args=[count, int(beat), self.broker_id, current_millis()],
        )
        if beat:
            self.heartbeat.beaten()
        _count_fetch_calls(beat, bool(flat))
        pairs = [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]
        if pairs:
            self.heartbeat.hold(redis_id for redis_id, _ in pairs)
        return pairs

    def maintain(self, queue_name: str, *queue_names: str) -> int:
        """Requeue dead workers' unacked messages of these queues; return how many."""
        return int(
            self.scripts["frugal_maintenance"](
                keys=[self.namespace],
                args=[
                    current_millis(),
                    self.heartbeat_timeout,
                    self.dead_message_ttl,
                    self.broker_id,
                    queue_name,
                    queue_name,
                    *queue_names,
                ],
            )
        )

    def _beat(self) -> None:
        self.client.zadd(f"{self.namespace}:__heartbeats__", {self.broker_id: current_millis()})


def _count_fetch_calls(beat: bool, found: bool) -> None:
    """Meter the commands ``fetch.lua`` ran, as a host bills them (the EVALSHA is metered
    when sent): ZADD when it beat, LPOP, then SADD and HMGET when it found messages.

    (An id whose data was gone costs one more SREM, unseen here; it is rare.)
    """
    calls = ["ZADD"] * beat + ["LPOP"] + ["SADD", "HMGET"] * found
    for command in calls:
        redis_meter.METER.count(command)


class _ShutdownNotice(Middleware):
    """Tells the broker's consumers that the worker is stopping.

    Dramatiq stops its worker threads first (they may finish long tasks), then its
    consumer threads, which see the request only when ``next`` returns: consumers then
    wait in short steps so that SIGTERM is honoured within a few tenths of a second.
    """

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if isinstance(broker, FrugalRedisBroker):
            broker.stopping.clear()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if isinstance(broker, FrugalRedisBroker):
            broker.stopping.set()
