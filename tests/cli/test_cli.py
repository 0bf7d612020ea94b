"""The ``handson`` command line, embedded mode: import, enqueue --wait, status, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from click.testing import CliRunner, Result

import db
from cli import cli
from db import jobs
from db.migrate import alembic_config
from samples import SAMPLE_PROJECT_PATH
from settings import Settings


@pytest.fixture
def settings(sqlite_url: str) -> Settings:
    """Embedded settings on a fresh SQLite database, with a fast generator."""
    return Settings(DATABASE_URL=sqlite_url, GENERATOR_LATENCY_MS=0, EMBEDDED_WORKER_THREADS=4)


@pytest.fixture
def run(settings: Settings):
    """Run ``handson`` with the test settings; return the click result."""
    db.configure(settings.DATABASE_URL)  # for the row counts the tests compare

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), obj=settings, catch_exceptions=False)

    return invoke


def row_counts() -> dict[str, int]:
    with db.session_scope() as session:
        return {
            table: session.scalar(sa.text(f"SELECT count(*) FROM {table}"))
            for table in ("projects", "tasks", "jobs", "batches", "task_runs", "events")
        }


def write_project(tmp_path: Path, data: object) -> str:
    path = tmp_path / "project.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_import_then_enqueue_wait_runs_the_sample_to_the_end(run, strategy: str):
    # Given the sample project imported from its JSON file
    imported = run("import", str(SAMPLE_PROJECT_PATH))
    assert imported.exit_code == 0, imported.output
    assert "Imported project 1" in imported.output

    # When a job is enqueued with --wait (embedded: it runs in this process)
    result = run("enqueue", "1", "--batch-size", "5", "--strategy", strategy, "--wait")

    # Then it says how it runs, draws progress, and sums the job up
    assert result.exit_code == 0, result.output
    assert "runs the job's workers in its own process" in result.output
    assert "62/62 tasks" in result.output
    assert "Job 1 (" in result.output and ": succeeded" in result.output
    assert f"{strategy} scheduling, at most 5 in flight" in result.output
    done = re.search(r"batches: (\d+)/(\d+) done", result.output)
    assert done is not None and done[1] == done[2]
    # The barriers' 13 batches; flow releases as many as its timing makes
    assert strategy == "flow" or done[1] == "13"

    status = run("status", "1")
    assert status.exit_code == 0 and "succeeded" in status.output
    assert status.output.count("completed") == int(done[1])
    # And shows the job's AI tokens and cost (the offline generator's estimates)
    job = jobs.snapshot(1)
    tokens = job["prompt_tokens"] + job["completion_tokens"]
    assert tokens > 0
    assert f"AI:      {tokens:,} tokens ({job['prompt_tokens']:,} prompt" in status.output
    assert f"cost {job['cost']:.4f}" in status.output


def test_status_of_a_running_job_says_what_runs_what_is_ready_and_what_waits_on_what(run):
    # Given a job just written (nothing runs it here): a and b released, then at most 2
    # in flight, so c is ready but waits for a slot, and d waits for a and b
    from workerkit import make_project

    from db import jobs

    project_id = make_project("a", "b", "c", {"key": "d", "title": "D", "depends_on": ["a", "b"]})
    created = jobs.create_job(
        project_id, batch_size=5, max_batch_size=50, max_tasks=10, max_in_flight=2
    )

    # When its status is shown
    status = run("status", str(created.job_id))

    # Then it says so, line by line
    assert status.exit_code == 0, status.output
    assert "flow scheduling, at most 2 in flight" in status.output
    assert "in flight: 2 of at most 2" in status.output
    assert "queued:  a, b" in status.output
    assert "ready:   c (for a free slot)" in status.output
    assert "waiting: d (on a, b)" in status.output


def test_db_upgrade_reports_the_revision(run, settings):
    head = ScriptDirectory.from_config(alembic_config(settings.DATABASE_URL)).get_current_head()
    result = run("db", "upgrade")
    assert result.exit_code == 0
    assert f"Database at revision {head}." in result.output


BAD_PROJECTS = {
    "malformed JSON": ('{"name": "x", "tasks": [', "not valid JSON"),
    "unknown dependency": (
        {"name": "x", "tasks": [{"key": "a", "title": "A", "depends_on": ["zz"]}]},
        "depends on 'zz', which is not a task",
    ),
    "cycle": (
        {
            "name": "x",
            "tasks": [
                {"key": "a", "title": "A", "depends_on": ["c"]},
                {"key": "b", "title": "B", "depends_on": ["a"]},
                {"key": "c", "title": "C", "depends_on": ["b"]},
            ],
        },
        "cycle: a -> c -> b -> a",
    ),
    "duplicate task": (
        {"name": "x", "tasks": [{"key": "a", "title": "A"}, {"key": "a", "title": "B"}]},
        "task 'a' appears twice",
    ),
    "empty project": ({"name": "x", "tasks": []}, "no task"),
    "missing title": ({"name": "x", "tasks": [{"key": "a"}]}, "tasks[0].title"),
}


@pytest.mark.parametrize(("data", "message"), BAD_PROJECTS.values(), ids=BAD_PROJECTS.keys())
def test_import_rejects_bad_files_and_writes_nothing(run, tmp_path, data, message):
    # Given a fresh database
    run("db", "upgrade")
    before = row_counts()

    # When a bad project file is imported
    result = run("import", write_project(tmp_path, data))

    # Then the command fails with a message saying what to fix, and nothing is stored
    assert result.exit_code == 2
    assert message in result.output
    assert row_counts() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["1", "--batch-size", "0"], "batch size must be between 1 and 50, got 0"),
        (["1", "--batch-size", "51"], "batch size must be between 1 and 50, got 51"),
        (["99"], "project 99 does not exist"),
        (["x"], "'x' is not a project id"),
    ],
)
def test_enqueue_rejects_bad_input_and_writes_nothing(run, args, message):
    # Given an imported project
    assert run("import", str(SAMPLE_PROJECT_PATH)).exit_code == 0
    before = row_counts()

    # When a job is enqueued with bad input
    result = run("enqueue", *args)

    # Then it fails with a clear message and no job is written
    assert result.exit_code == 2
    assert message in result.output
    assert row_counts() == before


def test_import_rejects_a_file_over_the_size_limit(settings, tmp_path):
    path = write_project(tmp_path, {"name": "x" * 50, "tasks": [{"key": "a", "title": "A"}]})
    small = settings.replace(MAX_CONTENT_LENGTH=20)
    result = CliRunner().invoke(cli, ["import", path], obj=small)
    assert result.exit_code == 2
    assert "at most 20 are allowed" in result.output


def test_status_of_an_unknown_job_is_a_usage_error(run):
    result = run("status", "42")
    assert result.exit_code == 2
    assert "job 42 does not exist" in result.output


def test_import_accepts_positions_as_keys_and_dependencies(run, tmp_path):
    # Given tasks without keys, depending on each other by 1-based position
    data = {
        "name": "Numbered",
        "tasks": [{"title": "First"}, {"title": "Second", "depends_on": [1]}],
    }

    # When the file is imported and run
    assert run("import", write_project(tmp_path, data)).exit_code == 0
    result = run("enqueue", "1", "--wait")

    # Then "depends_on": [1] meant the first task: the two ran as one pipeline
    assert result.exit_code == 0, result.output
    assert "(0 groups, 1 pipelines" in result.output
