"""Reads a task needs when its run starts, able to ride in the start's own statement.

An actor's ``prepare_run`` (see :class:`workers.middleware.progress.Progress`) is read
right after its run is marked started. As a :class:`RunRead` (SQL and a parser) it
goes into that start's statement on PostgreSQL (:func:`db.starts.start_run`): one round
trip on every task's path to its generator, instead of two.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

#: One row of a read, by column name.
Row = Mapping[str, Any]


@dataclasses.dataclass(frozen=True, eq=False)
class RunRead:
    """A read of what a task run needs: rows of ``select``, made a value by ``parse``.

    Called as ``read(session, run_id)`` it runs on its own, on the session's connection.

    Parameters:
      select: the rows, selected by a ``run_id`` bind parameter (at least one row for
        a run that exists).
      parse: makes the value from the rows, in order (none: the run is gone; it may raise).
      order_by: names of ``select``'s columns that order its rows when it rides in
        another statement (its own ``ORDER BY`` does not carry over).
    """

    select: sa.Select[Any]
    parse: Callable[[Sequence[Row]], Any]
    order_by: tuple[str, ...] = ()

    def __call__(self, session: orm.Session, run_id: int) -> Any:
        rows = session.connection().execute(self.select, {"run_id": run_id}).mappings().all()
        return self.parse(rows)
