"""A plan's units and links as task-run columns and ``run_links`` rows (submit and retry)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import sqlalchemy as sa

from db.models import RunLink
from pipelines import Placement, Plan

#: The task-run columns that keep a run's place in its plan.
PLACE_COLUMNS = ("unit", "step", "unit_mode", "frees_slot", "waiting_on", "position", "rank")


def run_columns(place: Placement) -> dict[str, Any]:
    """Return the :data:`PLACE_COLUMNS` of ``place`` (a released run's batch comes later)."""
    values = (
        place.unit,
        place.step,
        place.mode,
        place.frees_slot,
        place.waiting_on,
        place.step,
        place.rank,
    )
    return dict(zip(PLACE_COLUMNS, values, strict=True))


def link(connection: sa.Connection, plan: Plan[Any], run_ids: Mapping[Hashable, int]) -> None:
    """Store the plan's links between the runs of ``run_ids`` (task key -> run id)."""
    rows = [{"run_id": run_ids[done], "next_run_id": run_ids[gated]} for done, gated in plan.links]
    if rows:
        connection.execute(sa.insert(RunLink), rows)
