"""A job another process runs on SQLite is never shown as live while frozen.

On SQLite only the writing process is told of new events. With another process holding
the database's embedded lock (so running its jobs), the page's stream and ``status
--follow`` say plainly that they cannot follow, and show the job as it stands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from webkit import make_app

from cli import cli
from settings import Settings

ROOT = Path(__file__).resolve().parents[2]
HOLD_LOCK = """
import sys
from workers import embedded_lock
embedded_lock.claim(sys.argv[1], role="handson enqueue")
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@pytest.fixture
def other_process(sqlite_url: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the database's embedded lock, as `handson enqueue` would."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, sqlite_url],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout and process.stdout.readline() == "held\n"
    yield process
    process.communicate(timeout=30)


def start_job(client) -> int:
    project = {"name": "Elsewhere", "tasks": [{"key": "a", "title": "A"}]}
    project_id = client.post("/api/projects", json=project).json["id"]
    started = client.post("/api/task_hands_on/generate_all", json={"project_id": project_id})
    return int(started.json["job_id"])


def test_the_stream_of_a_job_run_elsewhere_says_it_cannot_follow_and_ends(
    sqlite_url, other_process
):
    # Given a running job, and another process running the database's embedded worker
    client = make_app(sqlite_url).test_client()
    job_id = start_job(client)

    # When its page opens the event stream
    response = client.get(f"/api/jobs/{job_id}/events", buffered=False)
    chunks = [chunk.decode() for _, chunk in zip(range(3), response.response, strict=False)]

    # Then it gets the job as it stands, then why it is not live, and the stream ends
    assert response.status_code == 200
    assert chunks[1].startswith("event: snapshot")
    assert chunks[2].startswith("event: unfollowable")
    assert f"handson enqueue (pid {other_process.pid})" in chunks[2]
    assert "Reload the page" in chunks[2]
    assert next(iter(response.response), None) is None


def test_status_follow_of_a_job_run_elsewhere_says_it_cannot_follow(sqlite_url, other_process):
    # Given a running job, and another process running the database's embedded worker
    job_id = start_job(make_app(sqlite_url).test_client())

    # When the CLI is asked to follow it
    result = CliRunner().invoke(
        cli, ["status", str(job_id), "--follow"], obj=Settings(DATABASE_URL=sqlite_url)
    )

    # Then it says why it cannot, and shows the job as it stands (not succeeded: exit 1)
    assert result.exit_code == 1, result.output
    assert f"Cannot follow job {job_id} live" in result.output
    assert f"handson enqueue (pid {other_process.pid})" in result.output
    assert f"Job {job_id} (Elsewhere): running" in result.output


def test_the_job_page_of_a_job_run_elsewhere_says_not_live(
    sqlite_url, other_process, live_factory, page
):
    # Given a running job, and another process running the database's embedded worker
    live = live_factory(sqlite_url, worker=False)
    job_id = start_job(live.app.test_client())

    # When its page is opened in a browser
    page.goto(f"{live.base_url}/jobs/{job_id}")

    # Then it says it is not live and why, instead of "live"
    page.wait_for_function("() => document.getElementById('job').dataset.live === 'unfollowable'")
    connection = page.text_content("#connection")
    assert connection.startswith("Not live: this job runs in handson enqueue"), connection
    assert "Reload the page" in connection


def test_status_follow_of_a_job_nobody_runs_says_so_instead_of_waiting(sqlite_url):
    # Given a job left running, and no process running the database's embedded worker
    job_id = start_job(make_app(sqlite_url).test_client())

    # When the CLI is asked to follow it
    result = CliRunner().invoke(
        cli, ["status", str(job_id), "--follow"], obj=Settings(DATABASE_URL=sqlite_url)
    )

    # Then it says nobody runs it and what resumes it, instead of waiting forever
    assert result.exit_code == 1, result.output
    assert "no process runs its work now" in result.output and "make run" in result.output
    assert f"Job {job_id} (Elsewhere): running" in result.output
