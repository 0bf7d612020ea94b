"""The sample job on real Redis + PostgreSQL with a real ``dramatiq workers`` process."""

from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa
from jobwatch import assert_flowed, wait_for_job
from test_jobs_embedded import assert_batches_in_order
from workerkit import fast_settings

import db
from db import projects
from db.models import HandsOn
from samples import SAMPLE_PROJECT_PATH, load_sample
from workers import broker as worker_setup
from workers import dispatch


def test_the_sample_job_succeeds_on_redis_and_postgresql(
    redis_url, postgres_url, processes, strategy: str
):
    # Given the sample project in PostgreSQL, this process sending to Redis, and a worker
    worker_setup.configure(fast_settings(postgres_url, REDIS_URL=redis_url))
    spec = projects.parse_project(load_sample(), max_tasks=1000)
    project_id = projects.create_project(spec)
    worker = processes.start_worker()

    # When a job is submitted
    job_id = dispatch.submit(
        project_id, batch_size=5, max_batch_size=50, max_tasks=1000, strategy=strategy
    )

    # Then the worker process runs it to success, and this process hears every event
    # through PostgreSQL LISTEN/NOTIFY
    job, events = wait_for_job(job_id, timeout=120)
    assert worker.poll() is None
    assert job["status"] == "succeeded"
    assert job["succeeded_tasks"] == 62
    assert job["completed_batches"] == job["total_batches"] == len(job["batches"])
    with db.session_scope() as session:
        assert session.scalar(sa.select(sa.func.count(HandsOn.id))) == 62
    assert [e["seq"] for e in events] == list(range(1, job["event_seq"] + 1))
    assert_flowed(job, events, {task.key: task.depends_on for task in spec.tasks})
    if strategy == "batches":
        assert job["total_batches"] == 13
        assert_batches_in_order(job, events)


def test_the_cli_enqueues_and_follows_a_job_over_redis(processes):
    # Given a worker process and the sample imported through the CLI
    processes.start_worker()
    env = processes.env()
    handson = [sys.executable, "-m", "cli"]
    imported = subprocess.run(
        [*handson, "import", str(SAMPLE_PROJECT_PATH)], env=env, capture_output=True, text=True
    )
    assert imported.returncode == 0, imported.stderr

    # When the CLI enqueues a job and waits for it
    result = subprocess.run(
        [*handson, "enqueue", "1", "--batch-size", "5", "--wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )

    # Then it follows pushed events to the end and exits 0
    assert result.returncode == 0, result.stderr
    assert "Enqueued job 1." in result.stdout
    assert "62/62 tasks" in result.stdout and ": succeeded" in result.stdout
