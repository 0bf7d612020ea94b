"""Fault injection with real processes: nothing lost, nothing counted twice.

Each test runs the 62-task sample job on real Redis and PostgreSQL with real
``dramatiq workers`` processes (and the scheduler where repairs are needed), injects
one fault, and checks that the job ends ``succeeded`` with every count recorded once.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
import uuid

import pytest
from jobwatch import batch_started, wait_for_event, wait_for_job
from processkit import Cluster, assert_counted_exactly_once

from db import control, jobs
from workers import dispatch
from workers.actors.generate import generate_hands_on

pytestmark = pytest.mark.slow


def submit(project_id: int, strategy: str) -> int:
    return dispatch.submit(
        project_id, batch_size=5, max_batch_size=50, max_tasks=1000, strategy=strategy
    )


def repairs(events: list[dict]) -> list[dict]:
    return [e["payload"] for e in events if e["type"] == "batch_redispatched"]


def test_a_killed_worker_s_tasks_are_finished_by_another(
    cluster: Cluster, sample_project_id, strategy: str
):
    # Given a job running on one worker, with the scheduler watching
    victim = cluster.start_worker()
    cluster.start_scheduler()
    job_id = submit(sample_project_id, strategy)

    # When that worker is killed with -9 while batch 3 runs, and another worker starts
    wait_for_event(job_id, batch_started(3))
    cluster.kill(victim)
    killed_at = time.monotonic()
    cluster.start_worker()

    # Then the reconciler re-dispatches the dead worker's batch and the job succeeds
    job, events = wait_for_job(job_id, timeout=90)
    assert_counted_exactly_once(job)
    assert repairs(events), "the killed worker held batch 3: it had to be re-dispatched"
    print(f"kill -9: job done {time.monotonic() - killed_at:.1f} s after the kill")


def _lose_queued_messages(cluster: Cluster, job_id: int, lose) -> None:  # type: ignore[no-untyped-def]
    """Run the job on a one-thread worker; pause it in batch 3 and ``lose`` Redis's data."""
    worker = cluster.start_worker(threads=1)
    cluster.start_scheduler()
    wait_for_event(job_id, batch_started(3), timeout=60)
    # Paused, the worker holds at most its prefetch (2); the rest of batch 3 is in Redis.
    os.kill(worker.pid, signal.SIGSTOP)
    for child in _children(worker.pid):
        os.kill(child, signal.SIGSTOP)
    try:
        lose()
    finally:
        for pid in [worker.pid, *_children(worker.pid)]:
            os.kill(pid, signal.SIGCONT)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_flushed_redis_loses_messages_and_the_reconciler_recovers(
    cluster: Cluster, redis_server, sample_project_id, strategy: str
):
    # Given a job running
    job_id = submit(sample_project_id, strategy)

    # When Redis is flushed in the middle of the job (every queued message lost)
    def flush() -> None:
        with redis_server.client() as client:
            client.flushall()

    _lose_queued_messages(cluster, job_id, flush)
    flushed_at = time.monotonic()

    # Then the reconciler re-dispatches what was lost and the job succeeds
    job, events = wait_for_job(job_id, timeout=90)
    assert_counted_exactly_once(job)
    assert repairs(events)
    print(f"FLUSHALL: job done {time.monotonic() - flushed_at:.1f} s after the flush")


def test_a_restarted_redis_without_persistence_loses_nothing_for_good(
    cluster: Cluster, redis_server, sample_project_id, strategy: str
):
    job_id = submit(sample_project_id, strategy)
    _lose_queued_messages(cluster, job_id, redis_server.restart)
    restarted_at = time.monotonic()
    job, events = wait_for_job(job_id, timeout=90)
    assert_counted_exactly_once(job)
    assert repairs(events)
    print(f"Redis restart: job done {time.monotonic() - restarted_at:.1f} s after the restart")


