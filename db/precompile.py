"""Compile the per-task statements before the first task needs them."""

from __future__ import annotations

import collections
from typing import Any

from db import batch_writes, counters, events, guides, handover, release, starts
from db.engine import get_engine
from db.models import RunStatus, utcnow


def compile_ahead() -> None:
    """Run the per-task statements once on ids that do not exist, then roll back.

    Their SQL is compiled and cached before the first task needs it: a worker calls this
    at boot, so the first batch after a deploy starts as fast as the others.
    """
    # Exactly each statement's parameters: in an UPDATE, an extra key naming a column
    # would become one more SET clause (another statement, cached apart).
    now = utcnow()
    nothing_counted = {"row_id": -1, **counters.increments(collections.Counter())}
    job_counts = {
        **nothing_counted,
        "add_completed_batches": 0,
        "add_in_flight": 0,
        "add_batches": 0,
        "next_batch_index": None,
        "ready_left": None,
        **counters.spend_increments(None),
    }
    run = {"run_id": -1, "now": now}
    finishing = {**run, "new_status": RunStatus.FAILED, "new_error": None}
    statements = [
        (starts.START_RUN, run),
        (handover.FINISH_RUN, finishing),
        (counters.COUNT_IN_BATCH, {**nothing_counted, "now": now}),
        (counters.COUNT_IN_JOB, {**job_counts, "new_events": 0}),
        (release.UNLINK, {"ended": [-1]}),
        (release.FREE_SLOTS, release.free_slots_parameters(-1, 0, now)),
        (release.READY_RUNS, {"job_id": -1, "limit": 1}),
        (batch_writes.QUEUE_RUN, {"run_id": -1, "into_batch": -1, "at": 0, "now": now}),
        (events.RESERVE_SEQ, {"job_id": -1, "count": 0}),
        (guides.REQUEST_OF_RUN, {"run_id": -1}),
    ]
    engine = get_engine()
    guide = guides.guide_parameters(-1, "", "")
    statements.append((guides.upsert_guide(engine.dialect.name), guide))
    if engine.dialect.name == "postgresql":
        statements.append((starts.START_AND_ANNOUNCE, run))
        statements.append((starts.start_and_read(guides.REQUEST), run))  # the actor's start
        counted = {**nothing_counted, "now": now, "ended": [-1]}
        statements.append((handover.counted_unlinked_freed(False), counted))
        freeing = release.free_slots_parameters(-1, 1, now)
        statements.append((handover.counted_unlinked_freed(True), {**counted, **freeing}))
        ending = {**finishing, **counters.increments(collections.Counter())}
        ending |= {"freed": 1, "month_start": now}
        statements.append((handover.ended_counted_unlinked_freed(), ending))
        arrays = ("indexes", "modes", "totals", "run_ids", "into_indexes", "positions")
        writing = {"of_job": -1, "now": now, **{key: [] for key in arrays}}
        statements.append((batch_writes.QUEUED_IN_NEW_BATCHES, writing))
        for count in (1, 2, 3):  # the events of a plain outcome; of one completing a batch
            described: dict[str, Any] = {}
            for i in range(count):
                described |= {f"type_{i}": "", f"payload_{i}": {}}
            recorded = {**job_counts, "new_events": count, "now": now, **described}
            statements.append((counters.counted_and_recorded(count), recorded))
    with engine.connect() as connection, connection.begin() as transaction:
        for statement, parameters in statements:
            connection.execute(statement, parameters)
        transaction.rollback()
