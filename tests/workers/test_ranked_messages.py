"""Every task message the engine sends carries its run's rank: submit, pipeline steps,
retry and repair, on both databases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from jobwatch import wait_for_job
from workerkit import Embedded, make_project

import db
from db import control, jobs
from db.models import Task, TaskRun
from workers import dispatch

#: a; then the chain b -> c -> d and e, both after a; then f after d and e.
TASKS = (
    "a",
    {"key": "b", "title": "B", "depends_on": ["a"]},
    {"key": "c", "title": "C", "depends_on": ["b"]},
    {"key": "d", "title": "D", "depends_on": ["c"]},
    {"key": "e", "title": "E", "depends_on": ["a"]},
    {"key": "f", "title": "F", "depends_on": ["d", "e"]},
)
#: Their ranks. Flow: the longest chain of dependents (b, c, d go as one pipeline).
#: Batches (at 5): a, then pipeline (b, c, d), then e, then f, each after the one before.
RANKS = {
    "flow": {"a": 5, "b": 4, "c": 3, "d": 2, "e": 2, "f": 1},
    "batches": {"a": 6, "b": 5, "c": 4, "d": 3, "e": 2, "f": 1},
}


def _runs(job_id: int) -> dict[int, tuple[str, int]]:
    """Return each run of the job: its task key and its stored rank, by run id."""
    with db.session_scope() as session:
        rows = session.execute(
            sa.select(TaskRun.id, Task.key, TaskRun.rank)
            .join(Task, Task.id == TaskRun.task_id)
            .where(TaskRun.job_id == job_id)
        ).all()
    return {row.id: (row.key, row.rank) for row in rows}


def _sent(enqueued: list[Any], runs: dict[int, tuple[str, int]]) -> list[tuple[str, Any]]:
    """Return (task key, rank option) of each message sent for the job's runs, in order."""
    return [(runs[m.args[0]][0], m.options.get("rank")) for m in enqueued if m.args[0] in runs]


def test_a_job_s_every_message_carries_its_run_s_rank(embedded: Embedded, strategy: str):
    # Given a project with a pipeline, a side task and a join
    project_id = make_project(*TASKS)

    # When a job of it runs to the end
    job_id = dispatch.submit(
        project_id, batch_size=5, max_batch_size=50, max_tasks=100, strategy=strategy
    )
    job, _ = wait_for_job(job_id)

    # Then every run stored its rank, and every message (a pipeline's later steps,
    # enqueued by Dramatiq's Pipelines middleware, included) carried it
    assert job["status"] == "succeeded"
    runs = _runs(job_id)
    assert dict(runs.values()) == RANKS[strategy]
    assert sorted(_sent(embedded.enqueued, runs)) == sorted(RANKS[strategy].items())


def test_a_retry_ranks_the_tasks_it_reruns_within_their_new_plan(
    embedded_factory: Callable[..., Embedded], tmp_path, monkeypatch
):
    # Given a partial job of four independent tasks run one batch at a time, the first
    # two failed (no retries): each batch waits for the one before, so 4, 3, 2, 1
    monkeypatch.setenv("SCRIPTED_STATE_DIR", str(tmp_path))
    embedded = embedded_factory(MAX_RETRIES=0)
    project_id = make_project(
        {"key": "f1", "title": "[flaky] F1"}, {"key": "f2", "title": "[flaky] F2"}, "b", "c"
    )
    first, _ = wait_for_job(
        dispatch.submit(
            project_id, batch_size=1, max_batch_size=50, max_tasks=100, strategy="batches"
        )
    )
    assert (first["status"], first["failed_tasks"]) == ("partial", 2)
    assert dict(_runs(first["id"]).values()) == {"f1": 4, "f2": 3, "b": 2, "c": 1}
    embedded.enqueued.clear()

    # When its failed tasks are retried
    retried = control.retry_job(first["id"])
    dispatch.send_all(retried.dispatches)
    job, _ = wait_for_job(first["id"], after_seq=first["event_seq"])

    # Then the two reruns are ranked in their own plan (f1 before f2), in their rows and
    # in their messages, and the job succeeds
    assert job["status"] == "succeeded"
    runs = _runs(first["id"])
    assert dict(runs.values()) == {"f1": 2, "f2": 1, "b": 2, "c": 1}
    assert _sent(embedded.enqueued, runs) == [("f1", 2), ("f2", 1)]


def test_a_batch_the_reconciler_sends_again_keeps_its_ranks(embedded: Embedded):
    # Given a flow job written but whose first release never reached the broker
    project_id = make_project(*TASKS)
    created = jobs.create_job(project_id, batch_size=5, max_batch_size=50, max_tasks=100)
    assert created.dispatches[0].ranks == (5,)
    assert embedded.enqueued == []

    # When the reconciler sends it again
    dispatch.repair(stall_timeout_s=0)
    job, _ = wait_for_job(created.job_id)

    # Then the message it sent, and every one after it, carried the run's rank
    assert job["status"] == "succeeded"
    sent = _sent(embedded.enqueued, _runs(created.job_id))
    assert sent[0] == ("a", 5)
    assert sorted(sent) == sorted(RANKS["flow"].items())
