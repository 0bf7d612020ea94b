"""The ``handson`` command line: thin commands over ``db``, ``pipelines`` and ``workers``."""

from __future__ import annotations

import click

from cli import budget, control, db_commands, demo, export, jobs, logs, projects, serve
from cli.context import ProjectGroup
from settings import SettingsError, from_env

#: Exit code of a command that went well (click uses 2 for usage errors).
RET_OK = 0

HELP_EPILOG = """\b
Examples:
  handson demo                            run the 62-task sample, embedded
  handson --verbose demo                  the same, with INFO log lines
  handson import project.json             store a project from a JSON file
  handson enqueue 1 --batch-size 5 --wait start a job and follow it live
  handson status 7 --follow               show a job, then follow it
  handson retry 7 --wait                  rerun the failed tasks of job 7
  handson schedule add 1 --cron '0 3 * * *'  generate project 1 nightly
  handson budget                          Redis commands, PostgreSQL connections
  handson export 1 -o guides/            project 1's guides as Markdown files
  handson db upgrade                      apply database migrations
"""


@click.group(cls=ProjectGroup, epilog=HELP_EPILOG)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Log at LOG_LEVEL (INFO), not only warnings (`handson serve` always does).",
)
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Generate AI-written hands-on guides for every task of a project."""
    if ctx.obj is None:
        try:
            ctx.obj = from_env()
        except SettingsError as error:
            raise click.UsageError(str(error)) from None
    # A server's log is its output; a command's own output is the progress and summary.
    logs.configure(ctx.obj.LOG_LEVEL, verbose=verbose or ctx.invoked_subcommand == "serve")


for command in (
    db_commands.db,
    projects.import_command,
    jobs.enqueue_command,
    jobs.status_command,
    control.cancel_command,
    control.retry_command,
    control.schedule,
    budget.budget_command,
    demo.demo_command,
    export.export_command,
    serve.serve_command,
):
    cli.add_command(command)


def main() -> int:
    """Run the command line; return its exit code."""
    return cli.main(prog_name="handson", standalone_mode=True) or RET_OK
