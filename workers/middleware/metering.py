"""Attribute Redis commands to the job whose message a worker thread handles; store them.

The counting itself happens in :mod:`workers.redis_meter` (a redis-py connection hook
installed by :class:`~workers.redis_broker.FrugalRedisBroker`). This middleware tells the
meter which task run the current thread works for (the message's first argument, for
actors with ``progress=True``), from ``before_process_message`` until the message is
acked, so the enqueues it triggers and its own ack are counted for that run's job. A
:class:`UsageFlusher` writes the counts to the database once a minute (never to Redis).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from workers.redis_meter import METER

#: Seconds between two writes of the counts to the database.
DEFAULT_FLUSH_INTERVAL_S = 60.0


class UsageFlusher:
    """Writes this process's command counts to the database every ``interval`` seconds.

    Parameters:
      process_kind(str): What this process is (``worker``, ``web``, ``cli``, ``scheduler``).
      interval(float): Seconds between two writes; an interval with no command writes nothing.
    """

    def __init__(self, process_kind: str, *, interval: float = DEFAULT_FLUSH_INTERVAL_S) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.process_kind = process_kind
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> UsageFlusher:
        """Start writing in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="usage-flusher", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def flush(self) -> int:
        """Write the counts so far; return the rows written (kept for later on error)."""
        from db import usage

        counts = METER.take()
        try:
            return usage.record(self.process_kind, counts)
        except Exception:
            # Metering must never break the work it measures: keep the counts, retry later.
            METER.give_back(counts)
            self.logger.warning("Could not store Redis usage; will retry.", exc_info=True)
            return 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()


class Metering(Middleware):
    """Attributes Redis commands to jobs in worker threads and stores them once a minute.

    Parameters:
      process_kind(str): Stored with the counts (default ``worker``).
      flush_interval(float): Seconds between two database writes.
    """

    def __init__(
        self, *, process_kind: str = "worker", flush_interval: float = DEFAULT_FLUSH_INTERVAL_S
    ) -> None:
        self.flusher = UsageFlusher(process_kind, interval=flush_interval)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.flusher.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.flusher.stop()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        actor = broker.get_actor(message.actor_name)
        METER.attribute_to(message.args[0] if actor.options.get("progress") else None)

    def after_ack(self, broker: dramatiq.Broker, message: Any) -> None:
        METER.attribute_to(None)

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        METER.attribute_to(None)
