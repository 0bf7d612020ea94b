"""Test helper: wait for a job's end through the pushed event stream, with a deadline."""

from __future__ import annotations

import threading
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
