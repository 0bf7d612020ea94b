"""A Dramatiq Redis broker that costs (almost) no commands while idle.

Same Redis layout and message semantics as Dramatiq's :class:`RedisBroker` (stock
producers and consumers can share queues with it), fewer billed commands:

- consumers block on the queue lists instead of polling, and a pushed message wakes one
  of them, not all (:mod:`workers.redis_consumer`, :mod:`workers.redis_waiter`); each
  fetches for its idle threads plus a small margin, so a group spreads over processes;
- the heartbeat is written only while the process holds unacked messages
  (:mod:`workers.redis_heartbeat`);
- enqueue is two plain pipelined commands instead of a script that also writes a
  heartbeat; acks finished close together go out as one HDEL and one SREM
  (:mod:`workers.redis_acks`); fetch is a leaner script (``workers/lua/fetch.lua``);
- dead workers' messages are requeued by a timed maintenance script
  (``workers/lua/maintenance.lua``) instead of on 0.1% of all calls: every heartbeat
  timeout while any worker holds messages, hourly when all are idle;
- messages a worker thread sends from its after-hooks (a pipeline's next step, the
  tasks an outcome releases) are claimed by its own process when it has free threads:
  written straight into its acks set, no push, wake-up or fetch (:mod:`workers.redis_handoff`);
- a message's ``rank`` option rides in its Redis id and the fetch takes the highest
  ranked of the queue's head first (:mod:`workers.redis_rank`), at no command more
  except one LPUSH when a fetch leaves ranked ids behind;
- redis-py's ``CLIENT SETINFO``/``MAINT_NOTIFICATIONS`` on each new connection are off.

Every command the broker's connections send is counted in memory by
:mod:`workers.redis_meter` (for ``handson budget``); nothing is sent to Redis for it.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Iterator, Sequence
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
from dramatiq.common import current_millis, dq_name
from dramatiq.message import Message
from dramatiq.middleware import Middleware

try:
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # redis-py < 7 has no maintenance notifications
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

from workers import redis_meter, redis_rank
from workers.redis_acks import AckBatcher, ack_batch
from workers.redis_consumer import FrugalConsumer
from workers.redis_handoff import HandoffMiddleware, LocalHandoff
from workers.redis_heartbeat import Heartbeat
from workers.redis_watch import BusyWatch

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
#: Messages a worker process may hold beyond one per worker thread (fetched ahead).
DEFAULT_FETCH_MARGIN = 3
#: How long an ack waits for others finishing about the same time, in milliseconds.
DEFAULT_ACK_WINDOW = 100
#: Ids at the head of a queue a fetch looks at to take the highest-ranked first.
DEFAULT_RANK_WINDOW = 64
#: Most ids a fetch looks at (Lua's ``unpack`` has a stack limit).
MAX_RANK_WINDOW = 1000

#: Options of :class:`FrugalRedisBroker` that Dramatiq's ``RedisBroker`` does not take.
FRUGAL_OPTIONS = (
    "wait_timeout",
    "safety_interval",
    "maintenance_interval",
    "fetch_margin",
    "ack_window",
    "rank_window",
    "local_handoff",
    "busy_notices",
)

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
        messages by an idle worker, in milliseconds (the first comes one heartbeat
        timeout after a consumer starts; while any worker holds messages, one comes
        every heartbeat timeout).
      fetch_margin(int): Messages a process may hold beyond one per worker thread.
      ack_window(int): How long an ack waits to be sent with others, in milliseconds.
      rank_window(int): Ids at the head of a queue a fetch looks at to take the
        highest-ranked messages first (:mod:`workers.redis_rank`); 0: first in, first out.
      local_handoff(bool): Let a worker thread's sends from its after-hooks go straight
        to this process's free threads (:mod:`workers.redis_handoff`).
      busy_notices(bool): Leave a notice when starting work, and wait for others' while
        idle, so a dead worker's messages are requeued within a few heartbeat timeouts
        even when every survivor idles (:mod:`workers.redis_watch`).
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
        fetch_margin: int = DEFAULT_FETCH_MARGIN,
        ack_window: int = DEFAULT_ACK_WINDOW,
        rank_window: int = DEFAULT_RANK_WINDOW,
        local_handoff: bool = True,
        busy_notices: bool = True,
        maintenance_chance: int = DEFAULT_MAINTENANCE_CHANCE,
        heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT,
        dead_message_ttl: int = DEFAULT_DEAD_MESSAGE_TTL,
        **parameters: Any,
    ) -> None:
        low, high = SAFETY_INTERVAL_RANGE
        if not low <= safety_interval <= high:
            raise ValueError(f"safety_interval must be {low}-{high} seconds, got {safety_interval}")
        if fetch_margin < 0 or ack_window < 0:
            raise ValueError("fetch_margin and ack_window must not be negative")
        if not 0 <= rank_window <= MAX_RANK_WINDOW:
            raise ValueError(f"rank_window must be 0-{MAX_RANK_WINDOW}, got {rank_window}")
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
        self.handoff = LocalHandoff(enabled=local_handoff)
        # After Pipelines (and Progress, placed before it): its after-hooks run first.
        self.add_middleware(HandoffMiddleware(self.handoff))
        self.wait_timeout = wait_timeout
        self.safety_interval = safety_interval
        self.maintenance_interval = maintenance_interval
        self.fetch_margin = fetch_margin
        self.rank_window = rank_window
        #: Worker threads of the process's Dramatiq worker (set when it boots).
        self.worker_threads: int | None = None
        self.heartbeat = Heartbeat(self._beat, heartbeat_timeout=heartbeat_timeout)
        #: Where a worker that starts holding messages leaves a notice for idle ones.
        self.busy_key = f"{self.namespace}:__busy__"
        self.busy_notices = busy_notices
        self._announcing = False
        self.watch = BusyWatch(
            self.client,
            self.busy_key,
            safety_interval=safety_interval,
            on_notice=self._on_busy_notice,
        )
        self.acks = AckBatcher(self._send_acks, window_s=ack_window / 1000)
        for name in ("fetch", "maintenance"):
            source = (_LUA / f"{name}.lua").read_bytes()
            self.scripts[f"frugal_{name}"] = self.client.register_script(source)

    @property
    def consumer_class(self) -> type[FrugalConsumer]:
        return FrugalConsumer

    def key(self, queue_name: str) -> str:
        """Return the full Redis key of a queue list."""
        return f"{self.namespace}:{queue_name}"

    def acks_key(self, queue_name: str) -> str:
        """Return the key of this worker's set of unacked ids of a queue (Dramatiq's)."""
        return f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"

    def taken_key(self, queue_name: str) -> str:
        """Return the key of the list a blocking wait moves the id that ends it to."""
        return f"{self.acks_key(queue_name)}.taken"

    def close(self) -> None:
        """Send pending acks, stop the heartbeat, close idle connections (they reopen if used)."""
        self.acks.close()
        self.heartbeat.close()
        self.watch.close()
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

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        """Enqueue a message as Dramatiq's ``RedisBroker`` does, under a Redis id that
        carries the message's rank (:mod:`workers.redis_rank`).
        """
        message = message.copy(options={"redis_message_id": redis_rank.redis_id(message.options)})
        queue_name = message.queue_name
        if delay is not None:
            queue_name = dq_name(queue_name)
            eta = current_millis() + delay
            message = message.copy(queue_name=queue_name, options={"eta": eta})
        self.emit_before("enqueue", message, delay)
        self.do_enqueue(queue_name, message.options["redis_message_id"], message.encode())
        self.emit_after("enqueue", message, delay)
        return message

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
        # Highest ranked first: a local hand-over claims those, the rest queue in that order.
        for queue_name, batch in by_queue.items():
            by_queue[queue_name] = {i: batch[i] for i in redis_rank.highest_first(batch)}
        if not by_queue:
            return
        counts = {queue_name: len(batch) for queue_name, batch in by_queue.items()}
        with self.handoff.claiming(counts) as claims:
            with self.client.pipeline(transaction=False) as pipe:
                for queue_name, batch in by_queue.items():
                    key, ids = self.key(queue_name), list(batch)
                    local, rest = ids[: claims.get(queue_name, 0)], ids[claims.get(queue_name, 0) :]
                    # Data first: a claimed id in the acks set always has its data.
                    pipe.hset(f"{key}.msgs", mapping=batch)
                    if local:
                        pipe.sadd(self.acks_key(queue_name), *local)
                    if rest:
                        pipe.rpush(key, *rest)
                pipe.execute()
            for queue_name, count in claims.items():
                batch = by_queue[queue_name]
                local = list(batch)[:count]
                self.heartbeat.hold(local)
                pairs = [(redis_id, batch[redis_id]) for redis_id in local]
                self.handoff.deliver(queue_name, pairs, pushed_rest=len(batch) > count)

    def do_ack(self, queue_name: str, message_id: str) -> None:
        """Acknowledge one message now: HDEL its data, then SREM it (see :mod:`workers.redis_acks`).

        Consumers batch their acks through :attr:`acks` instead.
        """
        self._send_acks({queue_name: [message_id]})

    def _send_acks(self, batch: dict[str, list[str]]) -> None:
        ack_batch(self.client, self.namespace, self.broker_id, batch)

    def fetch(self, queue_name: str, count: int) -> list[tuple[str, bytes]]:
        """Take up to ``count`` messages off a queue; return (redis id, data) pairs."""
        return self.fetch_some(queue_name, count)[0]

    def fetch_some(
        self, queue_name: str, count: int, *, taken: bool = False, acks: Sequence[str] = ()
    ) -> tuple[list[tuple[str, bytes]], bool]:
        """Take up to ``count`` messages; return (redis id, data) pairs and whether the
        queue may hold more.

        With ``taken`` (after a wait), the ids the wait moved to this consumer's taken
        list come first, then the queue's head, and the queue is probed for more. When
        it takes from the queue, it takes the highest-ranked of those ids and a window
        of :attr:`rank_window` ids of the queue's head (a delay queue's consumer takes
        them in order). ``acks`` (redis ids of finished messages of this queue) are
        acked first, in the same script call.
        """
        key = self.key(queue_name)
        window = 0 if queue_name == dq_name(queue_name) else self.rank_window
        beat = self.heartbeat.due()
        # Starting work after half a heartbeat timeout or more holding nothing: leave a
        # busy notice for an idle worker (workers.redis_watch). After a shorter pause a
        # worker watching this one never saw its heartbeat stale, so it is still watching.
        announce = self.busy_notices and self.heartbeat.stale_for_watchers()
        self._announcing = announce  # our own watch may take the notice before we hold
        try:
            more, *flat = self.scripts["frugal_fetch"](
                keys=[
                    *(key, self.acks_key(queue_name), f"{key}.msgs"),
                    *(f"{self.namespace}:__heartbeats__", self.taken_key(queue_name)),
                    self.busy_key,
                ],
                args=[
                    *(count, int(beat) + 2 * int(announce), self.broker_id, current_millis()),
                    *(int(taken), window, *acks),
                ],
            )
            if beat:
                self.heartbeat.beaten()
            found = len(flat) // 2
            _count_fetch_calls(beat, taken, count, found, bool(acks), more == PUSHED_BACK)
            if announce and found:
                redis_meter.METER.count("ZADD")
            pairs = [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]
            if pairs:
                self.heartbeat.hold(redis_id for redis_id, _ in pairs)
        finally:
            self._announcing = False
        return pairs, bool(more)

    def return_taken(self, queue_name: str) -> int:
        """Move ids left in this consumer's taken list back to the queue; return how many."""
        moved = 0
        while self.client.lmove(self.taken_key(queue_name), self.key(queue_name), "LEFT", "RIGHT"):
            moved += 1
        return moved

    def give_back_taken(self, queue_name: str) -> None:
        """Move the id a wait took back to the head of the queue (one command)."""
        self.client.lmove(self.taken_key(queue_name), self.key(queue_name), "LEFT", "LEFT")

    def maintain(
        self, queue_name: str, *queue_names: str, sweep: bool = True
    ) -> tuple[int, int, int]:
        """Requeue dead workers' messages of these queues, drop expired dead letters.

        Parameters:
          queue_name(str): The canonical queue (its dead letters are swept).
          *queue_names(str): Other queues to look after (its delay queue).
          sweep(bool): Also remove every expired dead letter (in chunks of 1,000).

        Returns:
          (messages requeued, time in ms when another live worker's heartbeat goes stale
          or 0 when none is alive, expired dead letters removed).
        """
        requeued, next_stale, removed = self.scripts["frugal_maintenance"](
            keys=[self.namespace],
            args=[
                current_millis(),
                self.heartbeat_timeout,
                self.dead_message_ttl,
                self.broker_id,
                int(sweep),
                queue_name,
                queue_name,
                *queue_names,
            ],
        )
        return int(requeued), int(next_stale), int(removed)

    def _on_busy_notice(self, worker_id: str) -> None:
        """Another worker started holding messages: look after it every heartbeat timeout
        (while its heartbeat is live). Our own notice goes back for another idle worker
        while we are still busy, and is dropped otherwise."""
        if worker_id == self.broker_id:
            if self.heartbeat.held or self._announcing:
                try:
                    self.client.zadd(self.busy_key, {worker_id: current_millis()})
                except redis.RedisError as error:
                    self.logger.warning("Could not give our busy notice back: %s", error)
            return
        for consumer in self.handoff.consumers():
            consumer.watch_soon()

    def _beat(self) -> None:
        self.client.zadd(f"{self.namespace}:__heartbeats__", {self.broker_id: current_millis()})


