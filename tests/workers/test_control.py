"""Cancel a job, rerun its failed tasks, repair stalled work: in-process, both databases."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from jobwatch import wait_for_job
from workerkit import Embedded, make_project

from db import control, jobs, listen
from workers import dispatch


def submit(project_id: int, batch_size: int = 5, strategy: str = "flow") -> int:
    return dispatch.submit(
        project_id, batch_size=batch_size, max_batch_size=50, max_tasks=1000, strategy=strategy
    )


def chain_project(length: int = 8) -> int:
    """Independent tasks, one per batch at batch size 1: batches run strictly one by one."""
    return make_project(*[f"t{i}" for i in range(length)])


def test_cancel_stops_the_job_and_later_batches_never_run(
    embedded_factory: Callable[..., Embedded], strategy: str
):
    # Given a job of 8 one-task batches (one task in flight), each task taking a while
    embedded_factory(GENERATOR_LATENCY_MS=150)
    job_id = submit(chain_project(), batch_size=1, strategy=strategy)

    # When it is cancelled while batch 3 runs
    for event in listen.watch(job_id):
        if event["type"] == "batch_started" and event["payload"]["batch"] == 3:
            assert control.cancel_job(job_id) is True
            break

    # Then the job ends cancelled, nothing after batch 3 was ever released, and every
    # unfinished run and batch ends cancelled
    job, events = wait_for_job(job_id)
    assert job["status"] == "cancelled" and job["finished_at"] is not None
    started = {e["payload"]["batch"] for e in events if e["type"] == "batch_started"}
    assert max(started) == 3
    statuses = [b["status"] for b in job["batches"]]
    assert statuses == ["completed", "completed", "cancelled"]
    never_released = job["unreleased"]
    assert len(never_released) == 5 and job["in_flight"] == 0
    assert {run["status"] for run in never_released} == {"cancelled"}
    assert all(run["attempts"] == 0 for run in never_released)
    assert job["done_tasks"] == job["total_tasks"] == 8
    assert job["cancelled_tasks"] + job["succeeded_tasks"] == 8

    # And cancelling again changes nothing
    assert control.cancel_job(job_id) is False
    assert jobs.snapshot(job_id)["event_seq"] == job["event_seq"]


def test_retry_reruns_only_the_failed_and_skipped_tasks(
    embedded_factory: Callable[..., Embedded], tmp_path, monkeypatch, strategy: str
):
    # Given a finished partial job: 3 flaky tasks failed (no retries) and one was
    # skipped because it depends on one of them
    monkeypatch.setenv("SCRIPTED_STATE_DIR", str(tmp_path))
    embedded_factory(MAX_RETRIES=0)
    project_id = make_project(
        "a",
        {"key": "f1", "title": "[flaky] F1"},
        {"key": "f2", "title": "[flaky] F2"},
        {"key": "f3", "title": "[flaky] F3", "depends_on": ["a"]},
        {"key": "d", "title": "D", "depends_on": ["f1", "f2"]},
    )
    first, _ = wait_for_job(submit(project_id, strategy=strategy))
    assert (first["status"], first["failed_tasks"], first["skipped_tasks"]) == ("partial", 3, 1)
    guides_before = {r["key"]: r["attempts"] for b in first["batches"] for r in b["runs"]}

    # When its failed tasks are retried
    retried = control.retry_job(first["id"])
    dispatch.send_all(retried.dispatches)
    job, events = wait_for_job(first["id"], after_seq=first["event_seq"])

    # Then only those 4 ran again, in new batches of the same job, and it succeeded
    assert retried.tasks == 4
    assert job["status"] == "succeeded" and job["succeeded_tasks"] == 5
    assert job["total_batches"] == len(job["batches"]) > first["total_batches"]
    reran = [r["key"] for b in job["batches"][first["total_batches"] :] for r in b["runs"]]
    assert sorted(reran) == ["d", "f1", "f2", "f3"]
    attempts = {r["key"]: r["attempts"] for b in job["batches"] for r in b["runs"]}
    assert attempts["a"] == guides_before["a"] == 1
    assert [e["type"] for e in events][:2] == ["job_retried", "batch_started"]
    assert sum(e["type"] == "job_finished" for e in events) == 1

    # And a job with nothing to retry says so
    with pytest.raises(control.NotRetryableError, match="only a partial or failed job"):
        control.retry_job(first["id"])


def test_the_reconciler_redispatches_a_batch_whose_messages_were_lost(embedded: Embedded):
    # Given a job written but whose first batch's messages never reached the broker
    project_id = make_project("a", "b", {"key": "c", "title": "C", "depends_on": ["a"]})
    created = jobs.create_job(project_id, batch_size=5, max_batch_size=50, max_tasks=100)
    assert embedded.enqueued == []

    # When the reconciler runs with a generous stall timeout, nothing is stalled yet
    assert dispatch.repair(stall_timeout_s=3600) == []
    assert embedded.enqueued == []

    # And when it runs once the batch has been silent longer than the timeout
    repairs = dispatch.repair(stall_timeout_s=0)

    # Then it re-dispatches the batches released at submit (the chain a -> c as a
    # pipeline, then b alone), and the job completes
    assert [r.description for r in repairs] == [
        "re-dispatched 2 stalled task(s) of batch 1",
        "re-dispatched 1 stalled task(s) of batch 2",
    ]
    job, events = wait_for_job(created.job_id)
    assert job["status"] == "succeeded"
    redispatched = [e["payload"]["tasks"] for e in events if e["type"] == "batch_redispatched"]
    assert redispatched == [2, 1]
    assert dispatch.repair(stall_timeout_s=0) == []
