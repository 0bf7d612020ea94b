"""``handson enqueue`` and ``handson status``: start a job, show it, follow it live."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

import pipelines
from cli import params, render
from cli.context import open_database, open_workers, pass_settings
from settings import Settings

#: Exit code of a job that did not end ``succeeded``.
RET_JOB_NOT_SUCCEEDED = 1

EMBEDDED_NOTE = (
    "Embedded mode (no REDIS_URL): there is no broker shared between processes, so this"
    " command runs the job's workers in its own process until the job ends."
)


def follow_job(settings: Settings, job_id: int, job: dict[str, Any] | None = None) -> int:
    """Render the job's progress from pushed events until it ends; return an exit code.

    ``job`` is its snapshot when the caller took one (before any worker could move it).
    When this process would not be told of the job's progress (SQLite, another process
    runs it), or nobody runs it (embedded, no process holds the lock), it says so and
    shows the job as it stands.
    """
    from db import jobs, listen
    from workers import embedded

    job = job or jobs.snapshot(job_id)
    reason = None
    if job["finished_at"] is None:
        reason = embedded.unheard_reason(settings) or embedded.idle_reason(settings)
    if reason:
        click.echo(f"Cannot follow job {job_id} live: {reason}. As it stands now:", err=True)
    elif job["finished_at"] is None:
        render.follow(job, listen.watch(job_id, after_seq=job["event_seq"]))
        job = jobs.snapshot(job_id)
    click.echo(render.summary(job))
    return 0 if job["status"] == "succeeded" else RET_JOB_NOT_SUCCEEDED


@dataclasses.dataclass(frozen=True)
class JobChoices:
    """How a job should run, as given on the command line (None: the default)."""

    batch_size: int | None = None
    strategy: str | None = None
    max_in_flight: int | None = None


def job_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--batch-size``, ``--strategy`` and ``--max-in-flight``, passed as ``choices``."""

    for option in reversed(
        [
            click.option(
                "--batch-size",
                type=params.NUMBER,
                default=None,
                help="Tasks per batch, and by default tasks in flight [default: BATCH_SIZE, 5].",
            ),
            click.option(
                "--strategy",
                type=click.Choice(pipelines.STRATEGIES),
                default=None,
                help="flow: each task as soon as its dependencies are done;"
                " batches: each batch waits for the one before [default: JOB_STRATEGY, flow].",
            ),
            click.option(
                "--max-in-flight",
                type=params.NUMBER,
                default=None,
                help="Most tasks (a pipeline counts one) queued or running at once"
                " [default: the batch size].",
            ),
        ]
    ):
        command = option(command)
    return command


def choices_from(
    batch_size: int | None, strategy: str | None, max_in_flight: int | None
) -> JobChoices:
    """Return the :class:`JobChoices` of the options :func:`job_options` adds."""
    return JobChoices(batch_size, strategy, max_in_flight)


#: Which option to blame for each planning error about an option.
_OPTION_OF_FIELD = {"batch_size": "--batch-size", "max_in_flight": "--max-in-flight"}


def submit(settings: Settings, project_id: int, choices: JobChoices) -> int:
    """Submit a job, turning bad input into usage errors; return the job id."""
    from db import ai_spend, jobs
    from workers import dispatch

    try:
        return dispatch.submit(
            project_id,
            batch_size=settings.BATCH_SIZE if choices.batch_size is None else choices.batch_size,
            max_batch_size=settings.MAX_BATCH_SIZE,
            max_tasks=settings.MAX_TASKS,
            strategy=choices.strategy or settings.JOB_STRATEGY,
            max_in_flight=choices.max_in_flight,
            ai_cap=ai_spend.cap_of(settings),
        )
    except jobs.NotFoundError as error:
        raise click.BadParameter(str(error), param_hint="PROJECT_ID") from None
    except pipelines.BatchSizeError as error:
        raise click.BadParameter(str(error), param_hint="--batch-size") from None
    except pipelines.PlanError as error:
        if error.field in _OPTION_OF_FIELD:
            raise click.BadParameter(str(error), param_hint=_OPTION_OF_FIELD[error.field]) from None
        raise click.ClickException(f"the project cannot be planned: {error}") from None


def run_embedded(settings: Settings, project_id: int, choices: JobChoices) -> int:
    """Run a job to its end on worker threads of this process; return an exit code."""
    broker = open_workers(settings)
    # Submitting first turns bad input into an error before any thread starts; the
    # first batch waits in the in-memory queue meanwhile.
    job_id = submit(settings, project_id, choices)
    return follow_embedded(settings, broker, job_id, f"Started job {job_id}.")


def follow_embedded(settings: Settings, broker: Any, job_id: int, started: str) -> int:
    """Run the job's queued work on threads of this process, following it to its end."""
    from db import jobs
    from workers.embedded import EmbeddedWorker

    click.echo(EMBEDDED_NOTE)
    # Taken before the threads start: a short job could otherwise end before it is read,
    # and its progress would never be drawn.
    job = jobs.snapshot(job_id)
    with EmbeddedWorker(broker, threads=settings.EMBEDDED_WORKER_THREADS):
        click.echo(started)
        return follow_job(settings, job_id, job)


@click.command("enqueue")
@click.argument("project_id", type=params.PROJECT_ID)
@job_options
@click.option("--wait", is_flag=True, help="Follow the job's progress live until it ends.")
@pass_settings
def enqueue_command(
    settings: Settings,
    project_id: int,
    batch_size: int | None,
    strategy: str | None,
    max_in_flight: int | None,
    wait: bool,
) -> None:
    """Start a generation job for PROJECT_ID: one hands-on guide per task.

    With --wait, progress is drawn from events pushed as they happen, and the exit code
    is 0 when the job succeeded, 1 otherwise. In the embedded mode the job always runs
    in this process until it ends.
    """
    choices = choices_from(batch_size, strategy, max_in_flight)
    if settings.embedded:
        raise SystemExit(run_embedded(settings, project_id, choices))
    open_workers(settings)
    job_id = submit(settings, project_id, choices)
    click.echo(f"Enqueued job {job_id}.")
    if wait:
        raise SystemExit(follow_job(settings, job_id))


@click.command("status")
@click.argument("job_id", type=params.JOB_ID)
@click.option("--follow", is_flag=True, help="Follow the job live until it ends.")
@pass_settings
def status_command(settings: Settings, job_id: int, follow: bool) -> None:
    """Show JOB_ID's status, counters and failed tasks (exit 1 when it ended badly)."""
    from db import jobs

    open_database(settings)
    try:
        job = jobs.snapshot(job_id)
    except jobs.NotFoundError as error:
        raise click.BadParameter(str(error), param_hint="JOB_ID") from None
    if follow:
        raise SystemExit(follow_job(settings, job_id))
    click.echo(render.summary(job))
    if job["status"] == "running":
        click.echo(f"  in flight: {job['in_flight']} of at most {job['max_in_flight']}")
        for line in render.flow_lines(job):
            click.echo(line)
    for batch in job["batches"]:
        click.echo(
            f"  batch {batch['index']:>3} {batch['mode']:<8} {batch['status']:<9}"
            f" {batch['done']}/{batch['total']}"
        )
    if job["status"] in {"failed", "partial", "cancelled"}:
        raise SystemExit(RET_JOB_NOT_SUCCEEDED)
