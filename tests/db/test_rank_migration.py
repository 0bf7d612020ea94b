"""Migration 0010 ranks task runs: rows stored before get 0 (unranked), both ways."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from test_ai_usage_migration import _column_differences, _columns
from workerkit import make_project

import db
from db import dispatch, jobs, migrate
from db.models import Batch


def _runs(url: str) -> list[tuple[object, ...]]:
    """Return every task run's id, job, status (and rank when the column exists)."""
    rank = ", rank" if "rank" in _columns(url, "task_runs") else ""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            query = sa.text(f"SELECT id, job_id, status{rank} FROM task_runs ORDER BY id")
            return [tuple(row) for row in connection.execute(query)]
    finally:
        engine.dispose()


def test_0010_ranks_stored_runs_0_and_drops_the_column_on_downgrade(database_url: str):
    # Given a database at head (the column as the models declare it) holding a job
    assert (migrate.current(database_url) or "") >= "0010"
    assert _column_differences(database_url) == []
    db.configure(database_url)
    project_id = make_project("a", {"key": "b", "title": "B", "depends_on": ["a"]}, "c")
    created = jobs.create_job(project_id, batch_size=5, max_batch_size=50, max_tasks=100)
    ranked = _runs(database_url)
    assert sorted(row[3] for row in ranked) == [1, 1, 2]

    # When it is downgraded to 0009, the runs stay, without their rank
    command.downgrade(migrate.alembic_config(database_url), "0009")
    assert "rank" not in _columns(database_url, "task_runs")
    assert _runs(database_url) == [row[:3] for row in ranked]

    # And when it is upgraded again, the runs it holds are unranked (0)
    migrate.upgrade(database_url)
    assert _runs(database_url) == [(*row[:3], 0) for row in ranked]
    # And their released batches are sent again with rank 0, the lowest
    with db.session_scope() as session:
        batch_ids = session.scalars(sa.select(Batch.id).where(Batch.job_id == created.job_id))
        again = [dispatch.read_dispatch(session, batch_id) for batch_id in batch_ids]
    assert sorted((spec.run_ids, spec.ranks) for spec in again if spec) == sorted(
        (spec.run_ids, (0,) * len(spec.run_ids)) for spec in created.dispatches
    )
