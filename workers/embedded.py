"""Worker threads inside the current process, for the embedded (no Redis) mode."""

from __future__ import annotations

import logging

import dramatiq

logger = logging.getLogger(__name__)


class EmbeddedWorker:
    """A Dramatiq worker running in this process's threads; use as a context manager."""

    def __init__(self, broker: dramatiq.Broker, *, threads: int, timeout_ms: int = 1000) -> None:
        # timeout_ms bounds how long an idle consumer thread blocks on the in-memory
        # queue before checking for shutdown: it sets how fast stop() returns.
        self.worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=timeout_ms)

    def start(self) -> EmbeddedWorker:
        """Start the worker threads."""
        self.worker.start()
        logger.info("Started an embedded worker with %d threads.", len(self.worker.workers))
        return self

    def stop(self) -> None:
        """Stop the worker threads (in-flight messages finish first)."""
        self.worker.stop()

    def __enter__(self) -> EmbeddedWorker:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
