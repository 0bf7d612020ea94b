"""Recurring jobs: cron schedules stored in the database, each due time fired once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger

import errors
import pipelines
from db import ai_spend, jobs
from db.engine import session_scope
from db.models import Project, Schedule, utcnow

logger = logging.getLogger(__name__)


class ScheduleError(errors.InvalidInputError):
    """Raised when a schedule is invalid (bad cron expression, unknown project or id)."""


def parse_cron(expression: str) -> CronTrigger:
    """Return the trigger of a five-field crontab expression, in UTC.

    Raises:
      ScheduleError: when the expression is not a valid crontab line.
    """
    try:
        return CronTrigger.from_crontab(expression, timezone=dt.UTC)
    except ValueError as error:
        raise ScheduleError(
            f"{expression!r} is not a crontab expression ('minute hour day month weekday',"
            f" e.g. '0 3 * * *'): {error}"
        ) from None


def next_due(expression: str, after: dt.datetime) -> dt.datetime:
    """Return the schedule's first due time strictly after ``after``."""
    fire = parse_cron(expression).get_next_fire_time(None, after + dt.timedelta(seconds=1))
    return fire.astimezone(dt.UTC)


def add_schedule(project_id: int, cron: str, *, batch_size: int, max_batch_size: int) -> int:
    """Store a recurring job for a project; return its id.

    Raises:
      ScheduleError: for a bad cron expression or an unknown project.
      pipelines.BatchSizeError: for a batch size out of range.
    """
    pipelines.check_batch_size(batch_size, maximum=max_batch_size)
    first = next_due(cron, utcnow())
    with session_scope() as session:
        if session.get(Project, project_id) is None:
            raise ScheduleError(f"project {project_id} does not exist")
        schedule = Schedule(
            project_id=project_id, cron=cron, batch_size=batch_size, next_run_at=first
        )
        session.add(schedule)
        session.flush()
        return schedule.id


def list_schedules() -> list[dict[str, Any]]:
    """Return every schedule as plain data, oldest first."""
    with session_scope() as session:
        return [
            {c.name: getattr(s, c.name) for c in Schedule.__table__.columns}
            for s in session.scalars(sa.select(Schedule).order_by(Schedule.id))
        ]


def remove_schedule(schedule_id: int) -> None:
    """Delete a schedule.

    Raises:
      ScheduleError: when there is no such schedule.
    """
    with session_scope() as session:
        if not session.execute(sa.delete(Schedule).where(Schedule.id == schedule_id)).rowcount:
            raise ScheduleError(f"schedule {schedule_id} does not exist")


@dataclasses.dataclass(frozen=True)
class Fired:
    """A due time that fired: its schedule and the job it started (None if it failed)."""

    schedule_id: int
    job_id: int | None
    #: What to send for the job's first units, once committed.
    dispatches: tuple[pipelines.DispatchSpec, ...] = ()


def _fire(
    schedule: Schedule,
    now: dt.datetime,
    *,
    max_tasks: int,
    max_batch: int,
    strategy: str,
    ai_cap: ai_spend.Cap | None = None,
) -> Fired | None:
    with session_scope() as session:
        # Claim this due time: of two schedulers, or a retry after a crash, one wins.
        claimed = session.execute(
            sa.update(Schedule)
            .where(Schedule.id == schedule.id, Schedule.next_run_at == schedule.next_run_at)
            .values(next_run_at=next_due(schedule.cron, now), last_run_at=schedule.next_run_at)
        ).rowcount
        if not claimed:
            return None
        try:
            with session.begin_nested():
                created = jobs.create_job(
                    schedule.project_id,
                    batch_size=schedule.batch_size,
                    max_batch_size=max_batch,
                    max_tasks=max_tasks,
                    strategy=strategy,
                    session=session,
                    ai_cap=ai_cap,
                )
        except (jobs.NotFoundError, pipelines.PlanError, ai_spend.BudgetExceededError) as error:
            logger.error("Schedule %d could not start a job: %s", schedule.id, error)
            return Fired(schedule.id, None)
        session.execute(
            sa.update(Schedule).where(Schedule.id == schedule.id).values(last_job_id=created.job_id)
        )
        return Fired(schedule.id, created.job_id, created.dispatches)


def fire_due(
    *,
    max_tasks: int,
    max_batch_size: int,
    strategy: str = pipelines.FLOW,
    ai_cap: ai_spend.Cap | None = None,
) -> list[Fired]:
    """Write a job for every schedule that is due; missed due times fire once, not each.

    The jobs are scheduled with ``strategy`` (the deployment's ``JOB_STRATEGY``).

    A due time whose job would pass the monthly AI budget (``ai_cap``) starts no job: it
    is logged, and the schedule waits for its next due time.

    Each fired job is committed with what to send first (``Fired.dispatches``): the
    caller sends it (``workers.dispatch.fire_schedules``).
    """
    now = utcnow()
    with session_scope() as session:
        due = list(session.scalars(sa.select(Schedule).where(Schedule.next_run_at <= now)))
    fired = []
    for schedule in due:
        result = _fire(
            schedule,
            now,
            max_tasks=max_tasks,
            max_batch=max_batch_size,
            strategy=strategy,
            ai_cap=ai_cap,
        )
        if result is not None:
            fired.append(result)
    return fired