def test_a_restarted_postgresql_loses_no_task_outcome(
    cluster: Cluster, sample_project_id, strategy: str
):
    # Given a job running on two workers with the scheduler
    cluster.start_worker()
    cluster.start_worker()
    cluster.start_scheduler()
    job_id = submit(sample_project_id, strategy)
    wait_for_event(job_id, batch_started(3))

    # When PostgreSQL restarts in the middle of the job
    prefix = shlex.split(os.environ.get("TEST_PG_USER_PREFIX", ""))
    pg_ctl = os.path.join(os.environ["TEST_PG_BINDIR"], "pg_ctl")
    # -l: the restarted server must not inherit (and hold open) a pipe of ours.
    subprocess.run(
        [
            *prefix,
            pg_ctl,
            "-D",
            os.environ["TEST_PG_DATADIR"],
            "-l",
            os.environ["TEST_PG_LOG"],
            "restart",
            "-m",
            "fast",
            "-w",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )
    restarted_at = time.monotonic()

    # Then workers, scheduler and this listener reconnect, and the job succeeds once
    job, _ = wait_for_job(job_id, timeout=90)
    assert_counted_exactly_once(job)
    print(f"PostgreSQL restart: job done {time.monotonic() - restarted_at:.1f} s after it")


def test_the_same_task_message_delivered_three_times_is_counted_once(
    cluster: Cluster, sample_project_id, strategy: str
):
    # Given a job whose first task's message is sent three more times at once
    job_id = submit(sample_project_id, strategy)
    first_run = jobs.snapshot(job_id)["batches"][0]["runs"][0]["id"]
    for _ in range(3):
        message = generate_hands_on.message(first_run)
        generate_hands_on.broker.enqueue(message.copy(message_id=str(uuid.uuid4())))

    # When two workers run the job
    cluster.start_worker()
    cluster.start_worker()

    # Then it succeeds and the task was counted once
    job, events = wait_for_job(job_id, timeout=90)
    assert_counted_exactly_once(job)
    succeeded = [e for e in events if e["type"] == "task_succeeded"]
    assert sum(e["payload"]["run"] == first_run for e in succeeded) == 1


def test_sigterm_to_a_worker_mid_task_loses_no_message(
    cluster: Cluster, sample_project_id, strategy: str
):
    # Given a job running on one worker with slow tasks
    worker = cluster.start_worker(GENERATOR_LATENCY_MS="800")
    job_id = submit(sample_project_id, strategy)
    wait_for_event(job_id, lambda e: e["type"] == "task_started")

    # When the worker gets SIGTERM during a task
    os.killpg(worker.pid, signal.SIGTERM)
    started = time.monotonic()
    worker.wait(timeout=30)
    stopped_in = time.monotonic() - started

    # Then it stops gracefully within the platform's 30 s, although the whole process
    # group got the signal (as on a Procfile platform) and Dramatiq's master forwarded it
    log = cluster.log_of(worker)
    assert "Stopping worker process" in log and "Killing worker process" not in log

    # And its in-flight tasks finished, its prefetched messages went back to the queue:
    # a new worker completes the job at once, without any repair
    cluster.start_worker()
    restarted = time.monotonic()
    job, events = wait_for_job(job_id, timeout=60)
    assert_counted_exactly_once(job)
    assert repairs(events) == []
    done_in = time.monotonic() - restarted
    print(f"SIGTERM: worker stopped in {stopped_in:.1f} s, job done {done_in:.1f} s later")


def test_cancel_during_batch_5_stops_everything_after_it(
    cluster: Cluster, sample_project_id, strategy: str
):
    # Given a job running on two workers
    cluster.start_worker()
    cluster.start_worker()
    job_id = submit(sample_project_id, strategy)

    # When it is cancelled as batch 5 starts
    wait_for_event(job_id, batch_started(5))
    assert control.cancel_job(job_id)

    # Then every unfinished run ended cancelled, what was never released never started,
    # and once the workers have finished what they held, nothing moved after the cancel
    job, events = wait_for_job(job_id, timeout=60)
    cluster.stop_all()
    assert job["status"] == "cancelled"
    never_released = job["unreleased"]
    assert never_released and {r["status"] for r in never_released} == {"cancelled"}
    assert all(r["attempts"] == 0 and r["started_at"] is None for r in never_released)
    assert {b["status"] for b in job["batches"]} <= {"completed", "cancelled"}
    assert job["succeeded_tasks"] + job["cancelled_tasks"] == 62
    assert events[-1]["type"] == "job_cancelled"
    assert jobs.snapshot(job_id)["event_seq"] == events[-1]["seq"]


def test_retry_after_three_failures_reruns_only_those(cluster: Cluster, tmp_path, strategy: str):
    # Given the sample with three tasks that fail at their first attempt, no retries
    from db import projects
    from samples import load_sample

    data = load_sample()
    needed = {dep for task in data["tasks"] for dep in task.get("depends_on", [])}
    leaves = [task for task in data["tasks"] if task["key"] not in needed][:3]
    for task in leaves:
        task["title"] = "[flaky] " + task["title"]
    project_id = projects.create_project(projects.parse_project(data, max_tasks=1000))
    cluster.extra_env.update(MAX_RETRIES="0", SCRIPTED_STATE_DIR=str(tmp_path))
    cluster.start_worker()
    first, _ = wait_for_job(submit(project_id, strategy), timeout=90)
    assert (first["status"], first["failed_tasks"]) == ("partial", 3)

    # When its failed tasks are retried
    retried = control.retry_job(first["id"])
    dispatch.send_all(retried.dispatches)
    job, events = wait_for_job(first["id"], timeout=60, after_seq=first["event_seq"])

    # Then exactly those three ran again, and the job ends succeeded
    reran = [e["payload"]["task"] for e in events if e["type"] == "task_started"]
    failed = [r["task_id"] for b in first["batches"] for r in b["runs"] if r["status"] == "failed"]
    assert sorted(reran) == sorted(failed)
    assert job["status"] == "succeeded" and job["succeeded_tasks"] == 62
