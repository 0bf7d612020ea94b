"""Provider limits across real worker processes, against the local OpenAI-protocol server.

Two ``dramatiq workers`` processes of 8 threads each share one provider: the server
counts the requests it holds at once and when each arrived.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fake_openai import FakeOpenAI, FakeResponse, completion, error
from jobwatch import wait_for_job
from processkit import Cluster, assert_counted_exactly_once
from workerkit import make_project

import db
from db.models import AILimit, TaskRun
from workers import dispatch

pytestmark = pytest.mark.slow

#: How long the server takes to answer each guide, in seconds.
ANSWER_S = 0.3


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def guides(count: int, answer_s: float = ANSWER_S) -> list[FakeResponse]:
    return [
        dataclasses.replace(completion(f"# Hands-on {n}\n\nDo it."), delay_s=answer_s)
        for n in range(count)
    ]


def start_workers(cluster: Cluster, api: FakeOpenAI, **limits: str) -> None:
    env = {
        "GENERATOR": "openai",
        "OPENAI_BASE_URL": api.url,
        "OPENAI_API_KEY": "sk-test",
        **limits,
    }
    for _ in range(2):
        cluster.start_worker(threads=8, **env)


def run_job(tasks: int, chain: int = 0, timeout: float = 60) -> dict:
    """Run a job of ``tasks`` tasks, the last ``chain`` of them a chain (sent as a pipeline)."""
    keys = [f"task-{n}" for n in range(tasks)]
    linked = [
        {"key": key, "title": key, "depends_on": [keys[n - 1]]}
        if n > tasks - chain
        else {"key": key, "title": key}
        for n, key in enumerate(keys)
    ]
    project_id = make_project(*linked)
    job_id = dispatch.submit(
        project_id, batch_size=tasks, max_batch_size=50, max_tasks=100, max_in_flight=tasks
    )
    job, _ = wait_for_job(job_id, timeout=timeout)
    return job


def most_in_any_minute(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + 60) for i, start in enumerate(times))


def attempts_of(job_id: int) -> list[int]:
    with db.session_scope() as session:
        return sorted(session.scalars(sa.select(TaskRun.attempts).where(TaskRun.job_id == job_id)))


def test_calls_in_flight_and_per_minute_hold_across_processes(cluster: Cluster, api: FakeOpenAI):
    # Given 2 worker processes x 8 threads, limited to 2 calls at once and 30 a minute
    api.script(guides(12))
    start_workers(cluster, api, AI_MAX_CONCURRENT="2", AI_REQUESTS_PER_MINUTE="30")

    # When a job of 12 tasks runs: 8 independent ones, released at once, and a chain of 4
    # (a pipeline: each step waits its turn too)
    job = run_job(12, chain=4)

    # Then every guide is written, the server never held more than 2 requests at once
    # (and did hold 2), nor saw more than 30 in any 60 s
    assert_counted_exactly_once(job)
    assert len(api.requests) == 12
    assert api.peak_in_flight == 2
    assert most_in_any_minute([r.at for r in api.requests]) <= 30
    # And the tasks that waited for their turn made one attempt each, none failed
    assert attempts_of(job["id"]) == [1] * 12
    times = sorted(r.at for r in api.requests)
    waits = sum(cluster.log_of(p).count("AI limit (") for p in cluster.processes)
    print(
        f"limits 2 at once, 30/min: server peak {api.peak_in_flight} at once, 12 requests "
        f"in {times[-1] - times[0]:.2f} s (most in 60 s: {most_in_any_minute(times)}), "
        f"{waits} waits"
    )


def test_a_slot_given_back_wakes_one_waiter_at_once(cluster: Cluster, api: FakeOpenAI):
    # Given 2 worker processes x 8 threads allowed 1 call at a time, and a re-check timer
    # (the design this replaced, still read by an older worker) of 10 minutes
    api.script(guides(8))
    start_workers(cluster, api, AI_MAX_CONCURRENT="1", AI_LIMIT_RECHECK_MS="600000")

    # When a job of 8 independent tasks runs, all released at once
    job = run_job(8, timeout=30)

    # Then it finishes in seconds: each waiting task was woken when the slot was given
    # back, not after a re-check interval
    assert_counted_exactly_once(job)
    assert (len(api.requests), api.peak_in_flight) == (8, 1)
    arrivals = sorted(r.at for r in api.requests)
    hand_overs = [b - (a + ANSWER_S) for a, b in itertools.pairwise(arrivals)]
    assert max(hand_overs) < 2.0
    # And each slot given back woke exactly one task: one call and one attempt per task
    assert attempts_of(job["id"]) == [1] * 8
    parked = sum(cluster.log_of(p).count("waits for a call slot") for p in cluster.processes)
    assert parked >= 4
    print(
        f"1 at once, 8 tasks of {ANSWER_S} s: {parked} parked, hand-over (slot given back -> "
        f"next request) mean {1000 * sum(hand_overs) / len(hand_overs):.0f} ms, "
        f"max {1000 * max(hand_overs):.0f} ms"
    )


def test_a_429_s_retry_after_pauses_every_process(cluster: Cluster, api: FakeOpenAI):
    # Given 2 worker processes x 8 threads, 2 calls at once, and a server whose first answer
    # is a 429 with Retry-After: 2
    api.script([error(429, "slow down", Retry_After="2"), *guides(8, answer_s=0.6)])
    start_workers(cluster, api, AI_MAX_CONCURRENT="2")

    # When a job of 8 tasks runs
    job = run_job(8)

    # Then every guide is written (the 429's task on its next attempt)
    assert_counted_exactly_once(job)
    assert attempts_of(job["id"]) == [1] * 7 + [2]
    # And once the 429 was known (a moment after it was answered), no request reached the
    # server for 2 s, from any thread of either process
    with db.session_scope() as session:
        paused_until = session.scalar(sa.select(AILimit.paused_until)).timestamp()
    rate_limited, *others = api.requests
    assert rate_limited.at <= paused_until - 2 < rate_limited.at + 0.5
    arrivals = [r.at for r in others]
    assert not [t for t in arrivals if paused_until - 2 <= t < paused_until]
    assert max(arrivals) >= paused_until
    print(
        f"429 at +0.000 s, pause from +{paused_until - 2 - rate_limited.at:.3f} s to "
        f"+{paused_until - rate_limited.at:.3f} s; arrivals at "
        + ", ".join(f"+{t - rate_limited.at:.3f}" for t in sorted(arrivals))
    )
