"""The project form: tasks typed one per line, turned into the import format.

Syntax, one task per line (blank lines are ignored; tasks are numbered 1, 2, 3... in
the order they appear, and those numbers are the task keys)::

    Set up the repository
    Write the data model            (after 1)
    Write the API                   (after 1, 2)
    Deploy <- 3

``(after 2, 3)`` at the end of a line, or ``<- 2, 3``, says that the task depends on
tasks 2 and 3. A description may follow the title after `` :: ``::

    Write the API :: REST, JSON, with tests   (after 2)
"""

from __future__ import annotations

import re
from typing import Any

import errors
from db import inputs

#: ``(after 2, 3)`` at the end of a line.
_AFTER = re.compile(r"\(\s*after\s+([^()]*)\)\s*$", re.IGNORECASE)
#: ``<- 2, 3`` at the end of a line.
_ARROW = re.compile(r"<-\s*([^<]*)$")
#: Separates a title from its optional description.
DESCRIPTION_SEPARATOR = " :: "


class TaskLineError(errors.InvalidInputError):
    """Raised when a task line cannot be read; the message names the line."""

    def __init__(self, message: str, *, line: int) -> None:
        super().__init__(message)
        self.field = f"tasks[{line - 1}]"


def _dependencies(raw: str, line: int) -> list[str]:
    keys = [part.strip().lstrip("#") for part in raw.split(",") if part.strip()]
    if not keys:
        raise TaskLineError(f"line {line}: name at least one task number after 'after'", line=line)
    numbers = []
    for key in keys:
        try:  # digits 0-9 only: "²".isdigit() is true, but it is no task number
            numbers.append(str(inputs.parse_int(key, field="a task number")))
        except inputs.InputError:
            raise TaskLineError(
                f"line {line}: dependencies are task numbers, like (after 2, 3); got {key!r}",
                line=line,
            ) from None
    return numbers


def parse_task_line(text: str, line: int) -> dict[str, Any]:
    """Return one task in the import format from a form line numbered ``line`` (1-based).

    Raises:
      TaskLineError: when its dependency list is not a list of task numbers.
    """
    depends_on: list[str] = []
    for pattern in (_AFTER, _ARROW):
        match = pattern.search(text)
        if match:
            depends_on = _dependencies(match.group(1), line)
            text = text[: match.start()]
            break
    title, _, description = text.partition(DESCRIPTION_SEPARATOR)
    return {
        "key": str(line),
        "title": title.strip(),
        "description": description.strip(),
        "depends_on": depends_on,
    }


def parse_tasks_text(text: str) -> list[dict[str, Any]]:
    """Return the tasks typed in the form (one per non-blank line) in the import format.

    Raises:
      TaskLineError: for a line whose dependency list is malformed.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [parse_task_line(line, number) for number, line in enumerate(lines, start=1)]


def project_document(name: str, description: str, tasks_text: str) -> dict[str, Any]:
    """Return the import document for what was typed in the project form."""
    return {"name": name, "description": description, "tasks": parse_tasks_text(tasks_text)}