#: ``fetch.lua``'s first answer when it pushed ids back to the queue's head.
PUSHED_BACK = 1


def _count_fetch_calls(
    beat: bool, taken: bool, count: int, found: int, acked: bool, more: bool
) -> None:
    """Meter the commands ``fetch.lua`` ran, as a host bills them (the EVALSHA is metered
    when sent): HDEL and SREM when acks rode along, ZADD when it beat, LPOP of the taken
    list when asked, LPOP of the queue unless the taken list filled the request, LPUSH
    when it pushed ids back (a probe or a rank window found more than it took), then
    SADD and HMGET when it found messages.

    (Counted as if the taken list held at most one id, as a wait moves one; an id whose
    data was gone costs one more SREM, unseen here; both are rare.)
    """
    queue_pop = not (taken and count == 1 and found == 1)
    calls = ["HDEL", "SREM"] * acked + ["ZADD"] * beat + ["LPOP"] * (taken + queue_pop)
    calls += ["LPUSH"] * more + ["SADD", "HMGET"] * bool(found)
    for command in calls:
        redis_meter.METER.count(command)


class _ShutdownNotice(Middleware):
    """Tells the broker's consumers that the worker is stopping.

    Dramatiq stops its worker threads first (they may finish long tasks), then its
    consumer threads, which see the request only when ``next`` returns: consumers then
    wait in short steps so that SIGTERM is honoured within a few tenths of a second.
    """

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if isinstance(broker, FrugalRedisBroker):
            # Consumers fetch for the threads they feed (they start after this hook).
            broker.worker_threads = worker.worker_threads

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if isinstance(broker, FrugalRedisBroker):
            broker.stopping.clear()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if isinstance(broker, FrugalRedisBroker):
            broker.stopping.set()
