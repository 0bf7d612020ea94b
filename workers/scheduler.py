"""The scheduler process: reconciler, recurring jobs and retention, one active at a time.

``python -m workers.scheduler`` (the Procfile's ``scheduler``) runs a
``BlockingScheduler``. Running two by mistake is safe: every tick each contends for a
database lease, and only its holder works; when the holder dies its lease expires and
another takes over (within ``SCHEDULER_LEASE_S`` + ``SCHEDULER_TICK_S``). The web app
runs the same jobs in a background scheduler in the embedded mode, where no separate
process shares its in-memory broker.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import uuid
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from db import ai_spend, limit_waits
from settings import Settings
from workers import dispatch
from workers.middleware.ai_limits import limits_of
from workers.middleware.metering import UsageFlusher

logger = logging.getLogger(__name__)

#: Name of the lease that makes one scheduler the active one.
LEASE_NAME = "scheduler"

# APScheduler logs two INFO lines per run of every job: every 10 s, they drown ours.
logging.getLogger("apscheduler").setLevel(logging.WARNING)


class Duties:
    """What the active scheduler does; every method is one scheduled job."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.active = False

    def tick(self) -> None:
        """Take or renew the lease; when active, start the jobs of due schedules."""
        from db import lease

        was_active = self.active
        self.active = lease.acquire(LEASE_NAME, self.holder, ttl_s=self.settings.SCHEDULER_LEASE_S)
        if self.active != was_active:
            logger.info("Scheduler %s is %s.", self.holder, "active" if self.active else "idle")
        if not self.active:
            return
        dispatch.fire_schedules(
            max_tasks=self.settings.MAX_TASKS,
            max_batch_size=self.settings.MAX_BATCH_SIZE,
            strategy=self.settings.JOB_STRATEGY,
            ai_cap=ai_spend.cap_of(self.settings),
        )

    def reconcile(self) -> None:
        """Re-dispatch stalled work, wake AI waiters no holder woke (database only, unless
        there is something to repair or wake)."""
        if self.active:
            dispatch.repair(self.settings.stall_timeout_s)
            dispatch.wake(limit_waits.wake_lost(limits_of(self.settings)))

    def purge(self) -> None:
        """Delete old events and finished jobs."""
        if self.active:
            from db import retention

            logger.info("Retention: %s", retention.purge(self.settings.RETENTION_DAYS))

    def resign(self) -> None:
        """Give the lease up so another scheduler takes over at once."""
        from db import lease

        if self.active:
            lease.release(LEASE_NAME, self.holder)
            self.active = False


def add_duties(scheduler: BaseScheduler, duties: Duties) -> None:
    """Add one job per duty to ``scheduler`` (one declarative ``add_job`` each)."""
    settings = duties.settings
    common: dict[str, Any] = {"max_instances": 1, "coalesce": True}
    scheduler.add_job(
        duties.tick, "interval", seconds=settings.SCHEDULER_TICK_S, id="tick", **common
    )
    scheduler.add_job(
        duties.reconcile,
        "interval",
        seconds=settings.RECONCILE_INTERVAL_S,
        id="reconcile",
        **common,
    )
    scheduler.add_job(duties.purge, "interval", hours=1, id="retention", **common)


def start_background(settings: Settings) -> BackgroundScheduler:
    """Run the duties on a background thread of this process (embedded mode)."""
    duties = Duties(settings)
    scheduler = BackgroundScheduler(timezone="UTC")
    add_duties(scheduler, duties)
    scheduler.start()
    scheduler.add_job(duties.tick)  # now, not one interval from now
    return scheduler


def main(settings: Settings | None = None) -> None:
    """Run the scheduler process until SIGTERM or SIGINT."""
    from workers import broker

    broker.configure(settings)  # None: the environment's settings and broker
    settings = broker.current_settings()
    logging.basicConfig(
        level=settings.LOG_LEVEL, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    duties = Duties(settings)
    scheduler = BlockingScheduler(timezone="UTC")
    add_duties(scheduler, duties)
    scheduler.add_job(duties.tick)  # contend for the lease at once

    def stop(signum: int, _frame: Any) -> None:
        logger.info("Scheduler stopping on signal %d.", signum)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("Scheduler %s started.", duties.holder)
    flusher = UsageFlusher("scheduler").start() if settings.REDIS_URL else None
    try:
        scheduler.start()
    finally:
        duties.resign()
        if flusher is not None:
            flusher.stop()
        logger.info("Scheduler %s stopped.", duties.holder)


if __name__ == "__main__":
    main()
