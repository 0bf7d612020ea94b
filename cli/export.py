"""``handson export``: a project's guides as Markdown files, one per task, and an index."""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
import unicodedata
from pathlib import Path

import click

from cli import params
from cli.context import open_database, pass_settings
from db.exports import ExportedProject, ExportedTask
from settings import Settings

#: Name of the index file that links every guide.
INDEX = "README.md"


def slug(text: str, *, limit: int = 60) -> str:
    """Return ``text`` as a file-name part: ASCII letters, digits and dashes."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:limit].strip("-")


def file_name(number: int, task: ExportedTask, width: int) -> str:
    """Return ``07-write-the-api.md``: its number in task order, then its title."""
    return f"{number:0{width}d}-{slug(task.title) or 'task'}.md"


def guide_text(task: ExportedTask) -> str:
    """Return the guide as written, under its task's title unless it starts with a heading."""
    text = (task.markdown or "").strip()
    if not text.startswith("#"):
        text = f"# {_one_line(task.title)}\n\n{text}"
    return text + "\n"


def index_text(project: ExportedProject, names: dict[int, str]) -> str:
    """Return the README: the project's name, then every task linking its guide, in order.

    ``names`` maps a task's number (1-based, in order) to its guide's file name.
    """
    now = dt.datetime.now(dt.UTC)
    lines = [
        f"# {_one_line(project.name)}",
        "",
        f"Hands-on guides, one per task, in task order (exported {now:%Y-%m-%d %H:%M} UTC).",
        "",
    ]
    for number, task in enumerate(project.tasks, 1):
        title = _link_text(task.title)
        if number in names:
            lines.append(f"{number}. [{title}]({names[number]})")
        else:
            lines.append(f"{number}. {title}: _not generated yet_")
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(untitled)"


def _link_text(text: str) -> str:
    """Escape what would end or change a link's text (``]``, ``*``, ``<``...)."""
    return re.sub(r"([\\`*_\[\]<>!#])", r"\\\1", _one_line(text))


def _writable(directory: Path) -> None:
    """Create ``directory`` if need be and check that files can be written in it.

    Raises:
      click.BadParameter: when it cannot be created or written to.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise click.BadParameter(
            f"cannot write in {directory}: {reason}; choose another directory",
            param_hint="-o/--output",
        ) from None


def _write(path: Path, text: str) -> None:
    """Write a file whole or not at all (a temporary file renamed over it)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".export-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@click.command("export")
@click.argument("project_id", type=params.PROJECT_ID)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory to write to (created if need be) [default: ./<project name>-guides].",
)
@pass_settings
def export_command(settings: Settings, project_id: int, output: Path | None) -> None:
    """Write PROJECT_ID's guides as Markdown files: one per task, and a README.md index.

    A file is named after its task's position and title (``07-write-the-api.md``) and
    holds the guide as it was generated; the index links them in task order and lists
    the tasks without a guide yet. Files of an earlier export are replaced.
    """
    from db import exports

    open_database(settings)
    project = exports.read_project(project_id)
    if project is None:
        raise click.BadParameter(f"project {project_id} does not exist", param_hint="PROJECT_ID")
    directory = output or Path(f"{slug(project.name) or 'project'}-guides")
    _writable(directory)
    width = max(2, len(str(len(project.tasks))))
    names = {}
    for number, task in enumerate(project.tasks, 1):
        if task.markdown is not None:
            names[number] = file_name(number, task, width)
            _write(directory / names[number], guide_text(task))
    _write(directory / INDEX, index_text(project, names))
    missing = len(project.tasks) - len(names)
    click.echo(
        f"Wrote {len(names)} guide(s) and {INDEX} to {directory}"
        + (f" ({missing} task(s) have no guide yet)." if missing else ".")
    )
