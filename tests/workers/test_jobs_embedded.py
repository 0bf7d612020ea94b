"""Generation jobs on the in-memory broker with real worker threads (SQLite and PostgreSQL)."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable

import sqlalchemy as sa
from jobwatch import assert_flowed, wait_for_job
from workerkit import Embedded, make_project

from db import get_engine, projects, session_scope
from db.models import Event, HandsOn
from samples import load_sample
from workers import dispatch


def submit(embedded: Embedded, project_id: int, batch_size: int = 5, strategy: str = "flow") -> int:
    settings = embedded.settings
    return dispatch.submit(
        project_id,
        batch_size=batch_size,
        max_batch_size=settings.MAX_BATCH_SIZE,
        max_tasks=settings.MAX_TASKS,
        strategy=strategy,
    )


def assert_batches_in_order(job: dict, events: list[dict]) -> None:
    """Batch k+1 started only after batch k completed, in time and in the event stream."""
    batches = job["batches"]
    for before, after in itertools.pairwise(batches):
        assert before["finished_at"] <= after["started_at"]
    order = [(e["type"], e["payload"]["batch"]) for e in events if e["type"].startswith("batch_")]
    expected = []
    for batch in batches:
        expected += [("batch_started", batch["index"]), ("batch_completed", batch["index"])]
    assert order == expected


def test_the_sample_job_succeeds_with_one_guide_per_task(
    embedded_factory: Callable[..., Embedded], strategy: str
):
    # Given the 62-task sample project and an embedded worker
    embedded = embedded_factory(threads=5, GENERATOR_LATENCY_MS=5)
    spec = projects.parse_project(load_sample(), max_tasks=1000)
    project_id = projects.create_project(spec)

    # When a job runs with batches of 5 (flow: 5 in flight)
    job, events = wait_for_job(submit(embedded, project_id, strategy=strategy), timeout=120)

    # Then it succeeds: 62 guides, every batch completed (the barriers' 13 in order; flow:
    # each task after its dependencies, at most 5 in flight), events numbered 1..N
    assert job["status"] == "succeeded"
    assert (job["done_tasks"], job["succeeded_tasks"], job["total_tasks"]) == (62, 62, 62)
    assert {b["status"] for b in job["batches"]} == {"completed"}
    assert_flowed(job, events, {task.key: task.depends_on for task in spec.tasks})
    assert sum(b["mode"] == "pipeline" for b in job["batches"]) >= 3
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count(HandsOn.id))) == 62
        seqs = session.scalars(sa.select(Event.seq).where(Event.job_id == job["id"])).all()
    assert [e["seq"] for e in events] == sorted(seqs) == list(range(1, len(seqs) + 1))
    assert events[0]["type"] == "job_started" and events[-1]["type"] == "job_finished"
    if strategy == "batches":
        assert len(job["batches"]) == 13
        assert_batches_in_order(job, events)


def test_a_pipeline_hands_each_step_the_previous_guide(embedded: Embedded):
    # Given a chain a -> b -> c (one pipeline batch)
    project_id = make_project(
        "a",
        {"key": "b", "title": "B", "depends_on": ["a"]},
        {"key": "c", "title": "C", "depends_on": ["b"]},
    )

    # When it runs
    job, _ = wait_for_job(submit(embedded, project_id))

    # Then each later step's guide continues from the previous step's guide
    assert [b["mode"] for b in job["batches"]] == ["pipeline"]
    with session_scope() as session:
        guides = dict(session.execute(sa.select(HandsOn.task_id, HandsOn.markdown)).all())
    runs = job["batches"][0]["runs"]
    assert "Continuing from the previous step" not in guides[runs[0]["task_id"]]
    for step in runs[1:]:
        assert "Continuing from the previous step" in guides[step["task_id"]]


def test_a_guide_is_stored_with_its_outcome_unless_a_next_step_needs_it_first(
    embedded: Embedded,
):
    # Given a chain a -> b -> c and two independent tasks, and every transaction that
    # stores a guide or records a run's outcome being noted
    project_id = make_project(
        "a",
        {"key": "b", "title": "B", "depends_on": ["a"]},
        {"key": "c", "title": "C", "depends_on": ["b"]},
        "d",
        "e",
    )
    begun = itertools.count()
    current: dict[int, int] = {}
    writes: dict[int, dict[str, int]] = collections.defaultdict(dict)

    def on_begin(connection: sa.Connection) -> None:
        current[id(connection.connection.dbapi_connection)] = next(begun)

    def on_execute(connection, _cursor, statement, _parameters, context, _many) -> None:  # type: ignore[no-untyped-def]
        parameters = context.compiled_parameters[0] if context.compiled else {}
        transaction = current.get(id(connection.connection.dbapi_connection))
        if statement.startswith("INSERT INTO hands_on"):
            writes[parameters["run_id"]]["guide"] = transaction
        elif "new_status" in parameters:  # the run's end (alone, or leading a CTE)
            writes[parameters["run_id"]]["outcome"] = transaction

    engine = get_engine()
    sa.event.listen(engine, "begin", on_begin)
    sa.event.listen(engine, "before_cursor_execute", on_execute)
    try:
        # When the job runs
        job, _ = wait_for_job(submit(embedded, project_id, batch_size=3))
    finally:
        sa.event.remove(engine, "begin", on_begin)
        sa.event.remove(engine, "before_cursor_execute", on_execute)

    # Then each guide went in its outcome's transaction, except those of pipeline steps
    # followed by another step: stored before, since the next step reads them
    assert job["status"] == "succeeded"
    runs = [
        (batch["mode"], run["id"], position == len(batch["runs"]) - 1)
        for batch in job["batches"]
        for position, run in enumerate(batch["runs"])  # in pipeline order
    ]
    assert len(runs) == 5 and len(writes) == 5
    assert "pipeline" in {mode for mode, _, _ in runs}
    for mode, run_id, last in runs:
        before_next_step = mode == "pipeline" and not last
        together = writes[run_id]["guide"] == writes[run_id]["outcome"]
        assert together is not before_next_step, (mode, run_id)
