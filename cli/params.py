"""Argument types of the commands: ids and counts in ASCII digits, within the database's range.

They apply the checks of :mod:`db.inputs` (the same as the API's and the forms'), so a
bad argument is a usage error (exit 2) that says what to fix, never a database error.
"""

from __future__ import annotations

from typing import Any

import click

from db import inputs


class IdType(click.ParamType):
    """The id of a ``noun`` (``project``, ``job``...): an id no row can have does not exist."""

    name = "id"

    def __init__(self, noun: str) -> None:
        self.noun = noun

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return inputs.parse_int(str(value), field=f"{self.noun} id", minimum=1)
        except inputs.OutOfRangeError:
            self.fail(f"{self.noun} {str(value).strip()[:30]} does not exist", param, ctx)
        except inputs.InputError:
            self.fail(f"{value!r} is not a {self.noun} id (a number, in digits 0-9)", param, ctx)


class NumberType(click.ParamType):
    """A whole number written in digits 0-9, within the range of an integer column."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:  # click prefixes the parameter: "Invalid value for '--batch-size': it must..."
            return inputs.parse_int(str(value), field="it")
        except inputs.InputError as error:
            self.fail(str(error), param, ctx)


PROJECT_ID = IdType("project")
JOB_ID = IdType("job")
SCHEDULE_ID = IdType("schedule")
NUMBER = NumberType()
