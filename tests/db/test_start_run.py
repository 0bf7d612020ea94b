"""Starting and finishing a task run: once per attempt, each change an announced event."""

from __future__ import annotations

import sqlalchemy as sa
from workerkit import make_project

import db
from db import jobs, notify, progress, starts
from db.models import Event, RunStatus, TaskRun


def job_events(job_id: int) -> list[tuple[int, str, dict]]:
    with db.session_scope() as session:
        rows = session.execute(
            sa.select(Event.seq, Event.type, Event.payload)
            .where(Event.job_id == job_id)
            .order_by(Event.seq)
        )
        return [tuple(row) for row in rows]


def test_each_start_and_the_outcome_are_numbered_announced_events(database_url: str):
    # Given a job of one task, and this process's announcements being recorded
    db.configure(database_url)
    job_id = jobs.create_job(
        make_project("a"), batch_size=5, max_batch_size=50, max_tasks=10
    ).job_id
    with db.session_scope() as session:
        run_id, task_id = session.execute(
            sa.select(TaskRun.id, TaskRun.task_id).where(TaskRun.job_id == job_id)
        ).one()
    before = job_events(job_id)
    announced: list[tuple[int, int]] = []

    def record(_sender: object, *, job_id: int, seq: int) -> None:
        announced.append((job_id, seq))

    notify.job_event.connect(record)
    try:
        # When the run starts, fails once (to be retried), starts again, then succeeds
        # and its message is delivered once more
        first = starts.start_run(run_id)
        progress.record_retry(run_id, "boom")
        second = starts.start_run(run_id)
        progress.record_outcome(run_id, RunStatus.SUCCEEDED)
        redelivered = starts.start_run(run_id)
    finally:
        notify.job_event.disconnect(record)

    # Then both attempts started, each with its own numbered event, and the redelivery
    # did nothing
    assert [first.decision, second.decision] == [starts.Start.RUN, starts.Start.RUN]
    assert redelivered.decision is starts.Start.DUPLICATE
    new = job_events(job_id)[len(before) :]
    last_seq = before[-1][0]
    assert [seq for seq, _, _ in new] == list(range(last_seq + 1, last_seq + 1 + len(new)))
    started = [payload for _, kind, payload in new if kind == "task_started"]
    assert started == [
        {"run": run_id, "task": task_id, "attempt": 1},
        {"run": run_id, "task": task_id, "attempt": 2},
    ]
    # And the outcome's events carry the job's counters after it
    counters = {
        "done": 1,
        "total": 1,
        "succeeded": 1,
        "failed": 0,
        "skipped": 0,
        "cancelled": 0,
        "in_flight": 0,
        # No guide was stored: no AI usage to add
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost": 0,
    }
    finished = {kind: payload for _, kind, payload in new if kind != "task_started"}
    assert finished["task_succeeded"] == {
        "run": run_id,
        "task": task_id,
        "error": None,
        "job": counters,
    }
    assert finished["batch_completed"]["job"] == counters
    assert finished["job_finished"] == {"status": "succeeded"}
    # Every commit was announced in this process, in order, ending at the newest event
    assert [job for job, _ in announced] == [job_id] * len(announced)
    assert [seq for _, seq in announced] == sorted(seq for _, seq in announced)
    assert announced[-1][1] == new[-1][0]
