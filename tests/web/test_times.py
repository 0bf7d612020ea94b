"""Times on pages and in CLI output carry their zone."""

from __future__ import annotations

import re

from click.testing import CliRunner
from webkit import make_app

from cli import cli
from settings import Settings


def start_job(client) -> int:
    """Create a two-task project and start a job of it through the API."""
    project = {"name": "Times", "tasks": [{"key": "a", "title": "A"}, {"key": "b", "title": "B"}]}
    project_id = client.post("/api/projects", json=project).json["id"]
    started = client.post("/api/task_hands_on/generate_all", json={"project_id": project_id})
    return int(started.json["job_id"])


def test_the_jobs_list_shows_when_a_job_started_in_utc(sqlite_url):
    # Given a job
    client = make_app(sqlite_url).test_client()
    start_job(client)

    # When the jobs list is shown
    page = client.get("/jobs").get_data(as_text=True)

    # Then its start time names its zone
    assert re.search(r">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>", page), page


def test_the_cli_status_shows_times_in_utc(sqlite_url):
    # Given a job
    job_id = start_job(make_app(sqlite_url).test_client())

    # When its status is shown
    result = CliRunner().invoke(cli, ["status", str(job_id)], obj=Settings(DATABASE_URL=sqlite_url))

    # Then the start time names its zone, and the unfinished end says so
    assert re.search(r"started: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, finished: -", result.output), (
        result.output
    )
