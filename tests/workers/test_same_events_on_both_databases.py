"""One job records the same events on SQLite and on PostgreSQL.

SQLite builds event payloads in Python, PostgreSQL in SQL (one statement per start and
per outcome); both come from one definition, and this test holds them to it.
"""

from __future__ import annotations

from typing import Any

import pytest
from jobwatch import wait_for_job
from workerkit import make_project, start_embedded, submit


def _events_of_one_job(database_url: str) -> list[tuple[str, dict[str, Any]]]:
    """Run the same small job on ``database_url`` with one worker thread; return its events."""
    embedded = start_embedded(database_url, threads=1, MAX_RETRIES=0)
    try:
        project_id = make_project(
            "a",
            {"key": "x", "title": "[fail] X"},
            "c1",
            {"key": "c2", "title": "C2", "depends_on": ["c1"]},
            {"key": "d", "title": "D", "depends_on": ["a", "x"]},
            {"key": "e", "title": "E", "depends_on": ["a"]},
        )
        job_id = submit(project_id, batch_size=3)
        job, events = wait_for_job(job_id)
    finally:
        embedded.worker.stop()
        embedded.broker.close()
    assert job["status"] == "partial"
    return [(event["type"], event["payload"]) for event in events]


@pytest.mark.both_strategies
def test_one_job_records_the_same_events_on_sqlite_and_postgresql(
    sqlite_url: str, postgres_url: str
):
    # Given the same project and job on each database, run by one worker thread
    on_postgres = _events_of_one_job(postgres_url)
    on_sqlite = _events_of_one_job(sqlite_url)

    # Then both stored the same events, with the same payloads, in the same order
    kinds = {kind for kind, _ in on_sqlite}
    assert {"task_started", "task_succeeded", "task_failed", "task_skipped"} <= kinds
    assert {"job_started", "batch_started", "batch_completed", "job_finished"} <= kinds
    assert on_postgres == on_sqlite
