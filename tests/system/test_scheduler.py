"""Two scheduler processes: one active, the other takes over; schedules fire once."""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
import sqlalchemy as sa
from processkit import Cluster

import db
from db import lease, schedules
from db.models import Job, Schedule, utcnow
from workers.scheduler import LEASE_NAME

pytestmark = pytest.mark.slow

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float) -> T:
    """Return the first truthy ``probe()``; fail after ``timeout`` s (test-side waiting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.2)
    raise AssertionError(f"nothing came within {timeout} s")


def job_count() -> int:
    with db.session_scope() as session:
        return session.scalar(sa.select(sa.func.count(Job.id))) or 0


def make_due(schedule_id: int) -> None:
    with db.session_scope() as session:
        session.execute(
            sa.update(Schedule)
            .where(Schedule.id == schedule_id)
            .values(next_run_at=utcnow() - dt.timedelta(seconds=1))
        )


def test_one_of_two_schedulers_is_active_and_the_other_takes_over(
    cluster: Cluster, sample_project_id: int
):
    # Given two scheduler processes and a recurring job
    first, second = cluster.start_scheduler(), cluster.start_scheduler()
    holder = eventually(lambda: lease.holder_of(LEASE_NAME), timeout=20)
    active, standby = (first, second) if f":{first.pid}:" in holder else (second, first)
    schedule_id = schedules.add_schedule(
        sample_project_id, "0 3 * * *", batch_size=5, max_batch_size=50
    )

    # When its due time comes, it fires once, although both schedulers tick
    make_due(schedule_id)
    eventually(lambda: job_count() == 1, timeout=15)
    time.sleep(3)  # a few more ticks of both: still one job
    assert job_count() == 1

    # When the active scheduler is killed, the standby takes over within a minute
    cluster.kill(active)
    killed_at = time.monotonic()
    new_holder = eventually(
        lambda: (h := lease.holder_of(LEASE_NAME)) and h != holder and h, timeout=60
    )
    takeover_s = time.monotonic() - killed_at
    assert f":{standby.pid}:" in new_holder

    # And the next due time fires exactly once, from the new active scheduler
    make_due(schedule_id)
    eventually(lambda: job_count() == 2, timeout=15)
    time.sleep(3)
    assert job_count() == 2
    print(f"scheduler takeover after {takeover_s:.1f} s")

    # And SIGTERM stops the active scheduler promptly, handing the lease back
    standby.send_signal(signal.SIGTERM)
    standby.wait(timeout=10)
    assert standby.returncode == 0
    assert lease.holder_of(LEASE_NAME) is None
