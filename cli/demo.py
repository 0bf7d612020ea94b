"""``handson demo``: the built-in sample project, end to end, in this process."""

from __future__ import annotations

import click

from cli.context import pass_settings
from cli.jobs import choices_from, job_options, run_embedded
from settings import Settings


@click.command("demo")
@click.option(
    "--latency-ms",
    type=click.IntRange(0, 60_000),
    default=200,
    show_default=True,
    help="Simulated AI latency per task, in milliseconds.",
)
@job_options
@pass_settings
def demo_command(
    settings: Settings,
    latency_ms: int,
    batch_size: int | None,
    strategy: str | None,
    max_in_flight: int | None,
) -> None:
    """Run the built-in 62-task sample project in embedded mode and sum it up.

    Uses the offline generator and Dramatiq's in-memory broker with worker threads in
    this process, whatever REDIS_URL says; the database is DATABASE_URL's.
    """
    from cli.context import open_database
    from db import projects
    from samples import load_sample

    settings = settings.replace(
        REDIS_URL=None, GENERATOR="offline", GENERATOR_LATENCY_MS=latency_ms
    )
    open_database(settings)
    spec = projects.parse_project(load_sample(), max_tasks=settings.MAX_TASKS)
    project_id = projects.create_project(spec)
    click.echo(f"Loaded the sample project as project {project_id}: {len(spec.tasks)} tasks.")
    choices = choices_from(batch_size, strategy, max_in_flight)
    raise SystemExit(run_embedded(settings, project_id, choices))
