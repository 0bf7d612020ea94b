"""Leases, recurring schedules and retention, on both databases."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import sqlalchemy as sa
from workerkit import make_project

import db
from db import ai_spend, control, jobs, lease, retention, schedules
from db.models import Event, Job, Schedule, utcnow


@pytest.fixture(autouse=True)
def database(database_url: str) -> str:
    db.configure(database_url)
    return database_url


def test_one_contender_holds_a_lease_until_it_expires_or_is_released():
    # Given scheduler A holding the lease
    assert lease.acquire("scheduler", "A", ttl_s=0.5) is True

    # Then B cannot take it while it is fresh, A can renew it
    assert lease.acquire("scheduler", "B", ttl_s=0.5) is False
    assert lease.acquire("scheduler", "A", ttl_s=0.5) is True
    assert lease.holder_of("scheduler") == "A"

    # When A stops renewing, B takes over once the lease has expired
    time.sleep(0.6)
    assert lease.acquire("scheduler", "B", ttl_s=30) is True
    assert lease.acquire("scheduler", "A", ttl_s=30) is False

    # And a release hands it over at once
    lease.release("scheduler", "B")
    assert lease.holder_of("scheduler") is None
    assert lease.acquire("scheduler", "A", ttl_s=30) is True


def test_two_contenders_racing_for_a_new_lease_get_one_winner():
    results: list[bool] = []
    barrier = threading.Barrier(2)

    def contend(name: str) -> None:
        barrier.wait()
        results.append(lease.acquire("race", name, ttl_s=30))

    threads = [threading.Thread(target=contend, args=(n,)) for n in ("A", "B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, True]


def _make_due(schedule_id: int) -> None:
    with db.session_scope() as session:
        session.execute(
            sa.update(Schedule)
            .where(Schedule.id == schedule_id)
            .values(next_run_at=utcnow() - dt.timedelta(minutes=5))
        )


def test_a_due_schedule_fires_once_even_with_two_schedulers():
    # Given a schedule that is due
    project_id = make_project("a", "b")
    schedule_id = schedules.add_schedule(project_id, "*/5 * * * *", batch_size=5, max_batch_size=50)
    _make_due(schedule_id)

    # When two schedulers fire due schedules at the same moment
    fired: list[schedules.Fired] = []
    barrier = threading.Barrier(2)

    def fire() -> None:
        barrier.wait()
        fired.extend(schedules.fire_due(max_tasks=100, max_batch_size=50))

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then exactly one job was started, and the schedule moved to its next due time
    assert len(fired) == 1 and fired[0].job_id is not None
    with db.session_scope() as session:
        assert session.scalar(sa.select(sa.func.count(Job.id))) == 1
    (row,) = schedules.list_schedules()
    assert row["last_job_id"] == fired[0].job_id
    assert row["next_run_at"] > utcnow() and row["next_run_at"].minute % 5 == 0

    # And firing again before the next due time starts nothing
    assert schedules.fire_due(max_tasks=100, max_batch_size=50) == []


def test_a_due_schedule_whose_job_would_pass_the_monthly_ai_budget_starts_none(caplog):
    # Given a due schedule of a 2-task project and a budget smaller than 2 default guides
    project_id = make_project("a", "b")
    schedule_id = schedules.add_schedule(project_id, "*/5 * * * *", batch_size=5, max_batch_size=50)
    _make_due(schedule_id)
    cap = ai_spend.Cap(monthly_budget=0.001, input_per_mtok=0.15, output_per_mtok=0.60)

    # When due schedules fire under that cap
    fired = schedules.fire_due(max_tasks=100, max_batch_size=50, ai_cap=cap)

    # Then no job is written, the refusal is logged, and the schedule waits for its next time
    assert fired == [schedules.Fired(schedule_id, None)]
    with db.session_scope() as session:
        assert session.scalar(sa.select(sa.func.count(Job.id))) == 0
    assert "monthly AI budget" in caplog.text
    (row,) = schedules.list_schedules()
    assert row["next_run_at"] > utcnow()


def test_bad_schedules_are_rejected_with_a_clear_message():
    project_id = make_project("a")
    with pytest.raises(schedules.ScheduleError, match="not a crontab expression"):
        schedules.add_schedule(project_id, "every day", batch_size=5, max_batch_size=50)
    with pytest.raises(schedules.ScheduleError, match="project 999 does not exist"):
        schedules.add_schedule(999, "0 3 * * *", batch_size=5, max_batch_size=50)
    with pytest.raises(schedules.ScheduleError, match="schedule 7 does not exist"):
        schedules.remove_schedule(7)
    assert schedules.list_schedules() == []


def _age(job_id: int, days: float) -> None:
    then = utcnow() - dt.timedelta(days=days)
    with db.session_scope() as session:
        session.execute(sa.update(Job).where(Job.id == job_id).values(finished_at=then))
        session.execute(sa.update(Event).where(Event.job_id == job_id).values(created_at=then))


def test_retention_deletes_old_finished_jobs_and_keeps_the_rest():
    # Given an old finished job, a recent finished job and an old running job
    project_id = make_project("a")
    old, recent, running = (
        jobs.create_job(project_id, batch_size=5, max_batch_size=50, max_tasks=10).job_id
        for _ in range(3)
    )
    for job_id in (old, recent):
        assert control.cancel_job(job_id)
    _age(old, 40)
    _age(running, 40)

    # When retention runs with a 30-day age
    counts = retention.purge(30)

    # Then the old finished job is gone with its events; the others stay
    assert counts == {"jobs": 1, "events": 2}
    with db.session_scope() as session:
        assert set(session.scalars(sa.select(Job.id))) == {recent, running}
        remaining = set(session.scalars(sa.select(Event.job_id)))
    assert remaining == {recent}
