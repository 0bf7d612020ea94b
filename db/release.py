"""The engine's one rule: a unit goes out when nothing it is linked to is still open.

A job's plan (``pipelines.plan``) gives units (a single task, a group of tasks, or a
pipeline) and links (``run_links``: when a run ends, the unit starting with the linked
run waits for one less). An outcome that ends runs :func:`unlink`\\ s them and frees
their slots (:data:`FREE_SLOTS`); then :func:`release_locked` takes the ready units, the
longest chain of tasks left first (``task_runs.rank``), then in plan order, while the
job has free slots (``max_in_flight``), and writes each release
as a batch: the ready single tasks as one ``group``, each pipeline as its own. Both
strategies run here: ``batches`` is the plan whose every unit is linked to all runs of
the unit before.

Freeing slots locks the job's row first, so two outcomes of one job release one
after the other: a unit is released once and ``in_flight`` never passes
``max_in_flight``. Its cost is bounded by the units it releases, not by the job's size.
The job's ``ready_waiting`` flag, read under that lock, says whether a release left
ready units behind for want of a slot: an outcome that makes nothing ready looks for
ready units only then, so most outcomes inside a batch release nothing at no query.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from db import ai_spend, batch_writes, events
from db.models import Job, JobStatus, RunLink, RunStatus, TaskRun
from pipelines import GROUP, PIPELINE, DispatchSpec


@dataclasses.dataclass(frozen=True)
class Released:
    """What :func:`release` wrote: batches to send after commit, and their events."""

    dispatches: tuple[DispatchSpec, ...] = ()
    events: tuple[events.NewEvent, ...] = ()
    #: Slots of ``max_in_flight`` the released units take.
    slots: int = 0
    #: Index of the last batch released (None: none was).
    last_index: int | None = None
    #: Runs never released that the monthly AI budget cancelled (their job stopped).
    cancelled: int = 0
    #: Whether ready units are left waiting for a slot; None: unchanged (nothing looked).
    ready_left: bool | None = None

    @property
    def batches(self) -> int:
        """Return how many batches were released."""
        return len(self.dispatches)


#: Nothing released.
NOTHING = Released()


def unlink_runs(ended: Any) -> sa.Update:
    """Return the update moving the runs linked to ``ended`` one step closer to ready.

    ``ended``: an expanding parameter or a select of run ids. It returns the runs it
    moved, with what they still wait on.
    """
    unlinked = (
        sa.select(RunLink.next_run_id, sa.func.count().label("links"))
        .where(RunLink.run_id.in_(ended))
        .group_by(RunLink.next_run_id)
        .subquery()
    )
    return (
        sa.update(TaskRun)
        .where(TaskRun.id == unlinked.c.next_run_id)
        .values(waiting_on=TaskRun.waiting_on - unlinked.c.links)
        .returning(TaskRun.id, TaskRun.waiting_on)
    )


def free_slots_of(job_id: sa.ColumnElement[Any]) -> sa.Update:
    """Return the update freeing ``freed`` (a parameter) slots of the job ``job_id``.

    It locks the job's row for the release that follows and returns what the release
    reads; with a budget, also the month's AI spend (no statement more).
    """
    return (
        sa.update(Job)
        .where(Job.id == job_id)
        .values(in_flight=Job.in_flight - sa.bindparam("freed"))
        .returning(
            Job.status,
            Job.in_flight,
            Job.max_in_flight,
            Job.total_batches,
            Job.max_retries,
            Job.ready_waiting,
            Job.ai_budget,
            sa.case((Job.ai_budget.is_(None), None), else_=ai_spend.MONTH_SPEND).label("spent"),
        )
    )


# Built once: building a statement costs more Python time than running it does.
UNLINK = unlink_runs(sa.bindparam("ended", expanding=True))
FREE_SLOTS = free_slots_of(sa.bindparam("of_job"))
#: Cancels the job's runs never released, when it stops at the monthly AI budget.
STOP_AT_BUDGET = (
    sa.update(TaskRun)
    .where(TaskRun.job_id == sa.bindparam("of_job"), TaskRun.status == RunStatus.WAITING)
    .values(
        status=RunStatus.CANCELLED,
        error=ai_spend.BUDGET_REACHED,
        finished_at=sa.bindparam("now", type_=TaskRun.finished_at.type),
        updated_at=sa.bindparam("now", type_=TaskRun.updated_at.type),
    )
    .returning(TaskRun.id, TaskRun.task_id)
)
_ready = orm.aliased(TaskRun)
#: The job's first ``limit`` ready units (their first run waits on nothing): the longest
#: chain of tasks left first (its first run's rank), then in plan order.
_READY_UNITS = (
    sa.select(_ready.unit)
    .where(
        _ready.job_id == sa.bindparam("job_id"),
        _ready.status == RunStatus.WAITING,
        _ready.step == 0,
        _ready.waiting_on <= 0,
    )
    .order_by(_ready.rank.desc(), _ready.unit)
    .limit(sa.bindparam("limit"))
)
#: Every run of those units, in order.
READY_RUNS = (
    sa.select(TaskRun.id, TaskRun.unit, TaskRun.unit_mode, TaskRun.rank)
    .where(
        TaskRun.job_id == sa.bindparam("job_id"),
        TaskRun.status == RunStatus.WAITING,
        TaskRun.unit.in_(_READY_UNITS.scalar_subquery()),
    )
    .order_by(TaskRun.unit, TaskRun.step)
)


def unlink(session: orm.Session, ended: Sequence[int]) -> bool:
    """Count the runs ``ended`` as done for the units linked to them.

    Returns True when a unit became ready (its first run waits on nothing now).
    """
    rows = session.connection().execute(UNLINK, {"ended": list(ended)}).all()
    return any(row.waiting_on <= 0 for row in rows)


def release(
    session: orm.Session, job_id: int, *, freed: int, now: Any, spending: float = 0.0
) -> Released:
    """Free ``freed`` slots of the job, then release its ready units while slots are free.

    Locks the job's row (first, for the whole transaction). The caller adds
    ``Released.slots`` to the job's ``in_flight`` and ``Released.batches`` to its
    ``total_batches`` (:func:`record`, or the outcome's counter update), counts
    ``Released.cancelled``, stores ``Released.events``, sets the job's ``ready_waiting``
    to ``Released.ready_left`` (unless None), and sends ``Released.dispatches`` after
    commit. A job whose monthly AI budget is reached (``spending``: what the caller's
    transaction adds to the month) releases nothing more: its waiting runs are
    cancelled, its running ones finish.
    """
    job = free_slots(session.connection(), job_id, freed=freed, now=now)
    return release_locked(session, job_id, job, now=now, spending=spending, look=True)


def free_slots(connection: sa.Connection, job_id: int, *, freed: int, now: Any) -> sa.Row[Any]:
    """Free ``freed`` slots of the job and lock its row; return it (:data:`FREE_SLOTS`)."""
    return connection.execute(FREE_SLOTS, free_slots_parameters(job_id, freed, now)).one()


def free_slots_parameters(job_id: int, freed: int, now: Any) -> dict[str, Any]:
    """Parameters of :data:`FREE_SLOTS`."""
    # Not "job_id": in the outcome's one statement (db.handover) a parameter named as a
    # column of the rows it updates would become one more SET clause.
    return {"of_job": job_id, "freed": freed, "month_start": ai_spend.month_start(now)}


def release_locked(
    session: orm.Session,
    job_id: int,
    job: sa.Row[Any],
    *,
    now: Any,
    spending: float = 0.0,
    look: bool,
) -> Released:
    """Release the job's ready units into its free slots; ``job`` is its locked row.

    ``look``: a unit may have become ready. Without it, only units that the job's
    ``ready_waiting`` flag says were left waiting can go, and no query looks for them
    when the flag is unset. See :func:`release` for what the caller does with the result.
    """
    if job.status != JobStatus.RUNNING:
        return NOTHING
    if job.ai_budget is not None and job.spent + spending >= job.ai_budget:
        return _stop_at_budget(session.connection(), job_id, now)
    if not (look or job.ready_waiting):
        return NOTHING
    free = job.max_in_flight - job.in_flight
    if free <= 0:
        return Released(ready_left=True) if look else NOTHING
    # One unit more than can go: whether it comes back tells if ready units are left.
    runs = session.connection().execute(READY_RUNS, {"job_id": job_id, "limit": free + 1}).all()
    if not runs:
        return Released(ready_left=False)
    taken = _within(runs, free)
    left = len(taken) < len({run.unit for run in runs})
    return _write(session, job_id, taken, job.total_batches, job.max_retries, now, left)


def _stop_at_budget(connection: sa.Connection, job_id: int, now: Any) -> Released:
    """Cancel the job's runs never released: the monthly AI budget is reached."""
    stopped = connection.execute(STOP_AT_BUDGET, {"of_job": job_id, "now": now}).all()
    if not stopped:
        return NOTHING
    cancelled = [
        ("task_cancelled", {"run": run.id, "task": run.task_id, "error": ai_spend.BUDGET_REACHED})
        for run in stopped
    ]
    reached = ("budget_reached", {"cancelled_tasks": len(stopped)})
    return Released(events=(reached, *cancelled), cancelled=len(stopped), ready_left=False)


def _within(runs: Sequence[sa.Row[Any]], free: int) -> list[list[sa.Row[Any]]]:
    """Return the units (their runs in order) that fit in ``free`` slots, the longest
    chain of tasks left first, then in plan order (as :data:`_READY_UNITS` picks them).

    A pipeline takes one slot; a group unit one per task. The first unit always fits
    (``max_in_flight`` is at least a group unit's size).
    """
    units = [list(unit_runs) for _, unit_runs in itertools.groupby(runs, key=lambda r: r.unit)]
    units.sort(key=lambda unit: (-unit[0].rank, unit[0].unit))
    taken: list[list[sa.Row[Any]]] = []
    used = 0
    for unit in units:
        cost = 1 if unit[0].unit_mode == PIPELINE else len(unit)
        if taken and used + cost > free:
            break
        taken.append(unit)
        used += cost
    return taken


def _write(
    session: orm.Session,
    job_id: int,
    units: list[list[sa.Row[Any]]],
    released_before: int,
    max_retries: int | None,
    now: Any,
    left: bool,
) -> Released:
    """Write the batches of ``units``: the group units as one group, each pipeline alone.

    The batches are numbered in plan order of their first unit; ``left``: ready units
    that did not fit wait for a slot.
    """
    groups = [unit for unit in units if unit[0].unit_mode == GROUP]
    pipelined = [unit for unit in units if unit[0].unit_mode == PIPELINE]
    firsts = [(pipeline[0].unit, PIPELINE, (pipeline,)) for pipeline in pipelined]
    if groups:
        firsts.append((groups[0][0].unit, GROUP, tuple(groups)))
    ordered = [
        (mode, [run for unit in members for run in unit])
        for _, mode, members in sorted(firsts, key=lambda first: first[0])
    ]
    batches = [(mode, tuple(run.id for run in runs)) for mode, runs in ordered]
    first = released_before + 1
    batch_writes.write_batches(session.connection(), job_id, batches, first, now)
    started = tuple(
        (
            "batch_started",
            {"batch": first + i, "mode": mode, "done": 0, "total": len(ids), "runs": list(ids)},
        )
        for i, (mode, ids) in enumerate(batches)
    )
    return Released(
        dispatches=tuple(
            DispatchSpec(mode, ids, max_retries, ranks=tuple(run.rank for run in runs))
            for (mode, ids), (_, runs) in zip(batches, ordered, strict=True)
        ),
        events=started,
        slots=sum(1 if unit[0].unit_mode == PIPELINE else len(unit) for unit in units),
        last_index=first + len(batches) - 1,
        ready_left=left,
    )


#: Takes released units' slots and counts their batches (outside an outcome).
RECORD = (
    sa.update(Job)
    .where(Job.id == sa.bindparam("job_id"))
    .values(
        in_flight=Job.in_flight + sa.bindparam("slots"),
        total_batches=Job.total_batches + sa.bindparam("batches"),
        current_batch=sa.func.coalesce(
            sa.bindparam("last_index", type_=sa.Integer), Job.current_batch
        ),
        done_tasks=Job.done_tasks + sa.bindparam("cancelled"),
        cancelled_tasks=Job.cancelled_tasks + sa.bindparam("cancelled"),
        ready_waiting=sa.func.coalesce(
            sa.bindparam("ready_left", type_=sa.Boolean), Job.ready_waiting
        ),
    )
)


def record(
    session: orm.Session,
    job_id: int,
    released: Released,
    *,
    first: Sequence[events.NewEvent] = (),
) -> None:
    """Count a release made outside an outcome (submit, retry, repair); store its events.

    ``first`` are events to store before the release's own (``job_started``).
    """
    if released.batches or released.cancelled or released.ready_left is not None:
        parameters = {
            "job_id": job_id,
            "slots": released.slots,
            "batches": released.batches,
            "last_index": released.last_index,
            "cancelled": released.cancelled,
            "ready_left": released.ready_left,
        }
        session.connection().execute(RECORD, parameters)
    if first or released.events:
        events.append(session, job_id, [*first, *released.events])
