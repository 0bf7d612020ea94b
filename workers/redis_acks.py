"""Acks in batches: acks finished close together go out as one HDEL and one SREM.

Dramatiq acks each message from the worker thread that ran it. Sending each ack as its
own commands costs two billed commands per message; here an ack is queued and a
flusher thread sends what has gathered within a short window (``ack_window``) as one
HDEL and one SREM per queue, in one round trip.

Order makes an ack safe to interrupt: the message data goes first (HDEL), then the id
leaves the worker's acks set (SREM). A process that dies between the two leaves only an
id in its own acks set; the next maintenance finds the worker dead, sees that the data
is gone (nothing to requeue) and deletes the set. The other order would leave the data
behind for good, referenced by nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from workers import redis_meter

#: Pause before sending a batch again after a Redis error, in seconds.
RETRY_DELAY_S = 1.0


def ack_batch(client: redis.Redis, namespace: str, worker_id: str, batch: dict[str, list[str]]):
    """Send one batch of acks: per queue, HDEL its message data, then SREM its acks.

    Parameters:
      client(redis.Redis): The broker's client.
      namespace(str): The broker's namespace (``dramatiq``).
      worker_id(str): The broker id whose acks sets hold the ids.
      batch(dict[str, list[str]]): Redis message ids by queue name.
    """
    with client.pipeline(transaction=False) as pipe:
        for queue_name, ids in batch.items():
            pipe.hdel(f"{namespace}:{queue_name}.msgs", *ids)
            pipe.srem(f"{namespace}:__acks__.{worker_id}.{queue_name}", *ids)
        pipe.execute()


class AckBatcher:
    """Gathers acks and sends them in batches from a thread of its own.

    Parameters:
      send(Callable[[dict[str, list[str]]], None]): Sends one batch (ids by queue name).
      window_s(float): How long the first ack of a batch waits for others, in seconds.
    """

    def __init__(self, send: Callable[[dict[str, list[str]]], None], *, window_s: float) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self._send = send
        self.window_s = window_s
        self._pending: dict[str, list[str]] = {}
        self._batch_run: int | None = None  # the task run a batch's commands are metered for
        self._condition = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, queue_name: str, redis_message_id: str) -> None:
        """Queue one ack; it is sent within the window."""
        with self._condition:
            if not self._pending:
                # Commands are attributed per thread: a batch counts for its first ack's job.
                self._batch_run = redis_meter.METER.current_run()
            self._pending.setdefault(queue_name, []).append(redis_message_id)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="redis-acks", daemon=True)
                self._thread.start()
            self._condition.notify_all()

    @property
    def pending(self) -> int:
        """How many acks wait to be sent."""
        with self._condition:
            return sum(len(ids) for ids in self._pending.values())

    def waiting(self, queue_name: str) -> int:
        """How many acks of one queue wait to be sent."""
        with self._condition:
            return len(self._pending.get(queue_name, ()))

    def take(self, queue_name: str) -> list[str]:
        """Remove and return the pending acks of one queue (to send them another way)."""
        with self._condition:
            return self._pending.pop(queue_name, [])

    def give_back(self, queue_name: str, redis_message_ids: list[str]) -> None:
        """Queue acks again that could not be sent another way."""
        if redis_message_ids:
            self._give_back({queue_name: redis_message_ids})

    def flush(self) -> None:
        """Send what is pending now, from the calling thread (raises on a Redis error)."""
        with self._condition:
            batch, self._pending, run = self._pending, {}, self._batch_run
        if not batch:
            return
        previous = redis_meter.METER.current_run()
        redis_meter.METER.attribute_to(run)
        try:
            self._send(batch)
        except redis.RedisError:
            self._give_back(batch)
            raise
        finally:
            redis_meter.METER.attribute_to(previous)

    def close(self) -> None:
        """Stop the thread and send what is pending (logged if Redis cannot take it)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        try:
            self.flush()
        except redis.RedisError as error:
            pending = self.pending
            self.logger.warning("Could not send %d acks (%s); they will run again.", pending, error)

    def _give_back(self, batch: dict[str, list[str]]) -> None:
        with self._condition:
            for queue_name, ids in batch.items():
                self._pending.setdefault(queue_name, [])[:0] = ids
            self._condition.notify_all()

    def _run(self) -> None:
        with self._condition:
            while not self._closed:
                if not self._pending:
                    self._condition.wait()
                    continue
                # Let the acks finishing about now join the first one.
                deadline = time.monotonic() + self.window_s
                while not self._closed and (left := deadline - time.monotonic()) > 0:
                    self._condition.wait(left)
                if self._closed:
                    return
                self._condition.release()
                try:
                    self.flush()
                except redis.RedisError as error:
                    self.logger.warning("Could not send acks: %s; retrying.", error)
                    with self._condition:
                        self._condition.wait(RETRY_DELAY_S)
                finally:
                    self._condition.acquire()
