"""``handson cancel``, ``handson retry`` and ``handson schedule``: operate on jobs."""

from __future__ import annotations

import click

import pipelines
from cli import params
from cli.context import open_database, open_workers, pass_settings
from settings import Settings


@click.command("cancel")
@click.argument("job_id", type=params.JOB_ID)
@pass_settings
def cancel_command(settings: Settings, job_id: int) -> None:
    """Cancel JOB_ID: unfinished tasks end cancelled, later batches never start."""
    from db import jobs
    from workers import dispatch

    open_database(settings)
    try:
        changed = dispatch.cancel(job_id)
    except jobs.NotFoundError as error:
        raise click.BadParameter(str(error), param_hint="JOB_ID") from None
    click.echo(f"Cancelled job {job_id}." if changed else f"Job {job_id} had already ended.")


@click.command("retry")
@click.argument("job_id", type=params.JOB_ID)
@click.option("--wait", is_flag=True, help="Follow the job live until it ends.")
@pass_settings
def retry_command(settings: Settings, job_id: int, wait: bool) -> None:
    """Run the failed and skipped tasks of JOB_ID again, keeping the guides that succeeded."""
    from cli.jobs import follow_embedded, follow_job
    from db import control, jobs
    from workers import dispatch

    broker = open_workers(settings)
    try:
        retried = dispatch.retry(job_id)
    except jobs.NotFoundError as error:
        raise click.BadParameter(str(error), param_hint="JOB_ID") from None
    except control.NotRetryableError as error:
        raise click.ClickException(str(error)) from None
    retrying = f"Retrying {retried.tasks} task(s) of job {job_id}."
    if settings.embedded:
        raise SystemExit(follow_embedded(settings, broker, job_id, retrying))
    click.echo(retrying)
    if wait:
        raise SystemExit(follow_job(settings, job_id))


@click.group("schedule")
def schedule() -> None:
    """Recurring jobs, fired by the scheduler process (cron expressions in UTC)."""


@schedule.command("add")
@click.argument("project_id", type=params.PROJECT_ID)
@click.option("--cron", required=True, help="Crontab expression in UTC, e.g. '0 3 * * *'.")
@click.option(
    "--batch-size", type=params.NUMBER, default=None, help="Tasks per batch [default: 5]."
)
@pass_settings
def schedule_add_command(
    settings: Settings, project_id: int, cron: str, batch_size: int | None
) -> None:
    """Generate PROJECT_ID's guides on a schedule."""
    from db import schedules

    open_database(settings)
    try:
        schedule_id = schedules.add_schedule(
            project_id,
            cron,
            batch_size=settings.BATCH_SIZE if batch_size is None else batch_size,
            max_batch_size=settings.MAX_BATCH_SIZE,
        )
    except schedules.ScheduleError as error:
        raise click.BadParameter(str(error), param_hint="--cron or PROJECT_ID") from None
    except pipelines.BatchSizeError as error:
        raise click.BadParameter(str(error), param_hint="--batch-size") from None
    click.echo(f"Added schedule {schedule_id}.")


@schedule.command("list")
@pass_settings
def schedule_list_command(settings: Settings) -> None:
    """List the schedules and when each fires next."""
    from db import schedules

    open_database(settings)
    rows = schedules.list_schedules()
    if not rows:
        click.echo("No schedule.")
    for row in rows:
        click.echo(
            f"{row['id']:>4}  project {row['project_id']:<5} {row['cron']:<16}"
            f" next {row['next_run_at']:%Y-%m-%d %H:%M} UTC  last job {row['last_job_id'] or '-'}"
        )


@schedule.command("rm")
@click.argument("schedule_id", type=params.SCHEDULE_ID)
@pass_settings
def schedule_rm_command(settings: Settings, schedule_id: int) -> None:
    """Delete SCHEDULE_ID."""
    from db import schedules

    open_database(settings)
    try:
        schedules.remove_schedule(schedule_id)
    except schedules.ScheduleError as error:
        raise click.BadParameter(str(error), param_hint="SCHEDULE_ID") from None
    click.echo(f"Removed schedule {schedule_id}.")
