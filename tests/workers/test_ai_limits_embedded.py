"""Provider limits in the embedded mode: in-memory broker, worker threads, both databases."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from fake_openai import FakeOpenAI, completion
from jobwatch import wait_for_job
from redis_kit import wait_until
from workerkit import Embedded, make_project, submit

from db import limits, session_scope
from db.limit_slots import FREE
from db.models import AISlot, AIWaiter, TaskRun
from workers import dispatch, scheduler
from workers.middleware.ai_limits import limits_of


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def one_call_at_a_time(
    embedded_factory: Callable[..., Embedded], api: FakeOpenAI
) -> Callable[[int], Embedded]:
    """Start an embedded worker of ``threads`` threads on ``api``, 1 AI call at a time."""

    def start(threads: int) -> Embedded:
        return embedded_factory(
            threads=threads,
            GENERATOR="openai",
            OPENAI_BASE_URL=api.url,
            OPENAI_API_KEY="sk-test",
            AI_MAX_CONCURRENT=1,
        )

    return start


@pytest.mark.both_strategies
def test_one_call_at_a_time_from_six_threads(
    one_call_at_a_time: Callable[[int], Embedded], api: FakeOpenAI
):
    # Given 6 worker threads allowed 1 AI call at a time, and a server taking 0.1 s a guide
    embedded = one_call_at_a_time(6)
    api.script([dataclasses.replace(completion(f"# Guide {n}"), delay_s=0.1) for n in range(5)])

    # When a job of 5 independent tasks runs, all released at once
    project_id = make_project("a", "b", "c", "d", "e")
    job_id = submit(project_id, max_in_flight=5)
    job, _ = wait_for_job(job_id, timeout=30)

    # Then every guide is written, one request at a time, one attempt each: the tasks that
    # waited were parked without counting an attempt
    assert (job["status"], job["succeeded_tasks"]) == ("succeeded", 5)
    assert (len(api.requests), api.peak_in_flight) == (5, 1)
    with session_scope() as session:
        attempts = session.scalars(sa.select(TaskRun.attempts).where(TaskRun.job_id == job_id))
        assert list(attempts) == [1] * 5
    # And each slot given back woke one parked task: its message sent again once, with the
    # turn handed to it, and never re-sent on a timer (nothing went to the delay queue)
    generate = [m for m in embedded.enqueued if m.actor_name == "generate_hands_on"]
    wakes = [m for m in generate if dispatch.AI_TURN_OPTION in m.options]
    sends = collections.Counter(m.message_id for m in generate)
    assert len(sends) == 5 and max(sends.values()) == 2
    assert len(wakes) == len(generate) - 5 >= 3
    assert not [m for m in generate if m.queue_name.endswith(".DQ")]


def test_the_reconciler_pass_hands_a_dead_holders_slot_to_the_waiters(
    one_call_at_a_time: Callable[[int], Embedded], api: FakeOpenAI
):
    # Given 1 AI call at a time, its slot held by a worker that died (no one gives it back)
    embedded = one_call_at_a_time(4)
    api.script([completion(f"# Guide {n}") for n in range(2)])
    dead = limits.take_turn("openai", limits_of(embedded.settings))
    assert dead.granted

    # When a job of 2 tasks runs: both park; then the dead holder's lease ends
    job_id = submit(make_project("a", "b"), max_in_flight=5)
    wait_until(lambda: parked() == 2, timeout=10, what="both tasks parked")
    with session_scope() as session:
        session.execute(sa.update(AISlot).values(until=FREE))
    assert (parked(), len(api.requests)) == (2, 0)  # nothing wakes them by itself

    # Then the scheduler's reconciler pass hands the slot on, and the job finishes
    duties = scheduler.Duties(embedded.settings)
    duties.active = True
    duties.reconcile()
    job, _ = wait_for_job(job_id, timeout=30)
    assert (job["status"], job["succeeded_tasks"], len(api.requests)) == ("succeeded", 2, 2)
    assert api.peak_in_flight == 1


def parked() -> int:
    with session_scope() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(AIWaiter))
