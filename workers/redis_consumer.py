"""The consumer of :class:`~workers.redis_broker.FrugalRedisBroker`: fetch what it can run.

Dramatiq's worker loop calls ``next(consumer)`` and, between calls, stops on shutdown
and re-enqueues due delayed messages. Stock Dramatiq answers each call with a fetch
script (back-off up to one second when idle) for up to twice the worker's threads. This
consumer fetches only when a worker thread is free, and only what the free threads can
run plus a small margin (``fetch_margin``): after a fetch that filled its request, or
after its :class:`~workers.redis_waiter.ListWaiter` moved a pushed id to it (which wakes
one consumer per pushed message, so a group spreads over idle processes). Otherwise it
waits on a thread event, which costs no command, for at most the worker timeout (so
shutdown stays prompt) and never past the due time of a delayed message it holds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.logging import get_logger
from dramatiq.message import Message

from workers.redis_waiter import ListWaiter

if TYPE_CHECKING:
    from workers.redis_broker import FrugalRedisBroker

#: Most message ids taken by one fetch (Lua's ``unpack`` has a stack limit).
FETCH_LIMIT = 1000
#: Longest idle wait inside ``next``, in milliseconds, whatever the worker timeout: the
#: wait costs no command, and Dramatiq only sees a shutdown request between calls.
MAX_IDLE_WAIT_MS = 500
#: The same once the worker is shutting down (so its consumer threads stop promptly).
STOPPING_WAIT_MS = 50


@contextlib.contextmanager
def _connection_closed_on_error() -> Iterator[None]:
    """Turn a lost Redis connection into Dramatiq's ``ConnectionClosed``.

    Dramatiq's consumer thread then closes this consumer and starts a new one.
    """
    try:
        yield
    except redis.ConnectionError as error:
        raise ConnectionClosed(error) from None


class FrugalConsumer(Consumer):
    """Consumes one queue (or delay queue) of a :class:`FrugalRedisBroker`.

    Parameters:
      broker(FrugalRedisBroker)
      queue_name(str)
      prefetch(int): Most messages held at once (fetched and not yet acked).
      timeout(int): Longest idle wait before ``next`` returns None, in milliseconds.
    """

    def __init__(
        self, broker: FrugalRedisBroker, queue_name: str, prefetch: int, timeout: int
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.timeout = timeout
        self.message_cache: list[tuple[str, bytes]] = []
        self.queued_message_ids: set[str] = set()
        self._etas: dict[str, int] = {}  # message id -> eta of delayed messages handed out
        self._redis_ids: dict[str, str] = {}  # message id -> redis message id, handed out
        self._may_have_more = True  # the list may hold more than the last fetch returned
        self._active = True  # found messages since the last maintenance (or just started)
        self._wake = threading.Event()
        self._waiter = ListWaiter(
            broker.client,
            broker.key(queue_name),
            destination=broker.taken_key(queue_name),
            timeout=broker.wait_timeout / 1000,
            safety_interval=broker.safety_interval,
            on_ready=self._wake.set,
        )
        self._canonical = not queue_name.endswith(".DQ")
        self._next_maintenance = time.monotonic() + broker.heartbeat_timeout / 1000 + 1
        self._closed = False
        self._reserved = 0  # messages being handed over to this consumer right now
        # A worker's canonical consumer waits for busy notices while idle (redis_watch).
        self._watches = self._canonical and broker.busy_notices
        if self._canonical:
            broker.handoff.register(self)

    @property
    def outstanding_message_count(self) -> int:
        return len(self.queued_message_ids) + len(self.message_cache) + self._reserved

    @property
    def runnable(self) -> int:
        """How many messages this consumer's worker runs at once (its threads; a delay
        queue's consumer holds messages without running them: its prefetch)."""
        threads = self.broker.worker_threads
        if not self._canonical or not threads:
            return self.prefetch
        return min(self.prefetch, threads)

    @property
    def limit(self) -> int:
        """Most messages held at once: one per worker thread plus the fetch margin."""
        if not self._canonical or not self.broker.worker_threads:
            return self.prefetch
        return min(self.prefetch, self.runnable + self.broker.fetch_margin)

    def ack(self, message: MessageProxy) -> None:
        """Acknowledge a processed message: sent with the acks finishing about now."""
        self.broker.acks.add(self.queue_name, message.options["redis_message_id"])
        self.broker.handoff.finished()
        self._forget(message)

    def nack(self, message: MessageProxy) -> None:
        """Move a failed message to the dead-letter queue (Dramatiq's own script)."""
        self.broker.handoff.finished()
        self._settle(self.broker.do_nack, message)

    def _settle(self, operation: Callable[[str, str], Any], message: MessageProxy) -> None:
        try:
            with _connection_closed_on_error():
                operation(self.queue_name, message.options["redis_message_id"])
        finally:
            self._forget(message)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Put fetched-but-unprocessed messages back on the queue (shutdown, errors)."""
        messages = list(messages)
        ids = [message.options["redis_message_id"] for message in messages]
        if not ids:
            return
        self.logger.debug("Re-enqueueing %r on queue %r.", ids, self.queue_name)
        with _connection_closed_on_error():
            self.broker.do_requeue(self.queue_name, *ids)
        for message in messages:
            self._forget(message)

    def __next__(self) -> MessageProxy | None:
        with _connection_closed_on_error():
            while True:
                self._wake.clear()
                if self.message_cache:
                    return self._hand_out(*self.message_cache.pop(0))
                if self._fetch_if_useful():
                    continue
                self._maintain_if_due()
                if self.outstanding_message_count < self.runnable:
                    self._waiter.arm()
                if self._watches and not self.broker.heartbeat.held:
                    self.broker.watch.arm()  # idle: hear of another worker starting work
                self._wake.wait(self._wait_seconds())
                return None

    def close(self) -> None:
        """Stop waiting, and give back messages fetched (or handed over) but never handed out."""
        with self.broker.handoff.lock:
            # From now on nothing is handed over to this consumer: its cache is final.
            self._closed = True
            self.broker.handoff.unregister(self)
        self._waiter.close()
        try:
            self.broker.return_taken(self.queue_name)
            self.broker.acks.flush()  # the worker is stopping: send the acks still waiting
        except redis.RedisError:
            self.logger.warning("Could not requeue a taken message or send acks; others will.")
        cached, self.message_cache = self.message_cache, []
        ids = [redis_id for redis_id, _ in cached]
        if self.queue_name.endswith(".DQ"):
            # Dramatiq's consumer thread drops its in-memory delay queue after a
            # connection error without requeueing it: the delayed messages handed out
            # here would stay unacked (and heartbeaten) forever. Give them back.
            ids += [self._redis_ids.pop(mid) for mid in list(self._etas) if mid in self._redis_ids]
        if ids:
            try:
                self.broker.do_requeue(self.queue_name, *ids)
            except redis.RedisError:
                self.logger.warning("Could not requeue %d messages; others will.", len(ids))
        for redis_id in ids:
            self.broker.heartbeat.release(redis_id)

    def reserve_handoff(self, wanted: int, *, finishing: bool) -> int:
        """Reserve room for up to ``wanted`` messages a finishing worker thread sends;
        return how many (:meth:`take_handed` or :meth:`cancel_handoff` follows).

        The room is this consumer's free threads, counting the calling thread when it
        finishes a message of this queue (it is about to ack it); none while closing or
        shutting down, nor while the queue may hold other messages (older or higher-ranked
        ones run first).
        Reserved room counts as held, so a wait's wake-up meanwhile does not fetch for
        the same threads.
        """
        if self._closed or self.broker.stopping.is_set() or not self.broker.worker_threads:
            return 0
        if self._may_have_more:
            # Older messages may be queued: they go first (FIFO), the sends are pushed.
            return 0
        room = max(0, self.runnable - self.outstanding_message_count + int(finishing))
        self._reserved += min(room, wanted)
        return min(room, wanted)

    def cancel_handoff(self, count: int) -> None:
        """Release room reserved for messages that were not handed over after all."""
        self._reserved -= count

    def take_handed(self, pairs: list[tuple[str, bytes]], *, pushed_rest: bool) -> None:
        """Take messages claimed for this consumer (already in its acks set), wake ``next``.

        ``pushed_rest``: the rest of their group went to the queue, so a thread that
        frees here fetches it (if no other process took it) without waiting first.
        """
        self.message_cache.extend(pairs)
        self._reserved -= len(pairs)
        self._active = True
        soon = time.monotonic() + self.broker.heartbeat_timeout / 1000
        self._next_maintenance = min(self._next_maintenance, soon)
        if pushed_rest:
            self._may_have_more = True
        self._wake.set()

    # --- internals ------------------------------------------------------------------

    def _hand_out(self, redis_id: str, data: bytes) -> MessageProxy:
        message = Message.decode(data)
        self.queued_message_ids.add(message.message_id)
        self._redis_ids[message.message_id] = redis_id
        eta = message.options.get("eta")
        if isinstance(eta, int | float):
            self._etas[message.message_id] = int(eta)
        return MessageProxy(message)

    def _forget(self, message: Any) -> None:
        self.queued_message_ids.discard(message.message_id)
        self._etas.pop(message.message_id, None)
        self._redis_ids.pop(message.message_id, None)
        self.broker.heartbeat.release(message.options["redis_message_id"])
        # Room for one more message: let a waiting ``next`` fetch at once.
        self._wake.set()

    def _fetch_if_useful(self) -> bool:
        """Fetch when a worker thread is free; return True when anything came.

        After a wake-up, for the free threads only (other processes' idle threads get
        the rest of a group); while the queue may hold more, up to the limit (the margin
        saves a fetch per message when the queue is deep). A wake-up that comes while
        no thread is free (messages handed over locally took them) is given back.
        """
        held = self.outstanding_message_count
        free = self.runnable - held
        if free <= 0:
            if self._waiter.take_ready():
                # A wait took an id after messages handed over locally filled every
                # thread: back to the head of the queue, for another process's idle
                # thread (or for this one's next free thread).
                self.broker.give_back_taken(self.queue_name)
                self._may_have_more = True
            return False
        if self._waiter.take_ready():
            return self._fetch(free, taken=True)
        if self._may_have_more:
            return self._fetch(self.limit - held, taken=False)
        return False

    def _fetch(self, count: int, *, taken: bool) -> bool:
        # Acks waiting for their batch ride along (acked before the fetch) whenever the
        # acks set would otherwise hold more than this consumer may: always on a refill
        # of a deep queue. After a wait they are left to their window if there is room,
        # so the acks of a group that has just finished go out together.
        count = min(count, FETCH_LIMIT)
        waiting = self.broker.acks.waiting(self.queue_name)
        room = self.outstanding_message_count + waiting + count <= self.limit
        acked = [] if taken and room else self.broker.acks.take(self.queue_name)
        try:
            pairs, more = self.broker.fetch_some(self.queue_name, count, taken=taken, acks=acked)
        except redis.RedisError:
            self.broker.acks.give_back(self.queue_name, acked)
            raise
        self._may_have_more = more
        self.message_cache.extend(pairs)
        if pairs:
            # Busy again after an idle spell: look after dead workers within a timeout.
            self._active = True
            soon = time.monotonic() + self.broker.heartbeat_timeout / 1000
            self._next_maintenance = min(self._next_maintenance, soon)
        return bool(pairs)

    def watch_soon(self) -> None:
        """Another worker started holding messages: maintenance within a heartbeat
        timeout, then every timeout while it sees a live heartbeat (a dead worker's
        messages are requeued within about two timeouts of its death)."""
        soon = time.monotonic() + self.broker.heartbeat_timeout / 1000
        self._next_maintenance = min(self._next_maintenance, soon)

    def _wait_seconds(self) -> float:
        stopping = self.broker.stopping.is_set()
        wait_ms = min(self.timeout, STOPPING_WAIT_MS if stopping else MAX_IDLE_WAIT_MS)
        if self._etas:
            wait_ms = min(wait_ms, max(0, min(self._etas.values()) - current_millis()))
        return wait_ms / 1000

    def _maintain_if_due(self) -> None:
        """Requeue dead workers' messages now and then (the canonical queue's consumer).

        Every heartbeat timeout while this worker is busy or sees another one holding
        messages (a dead one's are requeued within two timeouts); when all are idle,
        every maintenance interval, and one timeout after it gets work again. Expired
        dead letters are swept after activity only: none are added while nothing runs.
        """
        if not self._canonical or time.monotonic() < self._next_maintenance:
            return
        busy = self._active or self.outstanding_message_count > 0
        self._active = False
        requeued, others_alive, removed = self.broker.maintain(
            self.queue_name, dq_name(self.queue_name), sweep=busy
        )
        busy = busy or others_alive > 0
        interval = self.broker.heartbeat_timeout if busy else self.broker.maintenance_interval
        self._next_maintenance = time.monotonic() + interval / 1000
        if requeued:
            self.logger.info("Requeued %d messages of dead workers.", requeued)
            self._may_have_more = True
        if removed:
            self.logger.info("Removed %d expired dead letters.", removed)
