"""Failures, skips and redelivery: every outcome counted once, the job goes on."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from jobwatch import wait_for_job
from workerkit import Embedded, make_project

from db import session_scope
from db.models import Batch, Event, HandsOn, TaskRun
from workers import dispatch


def submit(embedded: Embedded, project_id: int, strategy: str, batch_size: int = 5) -> int:
    return dispatch.submit(
        project_id, batch_size=batch_size, max_batch_size=50, max_tasks=1000, strategy=strategy
    )


def runs_by_key(job: dict) -> dict[str, dict]:
    return {run["key"]: run for batch in job["batches"] for run in batch["runs"]}


def test_a_task_that_always_fails_ends_failed_and_the_job_ends_partial(
    embedded: Embedded, strategy: str
):
    # Given a group with a failing task, a pipeline with a failing middle step, and a
    # task that depends on the failing group task
    project_id = make_project(
        "a",
        {"key": "y", "title": "[fail] Y"},
        "c1",
        {"key": "c2", "title": "[fail] C2", "depends_on": ["c1"]},
        {"key": "c3", "title": "C3", "depends_on": ["c2"]},
        {"key": "d", "title": "D", "depends_on": ["a", "y"]},
    )

    # When the job runs (MAX_RETRIES is 1 in the test settings)
    job, events = wait_for_job(submit(embedded, project_id, strategy))

    # Then failures are final after the retries, later pipeline steps and dependents are
    # skipped, every batch still completes, and the job ends partial
    assert [(b["mode"], b["status"]) for b in job["batches"]] == [
        ("group", "completed"),
        ("pipeline", "completed"),
        ("group", "completed"),
    ]
    runs = runs_by_key(job)
    assert {key: run["status"] for key, run in runs.items()} == {
        "a": "succeeded",
        "y": "failed",
        "c1": "succeeded",
        "c2": "failed",
        "c3": "skipped",
        "d": "skipped",
    }
    assert runs["y"]["attempts"] == 2 and "scripted failure for y" in runs["y"]["error"]
    assert runs["c3"]["attempts"] == 0 and "earlier step failed" in runs["c3"]["error"]
    assert "'y'" in runs["d"]["error"]
    assert (job["status"], job["succeeded_tasks"], job["failed_tasks"], job["skipped_tasks"]) == (
        "partial",
        2,
        2,
        2,
    )
    assert [(b["done"], b["failed"], b["skipped"]) for b in job["batches"]] == [
        (2, 1, 0),
        (3, 1, 1),
        (1, 0, 1),
    ]
    assert sum(e["type"] == "task_retrying" for e in events) == 2


def test_a_job_whose_every_task_fails_ends_failed(embedded: Embedded, strategy: str):
    project_id = make_project({"key": "x", "title": "[fail] X"}, {"key": "z", "title": "[fail] Z"})
    job, _ = wait_for_job(submit(embedded, project_id, strategy))
    assert (job["status"], job["failed_tasks"]) == ("failed", 2)


def _counts(job_id: int) -> dict[str, object]:
    with session_scope() as session:
        return {
            "events": session.scalar(
                sa.select(sa.func.count(Event.id)).where(Event.job_id == job_id)
            ),
            "finished": session.scalar(
                sa.select(sa.func.count(Event.id)).where(
                    Event.job_id == job_id, Event.type == "job_finished"
                )
            ),
            "dispatches": session.scalars(
                sa.select(Batch.dispatches).where(Batch.job_id == job_id).order_by(Batch.index)
            ).all(),
            "attempts": session.scalars(
                sa.select(TaskRun.attempts).where(TaskRun.job_id == job_id).order_by(TaskRun.id)
            ).all(),
            "guides": session.scalar(sa.select(sa.func.count(HandsOn.id))),
        }


def test_a_message_delivered_twice_is_counted_once(embedded: Embedded, strategy: str):
    # Given a finished job of two batches (a, b) then (c)
    project_id = make_project("a", "b", {"key": "c", "title": "C", "depends_on": ["a", "b"]})
    job_id = submit(embedded, project_id, strategy)
    job, _ = wait_for_job(job_id)
    assert job["status"] == "succeeded"
    before = _counts(job_id)
    sent = list(embedded.enqueued)
    assert len(sent) == 3  # one message per task: batch 2 was dispatched exactly once

    # When every message of the job is delivered a second time
    for message in sent:
        embedded.broker.enqueue(message)
    embedded.broker.join(embedded.settings.QUEUE_NAME)
    embedded.worker.worker.join()

    # Then nothing is counted again: no new event, no new dispatch, no new attempt
    assert _counts(job_id) == before
    assert before["dispatches"] == [1, 1] and before["finished"] == 1
    assert len(embedded.enqueued) == 2 * len(sent)  # only our own re-deliveries


def test_concurrent_duplicates_of_a_running_message_are_counted_once(
    embedded_factory: Callable[..., Embedded], strategy: str
):
    # Given a slow single-task job whose message is delivered twice at once
    embedded = embedded_factory(GENERATOR_LATENCY_MS=300)
    project_id = make_project("solo", "next")
    job_id = submit(embedded, project_id, strategy, batch_size=1)
    embedded.broker.enqueue(embedded.enqueued[0])

    # When the job ends
    job, events = wait_for_job(job_id)

    # Then the task ran twice but was counted once, and batch 2 was dispatched once
    assert job["status"] == "succeeded"
    assert job["done_tasks"] == 2 and job["batches"][0]["done"] == 1
    assert sum(e["type"] == "task_succeeded" for e in events) == 2
    assert sum(e["type"] == "batch_started" for e in events) == 2
    assert _counts(job_id)["dispatches"] == [1, 1]
    assert sum(e["type"] == "job_finished" for e in events) == 1
