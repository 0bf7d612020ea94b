"""Local hand-off: what a finishing worker thread sends goes to its own free threads.

Real redis-server, real Dramatiq workers (threads in this process, or ``dramatiq``
worker processes); commands are billed from ``MONITOR`` output as a per-command host
bills them. The ``fan_out`` kit actor sends its group from the after-hooks, as the
Progress middleware's follow-up does.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_kit import (
    declare_actors,
    events,
    make_broker,
    start_worker_process,
    stop_process,
    wait_until,
)

#: Fast dead-worker detection for tests: 1 s heartbeat timeout, maintenance every 300 ms.
FAST_RECOVERY = {"heartbeat_timeout": 1_000, "maintenance_interval": 300}


@pytest.fixture
def processes(redis_url: str, log_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start ``dramatiq redis_kit`` worker processes on our broker; stopped at the end."""
    started: list[subprocess.Popen] = []

    def start(**options: Any) -> subprocess.Popen:
        started.append(start_worker_process("frugal", redis_url, str(log_path), **options))
        return started[-1]

    yield start
    for process in started:
        stop_process(process)


@pytest.fixture
def producer(redis_url: str, log_path: Path) -> Iterator[dict[str, Any]]:
    broker = make_broker("frugal", redis_url)
    yield declare_actors(broker, str(log_path))
    broker.close()


@dataclasses.dataclass
class IdleWorker:
    """A frugal broker of a worker with 2 threads, its actors, and an idle consumer."""

    broker: Any
    actors: dict[str, Any]
    consumer: Any


@pytest.fixture
def idle(redis_url: str, log_path: Path) -> Iterator[IdleWorker]:
    """A consumer of a worker with 2 free threads that has found the queue empty."""
    broker = make_broker("frugal", redis_url)
    actors = declare_actors(broker, str(log_path))
    broker.worker_threads = 2
    consumer = broker.consume("kit-a", prefetch=4, timeout=100)
    assert next(consumer) is None
    yield IdleWorker(broker, actors, consumer)
    if not consumer._closed:
        consumer.close()
    broker.close()


def wait_for_idle(redis_server: Any, processes: int) -> None:
    """Wait until ``processes`` worker processes block on their 4 lists each."""
    with redis_server.client() as client:

        def waiting() -> bool:
            return sum(c["cmd"] == "blmove" for c in client.client_list()) >= 4 * processes

        wait_until(waiting, 30, "the workers to wait")


def parent_of(pid: int) -> int:
    """Return the parent process id of ``pid`` (Linux)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def pushed(client: Any, broker: Any) -> int:
    """Ids pushed to kit-a: on the queue, or moved off it by its consumer's waiting call."""
    return client.llen("dramatiq:kit-a") + client.llen(broker.taken_key("kit-a"))


def pid_of(log: Path, token: str, event: str = "start") -> int:
    (entry, *_) = wait_until(lambda: events(log, event, token), 20, token)
    return entry["pid"]


@pytest.mark.parametrize("handoff", [True, False], ids=["handoff", "no-handoff"])
def test_a_released_lone_message_is_run_by_the_releasing_worker_without_a_push(
    handoff, processes, producer, meter, redis_server, log_path
):
    # Given two idle worker processes
    for _ in range(2):
        processes(threads=2, local_handoff=handoff)
    wait_for_idle(redis_server, 2)

    # When a message runs whose after-hooks send one message to the same queue
    start = time.time()
    producer["fan_out"].send("lone", 1)
    wait_until(lambda: events(log_path, "end", "lone-0"), 20, "the released message")
    with redis_server.client() as client:
        wait_until(lambda: not client.keys("dramatiq:__acks__.*"), 5, "the acks")
    billed = meter.bill(start, time.time())

    if handoff:
        # Then the releasing process runs it: written into its acks set, never pushed,
        # no wake-up and no fetch for it (one push, one fetch: the first message's)
        assert pid_of(log_path, "lone-0") == pid_of(log_path, "lone")
        assert (billed["RPUSH"], billed["EVALSHA"], billed["SADD"]) == (1, 1, 1), billed
        assert billed["BLMOVE"] <= 1, billed  # the woken process's re-arm
    else:
        # (without it, the message is pushed, wakes a waiter and is fetched)
        assert (billed["RPUSH"], billed["EVALSHA"]) == (2, 2), billed


