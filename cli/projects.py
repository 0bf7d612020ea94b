"""``handson import``: store a project from a JSON file."""

from __future__ import annotations

from pathlib import Path

import click

import pipelines
from cli.context import open_database, pass_settings
from settings import Settings


def load_project_file(path: Path, settings: Settings) -> int:
    """Validate and store the project in ``path``; return its id.

    Raises:
      click.BadParameter: when the file is too large or not a valid project.
    """
    from db import projects

    if path.stat().st_size > settings.MAX_CONTENT_LENGTH:
        raise click.BadParameter(
            f"the file is {path.stat().st_size} bytes; at most {settings.MAX_CONTENT_LENGTH}"
            " are allowed (MAX_CONTENT_LENGTH)",
            param_hint="FILE",
        )
    try:
        spec = projects.parse_project_json(
            path.read_bytes(),
            max_tasks=settings.MAX_TASKS,
            max_bytes=settings.MAX_CONTENT_LENGTH,
        )
    except pipelines.PlanError as error:
        where = f" ({error.field})" if error.field else ""
        raise click.BadParameter(f"{error}{where}", param_hint=f"FILE {path}") from None
    return projects.create_project(spec)


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_settings
def import_command(settings: Settings, file: Path) -> None:
    """Store the project described by FILE (JSON import format, see the README)."""
    open_database(settings)
    project_id = load_project_file(file, settings)
    click.echo(f"Imported project {project_id} from {file}.")
    click.echo(f"Start it with: handson enqueue {project_id} --wait")
