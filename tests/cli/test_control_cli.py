"""``handson cancel``, ``retry`` and ``schedule``: outcomes and clear errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result
from workerkit import make_project

import db
from cli import cli
from db import jobs, schedules
from settings import Settings


@pytest.fixture
def run(sqlite_url: str):
    settings = Settings(DATABASE_URL=sqlite_url)
    db.configure(sqlite_url)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), obj=settings, catch_exceptions=False)

    return invoke


def test_cancel_a_running_job_then_again(run):
    project_id = make_project("a", "b")
    job_id = jobs.create_job(project_id, batch_size=5, max_batch_size=50, max_tasks=10).job_id
    first = run("cancel", str(job_id))
    assert first.exit_code == 0 and f"Cancelled job {job_id}." in first.output
    again = run("cancel", str(job_id))
    assert again.exit_code == 0 and "had already ended" in again.output
    assert jobs.snapshot(job_id)["status"] == "cancelled"


def test_cancel_and_retry_of_unknown_jobs_are_usage_errors(run):
    for command in ("cancel", "retry"):
        result = run(command, "41")
        assert result.exit_code == 2 and "job 41 does not exist" in result.output


def test_retry_of_a_job_without_failures_says_why(run):
    project_id = make_project("a")
    job_id = jobs.create_job(project_id, batch_size=5, max_batch_size=50, max_tasks=10).job_id
    result = run("retry", str(job_id))
    assert result.exit_code == 1
    assert "is running; only a partial or failed job can be retried" in result.output


def test_schedule_add_list_rm(run):
    project_id = make_project("a")
    added = run("schedule", "add", str(project_id), "--cron", "0 3 * * *")
    assert added.exit_code == 0 and "Added schedule 1." in added.output
    listed = run("schedule", "list")
    assert "project 1" in listed.output and "0 3 * * *" in listed.output
    assert " 03:00 UTC" in listed.output
    removed = run("schedule", "rm", "1")
    assert removed.exit_code == 0 and schedules.list_schedules() == []
    assert "No schedule." in run("schedule", "list").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "every night"], "is not a crontab expression"),
        (["--cron", "0 3 * * *", "--batch-size", "0"], "batch size must be between 1 and 50"),
    ],
)
def test_schedule_add_rejects_bad_input_and_stores_nothing(run, args, message):
    project_id = make_project("a")
    result = run("schedule", "add", str(project_id), *args)
    assert result.exit_code == 2 and message in result.output
    assert schedules.list_schedules() == []
