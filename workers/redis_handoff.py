"""Local hand-off: messages a finishing worker thread sends go to its own idle threads.

A finishing task often sends the next work at once: the ``Progress`` middleware's
follow-up releases the tasks its outcome made ready, and Dramatiq's ``Pipelines``
middleware enqueues a pipeline's next step. Pushed to the queue, a lone message costs
about eight billed commands (HSET, RPUSH, the waiter's BLMOVE, the fetch script's calls)
and a round trip per step before it runs, usually in the very process that sent it.

Instead, when a worker thread sends from its after-hooks to a queue this process
consumes, the broker claims up to as many of the messages as the consumer has free
threads (the finishing thread counts as free: it is about to ack): it writes their data
(HSET, as enqueue does) and adds their ids to this worker's acks set (SADD) in the same
round trip, then puts them in the consumer's local cache and wakes it. In Redis they are
exactly as if this worker had fetched them: its heartbeat covers them, a crash gets
them requeued by maintenance, a shutdown requeues them with the rest of the cache. The
rest of a group is pushed as usual, so it still spreads over other processes' idle
threads. Delayed messages (delay queues) are never claimed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.middleware import Middleware

if TYPE_CHECKING:
    from workers.redis_consumer import FrugalConsumer


class LocalHandoff:
    """The consumers of this process that may take its worker threads' sends directly.

    Parameters:
      enabled(bool): Claim messages locally at all (otherwise every send is pushed).
    """

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        #: Held while claims are counted, written and delivered, and while a consumer
        #: closes: a claimed message is either in a live consumer's cache or requeued.
        self.lock = threading.Lock()
        self._consumers: dict[str, FrugalConsumer] = {}
        self._thread = threading.local()
        self._delivered: set[str] = set()  # queues whose claims were delivered (under lock)

    def register(self, consumer: FrugalConsumer) -> None:
        """Let ``consumer`` (a canonical queue's) take claimed messages of its queue."""
        with self.lock:
            self._consumers[consumer.queue_name] = consumer

    def unregister(self, consumer: FrugalConsumer) -> None:
        """Stop handing messages to ``consumer`` (it is closing); call with :attr:`lock` held."""
        if self._consumers.get(consumer.queue_name) is consumer:
            del self._consumers[consumer.queue_name]

    def consumers(self) -> list[FrugalConsumer]:
        """Return this process's canonical-queue consumers."""
        with self.lock:
            return list(self._consumers.values())

    def finishing(self, queue_name: str) -> None:
        """Note that this thread has run a message of ``queue_name`` and is in its after-hooks."""
        self._thread.queue_name = queue_name

    def finished(self) -> None:
        """Note that this thread has settled (acked or nacked) its message."""
        self._thread.queue_name = None

    @contextlib.contextmanager
    def claiming(self, counts: dict[str, int]) -> Iterator[dict[str, int]]:
        """Decide how many of the messages about to be sent, by queue, are claimed locally.

        Yields the counts to claim (queues absent: push all). Nothing is claimed unless
        this thread is a worker thread in its after-hooks. While claims are in flight the
        lock is held, so two threads never claim the same free thread and a consumer
        never closes between a claim's write and its delivery.
        """
        finishing = getattr(self._thread, "queue_name", None)
        if not self.enabled or finishing is None or not self._consumers:
            yield {}
            return
        with self.lock:
            claims = {}
            for queue_name, count in counts.items():
                consumer = self._consumers.get(queue_name)
                if consumer is not None:
                    claimed = consumer.reserve_handoff(count, finishing=finishing == queue_name)
                    if claimed:
                        claims[queue_name] = claimed
            delivered: set[str] = set()
            self._delivered = delivered
            try:
                yield claims
            finally:
                for queue_name, claimed in claims.items():
                    if queue_name not in delivered:
                        self._consumers[queue_name].cancel_handoff(claimed)

    def deliver(
        self, queue_name: str, pairs: list[tuple[str, bytes]], *, pushed_rest: bool
    ) -> None:
        """Give claimed (redis id, data) pairs to the queue's consumer; call within
        :meth:`claiming`."""
        self._consumers[queue_name].take_handed(pairs, pushed_rest=pushed_rest)
        self._delivered.add(queue_name)


class HandoffMiddleware(Middleware):
    """Marks a worker thread as finishing its message while the after-hooks run.

    Sits after ``Pipelines`` and ``Progress`` in the broker's middleware list, so its
    after-hooks run before theirs (Dramatiq runs after-hooks in reverse order); the mark
    is cleared when the consumer acks or nacks the message.
    """

    def __init__(self, handoff: LocalHandoff) -> None:
        self.handoff = handoff

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        self.handoff.finishing(message.queue_name)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.handoff.finishing(message.queue_name)
