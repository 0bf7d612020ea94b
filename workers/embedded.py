"""Worker threads inside the current process, for the embedded (no Redis) mode.

Also what an embedded process does when it boots: take the database's lock (one such
process per database) and resume the jobs a stopped one left running.
"""

from __future__ import annotations

import logging

import dramatiq
import sqlalchemy as sa

from settings import Settings
from workers import embedded_lock

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


def boot(settings: Settings, *, role: str, url: str | None = None) -> embedded_lock.Claim:
    """Make this process the embedded worker of its database, resuming abandoned jobs.

    Call it once the broker is configured and before any job is submitted: the unfinished
    work it re-dispatches waits in the in-memory queue until the worker threads start.

    Parameters:
      settings: this process's settings (``DATABASE_URL``).
      role: what this process is, shown to a second one (``handson serve``).
      url: where this process serves, if it does.

    Returns:
      The claim on the database's lock; release it when the workers stop for good.

    Raises:
      embedded_lock.EmbeddedBusyError: when another process runs the embedded worker.
    """
    claim = embedded_lock.claim(settings.DATABASE_URL, role=role, url=url)
    if claim.first_to_resume():
        resume_abandoned()
    return claim


def resume_abandoned() -> list[int]:
    """Re-dispatch the unfinished work of running jobs; return their ids.

    Only the holder of the lock runs embedded workers, so a job that is running when it
    boots was left by a process that stopped (Ctrl+C, a crash): its messages went with
    that process's memory. No stall timeout to wait for, then: every unfinished run is
    sent again now (a run counts its outcome once, so a duplicate is harmless).
    """
    from workers import dispatch

    repairs = dispatch.repair(0)
    job_ids = sorted({repair.job_id for repair in repairs})
    if job_ids:
        logger.warning(
            "Resumed %d job(s) left running by a process that stopped: %s.",
            len(job_ids),
            ", ".join(map(str, job_ids)),
        )
    return job_ids


def unheard_reason(settings: Settings) -> str | None:
    """Say why this process is not told of the progress of running jobs (None: it is).

    PostgreSQL announces every commit to every process (``LISTEN``). SQLite has no such
    thing: the in-process signal reaches only watchers in the writing process, which is
    the holder of the embedded lock, or a worker process when ``REDIS_URL`` is set.
    """
    if sa.make_url(settings.DATABASE_URL).get_backend_name() != "sqlite":
        return None
    if not settings.embedded:
        where = "worker processes"
    else:
        holder = embedded_lock.other_holder(settings.DATABASE_URL)
        if holder is None:
            return None
        where = embedded_lock.describe(holder)
    return f"this job runs in {where}, and on SQLite no process is told of another's progress"


def idle_reason(settings: Settings) -> str | None:
    """Say why nobody runs the work of running jobs now (None: some process may).

    In the embedded mode only the holder of the lock runs it: with no holder, a running
    job waits for the next embedded process to resume it.
    """
    url = settings.DATABASE_URL
    if not settings.embedded or embedded_lock.holds(url) or embedded_lock.other_holder(url):
        return None
    return (
        "no process runs its work now (the one that did stopped);"
        " `make run` or `handson serve` resumes it"
    )
