"""Keep a worker's stop graceful when SIGTERM arrives twice."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)


class GracefulTermination(Middleware):
    """Ignore a repeated SIGTERM in a Dramatiq worker process.

    A Procfile platform (Heroku, honcho, systemd's default) sends SIGTERM to every
    process of the group, and the ``dramatiq`` master forwards its own SIGTERM to its
    worker processes too. Dramatiq takes a second SIGTERM as "kill now": in-flight tasks
    die and prefetched messages wait in Redis for the dead-worker timeout. The first
    SIGTERM starts the graceful stop (finish in-flight tasks, requeue the prefetched);
    the platform's SIGKILL after its grace period still ends a stop that hangs.
    """

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers belong to the main thread (an embedded worker)
        original = signal.getsignal(signal.SIGTERM)
        if not callable(original):
            return  # not Dramatiq's worker process: leave the process's own handling
        received = threading.Event()

        def once(signum: int, frame: Any) -> None:
            if received.is_set():
                logger.info("Ignoring a repeated SIGTERM: this worker is already stopping.")
                return
            received.set()
            original(signum, frame)

        signal.signal(signal.SIGTERM, once)