def test_a_group_larger_than_the_free_threads_spreads(processes, producer, redis_server, log_path):
    # Given two idle worker processes with 3 threads each
    for _ in range(2):
        processes(threads=3)
    wait_for_idle(redis_server, 2)

    # When a message's after-hooks release a group of 5 one-second messages
    producer["fan_out"].send("wide", 5, 1.0)
    wait_until(lambda: len(events(log_path, "end")) >= 6, 30, "the group")

    # Then the releasing process keeps what its 3 threads can run, the other process
    # runs the 2 pushed, and all 5 start together
    releaser = pid_of(log_path, "wide")
    started = [e for e in events(log_path, "start") if e["token"].startswith("wide-")]
    assert sorted(e["pid"] == releaser for e in started) == [False] * 2 + [True] * 3, started
    stamps = [e["t"] for e in started]
    assert max(stamps) - min(stamps) < 0.8, stamps


def test_a_claimed_message_of_a_killed_worker_is_requeued(
    processes, producer, redis_server, log_path
):
    # Given two worker processes that look after dead workers quickly
    workers = [processes(threads=2, **FAST_RECOVERY) for _ in range(2)]
    wait_for_idle(redis_server, 2)

    # When one of them claims a released message, starts it, and is killed
    producer["fan_out"].send("crash", 1, 30.0)
    releaser = pid_of(log_path, "crash-0")
    assert releaser == pid_of(log_path, "crash")
    # (the Popen is dramatiq's main process; the worker is its child, in its group)
    victim = next(process for process in workers if process.pid == parent_of(releaser))
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()

    # Then maintenance requeues it and the surviving process runs it
    def rerun() -> list[dict[str, Any]]:
        return [e for e in events(log_path, "start", "crash-0") if e["pid"] != releaser]

    wait_until(rerun, 15, "the claimed message to run again")


def test_closing_gives_back_claimed_messages_not_handed_out(
    idle: IdleWorker, redis_server: Any
) -> None:
    # Given a consumer of a worker with 2 threads, nothing handed out yet
    broker, actors, consumer = idle.broker, idle.actors, idle.consumer

    # When a worker thread in its after-hooks sends a message: it is claimed
    broker.handoff.finishing("kit-a")
    sent = actors["record"].send("claimed")
    redis_id = sent.options["redis_message_id"]
    with redis_server.client() as client:
        assert client.smembers(f"dramatiq:__acks__.{broker.broker_id}.kit-a") == {redis_id.encode()}
        assert client.llen("dramatiq:kit-a") == 0
        assert consumer.outstanding_message_count == 1

        # And the worker shuts down before running it
        consumer.close()

        # Then it is back on the queue, held by nobody
        assert client.lrange("dramatiq:kit-a", 0, -1) == [redis_id.encode()]
        assert not client.exists(f"dramatiq:__acks__.{broker.broker_id}.kit-a")
    broker.handoff.finished()


def test_delayed_and_outside_sends_are_never_claimed(idle: IdleWorker, redis_server: Any) -> None:
    # Given a consumer of a worker with free threads
    broker, actors, consumer = idle.broker, idle.actors, idle.consumer

    # When a thread that is not finishing a message sends, and a finishing one sends a
    # delayed message
    actors["record"].send("outside")
    broker.handoff.finishing("kit-a")
    actors["record"].send_with_options(args=("later",), delay=60_000)
    broker.handoff.finished()

    # Then both went the usual way: the queue (its waiting consumer may have taken the
    # id off it already) and the delay queue
    with redis_server.client() as client:
        assert pushed(client, broker) == 1
        assert client.llen("dramatiq:kit-a.DQ") == 1
        assert consumer.outstanding_message_count == 0


def test_sends_are_pushed_while_older_messages_may_be_queued(
    idle: IdleWorker, redis_server: Any
) -> None:
    # Given a consumer of a worker with free threads, and a message already queued
    broker, actors, consumer = idle.broker, idle.actors, idle.consumer
    actors["record"].send("older")
    consumer._may_have_more = True  # what a wake-up or a full refill tells it

    # When a finishing worker thread sends a message
    broker.handoff.finishing("kit-a")
    actors["record"].send("newer")
    broker.handoff.finished()

    # Then it is queued behind the older one (first in, first out), not claimed
    with redis_server.client() as client:
        assert pushed(client, broker) == 2
    assert consumer.outstanding_message_count == 0
