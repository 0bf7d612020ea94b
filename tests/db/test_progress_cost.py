"""Recording a task outcome costs a fixed number of SQL statements, whatever the job size."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine.interfaces import CacheStats
from workerkit import make_project

import db
from db import guides, jobs, precompile, progress, starts
from db.models import RunStatus, TaskRun


@contextlib.contextmanager
def counting_statements(cache_misses: list[str] | None = None) -> Iterator[list[str]]:
    """Collect every SQL statement the engine sends while the block runs.

    ``cache_misses`` collects those SQLAlchemy compiled anew rather than took from its cache.
    """
    statements: list[str] = []

    def record(_conn, _cursor, statement, _parameters, context, _many) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)
        compiled = context.compiled is not None  # not raw SQL such as BEGIN IMMEDIATE
        if cache_misses is not None and compiled and context.cache_hit != CacheStats.CACHE_HIT:
            cache_misses.append(statement)

    engine = db.get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def first_batch_runs(job_id: int) -> list[int]:
    with db.session_scope() as session:
        return list(
            session.scalars(
                sa.select(TaskRun.id)
                .join(TaskRun.batch)
                .where(TaskRun.job_id == job_id)
                .order_by(TaskRun.batch_id, TaskRun.position)
                .limit(5)
            )
        )


def outcome_costs(
    tasks: int, strategy: str = "flow", cache_misses: list[str] | None = None
) -> tuple[int, int, int]:
    """Statements to start a run, record an outcome inside a batch, and the one ending it.

    Flow, 5 in flight: each outcome frees a slot and releases the next task. Batches:
    an outcome inside a batch releases nothing; the one ending it releases the next.
    """
    project_id = make_project(*[f"t{i}" for i in range(tasks)])
    created = jobs.create_job(
        project_id, batch_size=5, max_batch_size=50, max_tasks=10_000, strategy=strategy
    )
    runs = first_batch_runs(created.job_id)
    for run_id in runs[:3]:
        starts.start_run(run_id)
        progress.record_outcome(run_id, RunStatus.SUCCEEDED)
    with counting_statements(cache_misses) as start:
        starts.start_run(runs[3])
    with counting_statements(cache_misses):
        guides.save_guide(runs[3], "# guide", "offline")
    with counting_statements(cache_misses) as plain:
        outcome = progress.record_outcome(runs[3], RunStatus.SUCCEEDED)
        assert len(outcome.dispatches) == (1 if strategy == "flow" else 0)
    starts.start_run(runs[4], guides.read_request)
    with counting_statements(cache_misses) as completing:
        outcome = progress.record_outcome(runs[4], RunStatus.SUCCEEDED)
        assert len(outcome.dispatches) == 1
    return len(start), len(plain), len(completing)


def test_outcome_cost_is_the_same_for_10_and_1000_tasks(database_url: str, strategy: str):
    # Given the database, and jobs of 10 and of 1,000 independent tasks
    db.configure(database_url)

    # When one outcome of each is recorded
    small, large = outcome_costs(10, strategy), outcome_costs(1000, strategy)

    # Then each costs the same, small, number of statements
    assert small == large
    start, plain, completing = small
    assert start <= 4 and plain <= 10 and completing <= 10
    if db.get_engine().dialect.name == "postgresql":
        # Starting: the run, its event and the notification in one statement. A success:
        # the run, its batch, the links it ends and the slot it frees in one statement
        # (the job's row comes back locked); when a unit became ready or the job's row
        # says one waits for a slot, the ready runs, then their batch and their queueing
        # in one statement; then the job's counters with the events and the notification
        # in one statement. Inside a batch of the batches strategy nothing waits: 2 in all.
        assert start == 1
        assert plain == (4 if strategy == "flow" else 2)
        assert completing == 4


def test_per_task_statements_are_compiled_once_then_taken_from_the_cache(database_url: str):
    # Given the database, where a first job's batch has been recorded once
    db.configure(database_url)
    outcome_costs(10)

    # When a second job's runs start, store their guides and record their outcomes
    misses: list[str] = []
    outcome_costs(10, cache_misses=misses)

    # Then SQLAlchemy compiled none of their statements again (compiling costs more
    # Python time than running them, and worker threads pay for it in turn)
    assert misses == []


def test_compiling_ahead_runs_every_per_task_statement_and_changes_nothing(database_url: str):
    # Given a database with a job in it
    db.configure(database_url)
    project_id = make_project("a", {"key": "b", "title": "B", "depends_on": ["a"]})
    jobs.create_job(project_id, batch_size=5, max_batch_size=50, max_tasks=100)
    before = jobs_and_runs()

    # When a booting worker compiles the per-task statements ahead
    with counting_statements() as statements:
        precompile.compile_ahead()

    # Then they ran (7 of them) and no row changed
    assert len(statements) >= 7
    assert jobs_and_runs() == before


def jobs_and_runs() -> list[tuple]:
    with db.session_scope() as session:
        return [
            tuple(row)
            for table in ("jobs", "batches", "task_runs", "events", "hands_on")
            for row in session.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))
        ]


def test_writing_a_job_costs_the_same_few_statements_for_10_and_1000_tasks(database_url: str):
    # Given the database, and projects of 10 and of 1,000 tasks (a chain among them)
    db.configure(database_url)
    chain = [{"key": "c0", "title": "C0"}, {"key": "c1", "title": "C1", "depends_on": ["c0"]}]
    small = make_project(*chain, *[f"t{i}" for i in range(8)])
    large = make_project(*chain, *[f"t{i}" for i in range(998)])

    # When a job of each is written
    costs, created = [], []
    for project_id in (small, large):
        with counting_statements() as statements:
            created.append(
                jobs.create_job(project_id, batch_size=5, max_batch_size=50, max_tasks=10_000)
            )
        costs.append(len(statements))

    # Then each knows what to send first (the chain as one pipeline, then four single
    # tasks as one group: 5 in flight) and, on PostgreSQL, both cost the same few statements
    # (SQLite inserts rows one by one when their ids must come back in order: in-process,
    # that costs microseconds a row)
    if db.get_engine().dialect.name == "postgresql":
        assert costs[0] == costs[1] <= 10
    for job in created:
        with db.session_scope() as session:
            released = session.execute(
                sa.select(TaskRun.id, TaskRun.batch_id)
                .where(TaskRun.job_id == job.job_id, TaskRun.batch_id.isnot(None))
                .order_by(TaskRun.batch_id, TaskRun.position)
            ).all()
        by_batch = [
            tuple(run.id for run in released if run.batch_id == batch_id)
            for batch_id in dict.fromkeys(run.batch_id for run in released)
        ]
        assert [spec.run_ids for spec in job.dispatches] == by_batch
        assert [(spec.mode, len(spec.run_ids)) for spec in job.dispatches] == [
            ("pipeline", 2),
            ("group", 4),
        ]


def test_compiling_ahead_covers_the_start_the_generation_actor_makes(postgres_url: str):
    # Given a fresh engine on PostgreSQL (where the start reads the actor's request in
    # its own statement) with a job in it, and the per-task statements compiled ahead as
    # a booting worker does
    db.configure(postgres_url)
    project_id = make_project("a")
    created = jobs.create_job(project_id, batch_size=5, max_batch_size=50, max_tasks=100)
    precompile.compile_ahead()

    # When the run starts as the generation actor starts it (reading its request)
    misses: list[str] = []
    with counting_statements(misses):
        started = starts.start_run(created.dispatches[0].run_ids[0], guides.REQUEST)

    # Then it started, and nothing was compiled on the way
    assert started.decision == starts.Start.RUN and started.prepared.task_key == "a"
    assert misses == []
