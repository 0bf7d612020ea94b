"""A run that cannot be marked started never reaches the generator; it is retried, counted once."""

from __future__ import annotations

import collections
from typing import Any

import pytest
from jobwatch import wait_for_job
from workerkit import Embedded, make_project, submit

from db import starts


def _failing_start(monkeypatch: pytest.MonkeyPatch, *, times: int) -> list[int]:
    """Make the first ``times`` starts raise as a database outage would; return the tries."""
    original = starts.start_run
    tries: list[int] = []

    def start_run(run_id: int, prepare: Any = None) -> starts.Started:
        tries.append(run_id)
        if len(tries) <= times:
            raise OSError("connection to the database was lost")
        return original(run_id, prepare)

    monkeypatch.setattr(starts, "start_run", start_run)
    return tries


@pytest.mark.both_strategies
def test_a_start_that_fails_once_is_retried_and_runs_once(
    embedded: Embedded, generated: collections.Counter[str], monkeypatch: pytest.MonkeyPatch
):
    # Given a one-task job whose first start fails (database down for a moment)
    tries = _failing_start(monkeypatch, times=1)
    job_id = submit(make_project("solo"))

    # When the job ends
    job, events = wait_for_job(job_id)

    # Then the message was retried: the generator ran once, on the start that worked,
    # and the outcome was counted once
    assert len(tries) == 2
    assert generated == {"solo": 1}
    run = job["batches"][0]["runs"][0]
    assert (job["status"], job["done_tasks"], run["status"], run["attempts"]) == (
        "succeeded",
        1,
        "succeeded",
        1,
    )
    retrying = [e for e in events if e["type"] == "task_retrying"]
    assert len(retrying) == 1 and "could not start" in retrying[0]["payload"]["error"]
    assert sum(e["type"] == "task_succeeded" for e in events) == 1


@pytest.mark.both_strategies
def test_a_start_that_always_fails_never_calls_the_generator(
    embedded: Embedded, generated: collections.Counter[str], monkeypatch: pytest.MonkeyPatch
):
    # Given a job whose starts all fail (MAX_RETRIES is 1 in the test settings)
    tries = _failing_start(monkeypatch, times=1_000)
    job_id = submit(make_project("solo"))

    # When the job ends
    job, _ = wait_for_job(job_id)

    # Then no AI call was paid for, and the run failed for good, counted once
    assert len(tries) == 2
    assert generated == {}
    run = job["batches"][0]["runs"][0]
    assert (job["status"], job["failed_tasks"], job["done_tasks"]) == ("failed", 1, 1)
    assert run["status"] == "failed" and "could not start" in run["error"]
