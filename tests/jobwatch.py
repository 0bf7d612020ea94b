"""Test helper: wait for a job's end through the pushed event stream, with a deadline."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from db import jobs, listen


def wait_for_job(
    job_id: int, timeout: float = 60.0, *, after_seq: int = 0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Follow the job's events after ``after_seq`` until it ends; return its snapshot and them.

    Raises:
      AssertionError: when the job has not ended within ``timeout`` seconds.
    """
    seen: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            seen.extend(listen.watch(job_id, after_seq))
        except BaseException as error:  # surfaced to the test below
            errors.append(error)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(timeout)
    if errors:
        raise errors[0]
    snapshot = jobs.snapshot(job_id)
    assert not thread.is_alive(), f"job {job_id} did not end in {timeout} s: {snapshot['status']}"
    return snapshot, seen


def wait_for_event(
    job_id: int, matches: Callable[[dict[str, Any]], bool], timeout: float = 60.0
) -> dict[str, Any]:
    """Follow the job's events until one ``matches``; return it.

    Raises:
      AssertionError: when no such event came within ``timeout`` seconds.
    """
    found: list[dict[str, Any]] = []

    def consume() -> None:
        for event in listen.watch(job_id):
            if matches(event):
                found.append(event)
                return

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(timeout)
    assert found, f"no matching event of job {job_id} in {timeout} s"
    return found[0]


def batch_started(index: int) -> Callable[[dict[str, Any]], bool]:
    """Match the event of batch ``index`` starting."""
    return lambda e: e["type"] == "batch_started" and e["payload"]["batch"] == index


def assert_flowed(job: dict[str, Any], events: list[dict[str, Any]], deps: dict[str, Any]) -> None:
    """Every task started after all it depends on had succeeded, within the job's cap.

    ``deps`` maps each task key to the keys it depends on; ``events`` are the job's, in
    order of their sequence numbers (commit order).
    """
    key_of = {run["id"]: run["key"] for batch in job["batches"] for run in batch["runs"]}
    # A pipeline's next step is sent as its previous one returns, before that outcome is
    # committed: within a pipeline, the step before counts as done.
    step_before = {
        later["key"]: earlier["key"]
        for batch in job["batches"]
        if batch["mode"] == "pipeline"
        for earlier, later in itertools.pairwise(batch["runs"])
    }
    succeeded: set[str] = set()
    for event in events:
        payload = event["payload"]
        if event["type"] == "task_succeeded":
            succeeded.add(key_of[payload["run"]])
        elif event["type"] == "task_started":
            key = key_of[payload["run"]]
            needed = set(deps[key]) - {step_before.get(key)}
            assert needed <= succeeded, f"{key} started before {needed} succeeded"
    in_flight = [e["payload"]["job"]["in_flight"] for e in events if "job" in e["payload"]]
    assert in_flight and max(in_flight) <= job["max_in_flight"]
