"""A job running as barriers when the flow migration runs goes on to the end after it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from jobwatch import wait_for_job
from workerkit import start_embedded

from db import migrate
from workers import dispatch

NOW = "2026-12-01 10:00:00+00:00"
#: A running job of three one-task batches as 0003 stored it: a done, b sent, c pending.
LEGACY_ROWS = [
    f"INSERT INTO projects (id, name, description, created_at) VALUES (1, 'Old', '', '{NOW}')",
    *(
        f"INSERT INTO tasks (id, project_id, key, position, title, description)"
        f" VALUES ({i}, 1, '{key}', {i - 1}, '{key.upper()}', '')"
        for i, key in enumerate("abc", start=1)
    ),
    "INSERT INTO task_dependencies (task_id, depends_on_id) VALUES (2, 1), (3, 2)",
    "INSERT INTO jobs (id, project_id, status, batch_size, max_retries, total_tasks,"
    " total_batches, done_tasks, succeeded_tasks, failed_tasks, skipped_tasks,"
    " cancelled_tasks, completed_batches, current_batch, event_seq, created_at)"
    f" VALUES (1, 1, 'running', 1, NULL, 3, 3, 1, 1, 0, 0, 0, 1, 2, 0, '{NOW}')",
    *(
        'INSERT INTO batches (id, job_id, "index", mode, status, total, done, succeeded,'
        " failed, skipped, cancelled, dispatches, dispatched_at, started_at)"
        f" VALUES ({i}, 1, {i}, 'group', '{status}', 1, {done}, {done}, 0, 0, 0, {sent},"
        f" {at}, {at})"
        for i, status, done, sent, at in [
            (1, "completed", 1, 1, f"'{NOW}'"),
            (2, "running", 0, 1, f"'{NOW}'"),
            (3, "pending", 0, 0, "NULL"),
        ]
    ),
    *(
        "INSERT INTO task_runs (id, job_id, batch_id, task_id, position, status, attempts,"
        f" updated_at) VALUES ({i}, 1, {i}, {i}, 0, '{status}', {tries}, '{NOW}')"
        for i, status, tries in [(1, "succeeded", 1), (2, "queued", 0), (3, "queued", 0)]
    ),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def legacy_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A database at revision 0003 holding :data:`LEGACY_ROWS`."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'legacy.db'}"
        yield from _at_0003(url)
        return
    server = request.getfixturevalue("postgres_server_url")
    name = f"legacy_{uuid.uuid4().hex[:8]}"
    libpq = sa.make_url(server).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(libpq, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield from _at_0003(sa.make_url(server).set(database=name).render_as_string(False))
    finally:
        from db import listen

        listen.close_hub()
        with psycopg.connect(libpq, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _at_0003(url: str) -> Iterator[str]:
    migrate.upgrade(url, "0003")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for statement in LEGACY_ROWS:
            connection.execute(sa.text(statement))
        if connection.dialect.name == "postgresql":  # the rows above chose their own ids
            for table in ("projects", "tasks", "jobs", "batches", "task_runs"):
                connection.execute(
                    sa.text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 10)")
                )
    engine.dispose()
    yield url


def test_a_job_running_as_barriers_finishes_after_the_flow_migration(legacy_url: str):
    # Given a job stored by 0003 mid-way (batch 2 sent, batch 3 pending), migrated to head
    migrate.upgrade(legacy_url)
    embedded = start_embedded(legacy_url)
    try:
        # When the reconciler finds batch 2 (its message was lost with the old worker)
        repairs = dispatch.repair(stall_timeout_s=0)
        job, events = wait_for_job(1)
    finally:
        embedded.worker.stop()
        embedded.broker.close()

    # Then batch 2 runs, its end releases c as batch 3, and the job succeeds
    assert [r.description for r in repairs] == ["re-dispatched 1 stalled task(s) of batch 2"]
    assert (job["status"], job["strategy"], job["succeeded_tasks"]) == ("succeeded", "batches", 3)
    assert [(b["index"], b["status"]) for b in job["batches"]] == [
        (1, "completed"),
        (2, "completed"),
        (3, "completed"),
    ]
    started = [e["payload"]["runs"] for e in events if e["type"] == "batch_started"]
    assert started == [[3]] and job["in_flight"] == 0
