"""The consumer of :class:`~workers.redis_broker.FrugalRedisBroker`: fetch on wake-up only.

Dramatiq's worker loop calls ``next(consumer)`` and, between calls, stops on shutdown
and re-enqueues due delayed messages. Stock Dramatiq answers each call with a fetch
script (back-off up to one second when idle). This consumer fetches only when the list
may hold something: after a fetch that filled its request, or after its
:class:`~workers.redis_waiter.ListWaiter` saw the list non-empty. Otherwise it waits on
a thread event, which costs no command, for at most the worker timeout (so shutdown
stays prompt) and never past the due time of a delayed message it holds.
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
        self._wake = threading.Event()
        self._waiter = ListWaiter(
            broker.client,
            broker.key(queue_name),
            timeout=broker.wait_timeout / 1000,
            safety_interval=broker.safety_interval,
            on_ready=self._wake.set,
        )
        self._canonical = not queue_name.endswith(".DQ")
        self._next_maintenance = time.monotonic() + broker.heartbeat_timeout / 1000 + 1

    @property
    def outstanding_message_count(self) -> int:
        return len(self.queued_message_ids) + len(self.message_cache)

    def ack(self, message: MessageProxy) -> None:
        """Acknowledge a processed message: two plain commands, no script."""
        self._settle(self.broker.do_ack, message)

    def nack(self, message: MessageProxy) -> None:
        """Move a failed message to the dead-letter queue (Dramatiq's own script)."""
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
                if self._should_fetch() and self._fetch():
                    continue
                self._maintain_if_due()
                if not self._may_have_more:
                    self._waiter.arm()
                self._wake.wait(self._wait_seconds())
                return None

    def close(self) -> None:
        """Stop waiting, and give back messages fetched but never handed out."""
        self._waiter.close()
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

    def _should_fetch(self) -> bool:
        # A wake-up is taken only when there is room: while full, it stays pending (and
        # the waiter stays disarmed) until an ack makes room.
        if self.outstanding_message_count >= self.prefetch:
            return False
        return self._may_have_more or self._waiter.take_ready()

    def _fetch(self) -> bool:
        """Fetch up to the free prefetch room; return True when anything came."""
        count = min(self.prefetch - self.outstanding_message_count, FETCH_LIMIT)
        pairs = self.broker.fetch(self.queue_name, count)
        self._may_have_more = len(pairs) == count
        self.message_cache.extend(pairs)
        return bool(pairs)

    def _wait_seconds(self) -> float:
        stopping = self.broker.stopping.is_set()
        wait_ms = min(self.timeout, STOPPING_WAIT_MS if stopping else MAX_IDLE_WAIT_MS)
        if self._etas:
            wait_ms = min(wait_ms, max(0, min(self._etas.values()) - current_millis()))
        return wait_ms / 1000

    def _maintain_if_due(self) -> None:
        """Requeue dead workers' messages now and then (the canonical queue's consumer)."""
        if not self._canonical or time.monotonic() < self._next_maintenance:
            return
        self._next_maintenance = time.monotonic() + self.broker.maintenance_interval / 1000
        requeued = self.broker.maintain(self.queue_name, dq_name(self.queue_name))
        if requeued:
            self.logger.info("Requeued %d messages of dead workers.", requeued)
            self._may_have_more = True
