"""Conformance of our Redis broker with stock Dramatiq's: the same tests run on both.

Every test taking ``kind`` runs once on Dramatiq's ``RedisBroker`` and once on our
``FrugalRedisBroker``, on the real test Redis, with real Dramatiq workers (threads in
this process, or ``dramatiq`` worker processes). Command-count tests at the end hold
for ours only; they bill ``MONITOR`` output the way a per-command host does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Worker
from redis_kit import (
    KINDS,
    declare_actors,
    events,
    make_broker,
    start_worker_process,
    stop_process,
    wait_until,
)

#: Broker options that make dead-worker detection fast enough for tests: a short
#: heartbeat timeout, stock maintenance on every call, ours every 300 ms.
FAST_RECOVERY = {"heartbeat_timeout": 2_000, "maintenance_chance": 1_000_000}
FRUGAL_FAST_RECOVERY = {**FAST_RECOVERY, "maintenance_interval": 300}


@dataclass
class InProcess:
    """A broker, its recording actors and a started Worker in this process."""

    broker: Any
    actors: dict[str, dramatiq.Actor]
    worker: Worker
    log: Path

    def acks_key(self, queue: str = "kit-a") -> str:
        return f"dramatiq:__acks__.{self.broker.broker_id}.{queue}"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """The broker under test: ``stock`` or ``frugal``."""
    return request.param


@pytest.fixture
def start_in_process(
    kind: str, redis_url: str, log_path: Path
) -> Iterator[Callable[..., InProcess]]:
    """Return a function starting a Worker (threads in this process) on a ``kind`` broker."""
    started: list[InProcess] = []

    def start(threads: int = 2, **options: Any) -> InProcess:
        broker = make_broker(kind, redis_url, **options)
        actors = declare_actors(broker, str(log_path))
        worker = Worker(broker, worker_threads=threads, worker_timeout=100)
        worker.start()
        started.append(InProcess(broker, actors, worker, log_path))
        return started[-1]

    yield start
    for running in started:
        running.worker.stop()
        running.broker.close()


@pytest.fixture
def in_process(start_in_process: Callable[..., InProcess]) -> InProcess:
    """A started in-process worker with default options."""
    return start_in_process()


@pytest.fixture
def worker_processes(kind: str, redis_url: str, log_path: Path) -> Iterator[Callable[..., Any]]:
    """Return a function starting a ``dramatiq redis_kit`` worker process on a ``kind`` broker."""
    started: list[subprocess.Popen] = []

    def start(**options: Any) -> subprocess.Popen:
        started.append(start_worker_process(kind, redis_url, str(log_path), **options))
        return started[-1]

    yield start
    for process in started:
        stop_process(process)


def ends(log: Path, token: str | None = None) -> list[dict[str, Any]]:
    return events(log, "end", token)


def starts(log: Path, token: str | None = None) -> list[dict[str, Any]]:
    return events(log, "start", token)


# --- messages ------------------------------------------------------------------------


def test_messages_are_consumed_once_and_acked(in_process, redis_server):
    # Given a worker, when 20 messages are sent
    for i in range(20):
        in_process.actors["record"].send(f"m{i}")

    # Then each runs exactly once, and nothing is left unacked or stored
    wait_until(lambda: len(ends(in_process.log)) >= 20, 15, "20 messages")
    time.sleep(0.3)
    assert sorted(e["token"] for e in ends(in_process.log)) == sorted(f"m{i}" for i in range(20))
    with redis_server.client() as client:
        wait_until(lambda: not client.exists("dramatiq:kit-a.msgs"), 5, "message data deleted")
        assert client.scard(in_process.acks_key()) == 0
        assert client.llen("dramatiq:kit-a") == 0


def test_a_message_that_fails_for_good_is_dead_lettered(in_process, redis_server):
    # Given an actor that always fails, when a message without retries is sent
    in_process.actors["flaky"].send_with_options(args=("doomed", 99), max_retries=0)

    # Then it is moved to the dead-letter queue with its data, and ran once
    with redis_server.client() as client:
        wait_until(lambda: client.zcard("dramatiq:kit-a.XQ") == 1, 15, "a dead letter")
        assert client.hlen("dramatiq:kit-a.XQ.msgs") == 1
        assert not client.exists("dramatiq:kit-a.msgs")
        assert client.scard(in_process.acks_key()) == 0
    assert len(starts(in_process.log, "doomed")) == 1


def test_a_delayed_message_runs_on_time(in_process):
    # Given a worker, when a message is sent with a 1.5 s delay
    sent = time.time()
    in_process.actors["record"].send_with_options(args=("later",), delay=1_500)

    # Then it runs after the delay, and not much later
    (end,) = wait_until(lambda: ends(in_process.log, "later"), 15, "the delayed message")
    assert 1.5 <= end["t"] - sent <= 2.5


def test_retries_back_off_and_fire_on_time(in_process):
    # Given an actor failing twice, min_backoff 300 ms: Dramatiq waits 300-600 ms before
    # the first retry, 600-1200 ms before the second
    in_process.actors["flaky"].send_with_options(args=("twice", 2), max_retries=3)

    # Then it is retried twice, each retry within its back-off window, and succeeds
    wait_until(lambda: ends(in_process.log, "twice"), 20, "the third attempt")
    first, second, third = (e["t"] for e in starts(in_process.log, "twice"))
    assert 0.3 <= second - first <= 0.6 + 1.0
    assert 0.6 <= third - second <= 1.2 + 1.0


def test_prefetch_bounds_the_messages_a_worker_holds(start_in_process, redis_server):
    # Given a worker with one thread (Dramatiq prefetches twice the thread count)
    running = start_in_process(threads=1)

    # When 6 slow messages are sent
    for i in range(6):
        running.actors["record"].send(f"p{i}", 0.25)

    # Then it never holds more than 2 unacked messages, and runs them all
    held = []
    with redis_server.client() as client:
        while len(ends(running.log)) < 6:
            held.append(client.scard(running.acks_key()))
            assert len(held) < 400, "the messages did not all run in time"
            time.sleep(0.02)
    assert max(held) == 2
    assert len(ends(running.log)) == 6


def test_several_queues_are_consumed(in_process):
    # Given a worker on two queues, when messages are sent to both
    for i in range(5):
        in_process.actors["record"].send(f"a{i}")
        in_process.actors["record_b"].send(f"b{i}")

    # Then all of them run
    wait_until(lambda: len(ends(in_process.log)) >= 10, 15, "both queues")
    assert {e["token"] for e in ends(in_process.log)} == {f"{q}{i}" for q in "ab" for i in range(5)}


@pytest.mark.slow
def test_several_worker_processes_share_the_work(kind, redis_url, log_path, worker_processes):
    # Given two worker processes
    processes = [worker_processes(threads=2), worker_processes(threads=2)]
    producer = make_broker(kind, redis_url)
    actors = declare_actors(producer, str(log_path))
    time.sleep(2)  # both processes booted and waiting

    # When 30 slow-ish messages are sent
    for i in range(30):
        actors["record"].send(f"w{i}", 0.1)

    # Then each runs exactly once, and both processes took part
    wait_until(lambda: len(ends(log_path)) >= 30, 30, "30 messages")
    time.sleep(0.5)
    tokens = [e["token"] for e in ends(log_path)]
    assert sorted(tokens) == sorted(f"w{i}" for i in range(30))
    # (dramatiq forks its worker processes: their pids are not the Popen ones)
    assert len({e["pid"] for e in ends(log_path)}) == len(processes)
    producer.close()


@pytest.mark.slow
def test_a_killed_workers_messages_run_exactly_once_more(
    kind, redis_url, log_path, worker_processes
):
    options = FRUGAL_FAST_RECOVERY if kind == "frugal" else FAST_RECOVERY
    # Given a one-thread worker process holding a running message and a prefetched one
    victim = worker_processes(threads=1, **options)
    producer = make_broker(kind, redis_url)
    actors = declare_actors(producer, str(log_path))
    actors["record"].send("running", 2)
    actors["record"].send("prefetched", 0)
    wait_until(lambda: starts(log_path, "running"), 20, "the first message to start")

    # When the process is killed (no clean-up) and another worker starts
    stop_process(victim, signal.SIGKILL)
    worker_processes(threads=1, **options)

    # Then both messages run to the end, once more each: never twice after the kill
    wait_until(lambda: ends(log_path, "running") and ends(log_path, "prefetched"), 30, "requeue")
    time.sleep(1)
    assert len(starts(log_path, "running")) == 2
    assert len(ends(log_path, "running")) == 1
    assert len(starts(log_path, "prefetched")) == 1
    producer.close()


@pytest.mark.slow
def test_a_long_task_keeps_its_heartbeat_and_is_not_redelivered(
    kind, redis_url, log_path, worker_processes
):
    options = FRUGAL_FAST_RECOVERY if kind == "frugal" else FAST_RECOVERY
    # Given a worker running a task 3.5 times longer than the heartbeat timeout
    worker_processes(threads=1, **options)
    producer = make_broker(kind, redis_url)
    actors = declare_actors(producer, str(log_path))
    actors["record"].send("long", 7)
    wait_until(lambda: starts(log_path, "long"), 20, "the long task to start")

    # When another worker, eager to requeue dead workers' messages, runs meanwhile
    worker_processes(threads=1, **options)

    # Then the task is not taken for lost: it runs once
    wait_until(lambda: ends(log_path, "long"), 30, "the long task to end")
    time.sleep(2.5)
    assert len(starts(log_path, "long")) == 1
    producer.close()


@pytest.mark.skipif(
    not os.environ.get("HANDSON_SLOW_REDIS_TESTS"),
    reason="3-minute task; set HANDSON_SLOW_REDIS_TESTS=1 to run it",
)
def test_a_three_minute_task_with_the_default_heartbeat_timeout_runs_once(
    kind, redis_url, log_path, worker_processes
):
    # Given two workers with the default 60 s heartbeat timeout, one on a 3-minute task
    worker_processes(threads=1, maintenance_chance=1_000_000, maintenance_interval=1_000)
    producer = make_broker(kind, redis_url)
    actors = declare_actors(producer, str(log_path))
    actors["record"].send("three-minutes", 180)
    wait_until(lambda: starts(log_path, "three-minutes"), 20, "the task to start")
    worker_processes(threads=1, maintenance_chance=1_000_000, maintenance_interval=1_000)

    # Then it runs once
    wait_until(lambda: ends(log_path, "three-minutes"), 240, "the task to end")
    assert len(starts(log_path, "three-minutes")) == 1
    producer.close()


# --- failures of Redis and of connections -------------------------------------------


def test_consumers_recover_after_a_redis_restart(in_process, redis_server):
    # Given an idle worker
    in_process.actors["record"].send("before")
    wait_until(lambda: ends(in_process.log, "before"), 15, "the first message")

    # When Redis restarts (losing its data), then a message is sent
    redis_server.restart()
    time.sleep(0.5)
    in_process.actors["record"].send("after")

    # Then the worker reconnects and runs it
    wait_until(lambda: ends(in_process.log, "after"), 20, "a message after the restart")


def test_dropped_connections_lose_and_duplicate_nothing(in_process, redis_server):
    # Given a worker busy with slow messages
    for i in range(8):
        in_process.actors["record"].send(f"busy{i}", 0.2)
    wait_until(lambda: starts(in_process.log), 15, "work to start")

    # When the server drops every client connection, while busy and again while idle
    with redis_server.client() as client:
        client.client_kill_filter(_type="normal")
        wait_until(lambda: len(ends(in_process.log)) >= 8, 30, "the busy messages")
        time.sleep(0.3)
        client.client_kill_filter(_type="normal")
    time.sleep(0.3)
    for i in range(4):
        in_process.actors["record"].send(f"idle{i}")

    # Then every message runs exactly once
    wait_until(lambda: len(ends(in_process.log)) >= 12, 30, "the messages sent after the drop")
    time.sleep(0.5)
    tokens = sorted(e["token"] for e in starts(in_process.log))
    assert tokens == sorted([f"busy{i}" for i in range(8)] + [f"idle{i}" for i in range(4)])


# --- acks and maintenance -----------------------------------------------------------


def run_maintenance(broker: Any, kind: str) -> None:
    """Run one maintenance pass on queue ``kit-a`` (stock: any call, at chance 1,000,000)."""
    if kind == "stock":
        broker.do_qsize("kit-a")
    else:
        broker.maintain("kit-a", "kit-a.DQ")


@pytest.fixture
def cut_after_first_command(monkeypatch: pytest.MonkeyPatch) -> Callable[[], Any]:
    """Return a context manager in which only the first command (or first command of a
    pipeline) reaches Redis, then the connection fails: a process dying mid-operation."""

    @contextlib.contextmanager
    def cut() -> Iterator[None]:
        sent: list[str] = []
        execute_command, execute = redis.Redis.execute_command, redis.client.Pipeline.execute

        def one_command(client: Any, *args: Any, **options: Any) -> Any:
            if sent:
                raise redis.ConnectionError("the process died here")
            sent.append(str(args[0]))
            return execute_command(client, *args, **options)

        def first_of_pipeline(pipe: Any, *args: Any, **options: Any) -> Any:
            pipe.command_stack = pipe.command_stack[:1]
            sent.append("pipeline")
            execute(pipe, *args, **options)
            raise redis.ConnectionError("the process died here")

        with monkeypatch.context() as patch:
            patch.setattr(redis.Redis, "execute_command", one_command)
            patch.setattr(redis.client.Pipeline, "execute", first_of_pipeline)
            yield

    return cut


def test_an_ack_cut_short_leaves_nothing_behind(
    kind, redis_url, redis_server, log_path, cut_after_first_command
):
    # Given a worker process holding a message it has run (1 s heartbeat timeout)
    options = {"heartbeat_timeout": 1_000, "maintenance_chance": 1_000_000}
    dying = make_broker(kind, redis_url, **options)
    declare_actors(dying, str(log_path))["record"].send("cut-short")
    consumer = dying.consume("kit-a", prefetch=1, timeout=100)
    message = wait_until(lambda: next(consumer), 10, "the message to be fetched")

    # When it dies in the middle of acking it (only its first command reaches Redis)
    with cut_after_first_command(), contextlib.suppress(redis.ConnectionError):
        dying.do_ack("kit-a", message.options["redis_message_id"])
    if kind == "frugal":
        dying.heartbeat.close()

    # Then once another worker finds it dead, nothing of the message is left in Redis
    survivor = make_broker(kind, redis_url, **options)
    with redis_server.client() as client:

        def cleaned() -> bool:
            run_maintenance(survivor, kind)
            return not client.keys("dramatiq:__acks__.*")

        wait_until(cleaned, 10, "the dead worker's acks to be cleaned up")
        assert not client.exists("dramatiq:kit-a.msgs", "dramatiq:kit-a")
    survivor.close()


def test_every_expired_dead_letter_is_removed_in_one_pass(kind, redis_url, redis_server):
    # Given 2,500 dead letters past their time to live and a fresh one
    broker = make_broker(kind, redis_url, dead_message_ttl=60_000, maintenance_chance=1_000_000)
    expired = {f"dead-{i}": 1_000 + i for i in range(2_500)}
    fresh = {"fresh": time.time() * 1000}
    with redis_server.client() as client:
        client.zadd("dramatiq:kit-a.XQ", {**expired, **fresh})
        client.hset("dramatiq:kit-a.XQ.msgs", mapping={k: b"{}" for k in {**expired, **fresh}})

        # When one maintenance pass runs
        run_maintenance(broker, kind)

        # Then all expired ones are gone, data included, and the fresh one stays
        assert client.zrange("dramatiq:kit-a.XQ", 0, -1) == [b"fresh"]
        assert client.hkeys("dramatiq:kit-a.XQ.msgs") == [b"fresh"]
    broker.close()


# --- ours only: stock producers, shutdown, commands ---------------------------------


@pytest.mark.parametrize("kind", ["frugal"])
def test_our_consumer_serves_a_stock_producer_at_once(in_process, redis_url):
    # Given our idle worker and a stock Dramatiq producer (no wake-up of any kind)
    time.sleep(0.5)
    stock = make_broker("stock", redis_url)
    actors = declare_actors(stock, str(in_process.log))

    # When it sends a message and a delayed message
    sent = time.time()
    actors["record"].send("from-stock")
    actors["record"].send_with_options(args=("from-stock-later",), delay=500)

    # Then both run on time: far within any safety interval
    (end,) = wait_until(lambda: ends(in_process.log, "from-stock"), 10, "the stock message")
    assert end["t"] - sent < 1.0
    (end,) = wait_until(lambda: ends(in_process.log, "from-stock-later"), 10, "the delayed one")
    assert 0.5 <= end["t"] - sent < 1.5
    stock.close()


@pytest.mark.parametrize("kind", ["frugal"])
def test_an_idle_worker_process_stops_promptly_on_sigterm(
    redis_url, log_path, tmp_path, worker_processes
):
    # Given an idle worker process whose worker threads check for shutdown every 100 ms
    # (Dramatiq's own setting: 1 s by default; with our consumer it costs no command)
    dramatiq_log = tmp_path / "dramatiq.log"
    process = worker_processes(
        threads=2, env={"dramatiq_worker_timeout": "100"}, dramatiq_log=str(dramatiq_log)
    )
    time.sleep(2.5)

    # When its main process gets SIGTERM (it forwards it to its worker process)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    returncode = process.wait(timeout=10)

    # Then the worker (consumers included) stops within half a second of starting to shut
    # down, and the whole process exits gracefully within 3 s: Dramatiq's own loops add up
    # to 2 s (its worker process looks at the signal flag once a second, its main process
    # at its log pipe once a second)
    assert returncode == 0
    assert time.monotonic() - started < 3.0
    stamps = {
        line.split("] ")[-1].strip(): datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
        for line in dramatiq_log.read_text().splitlines()
        if "Shutting down" in line or "has been shut down" in line
    }
    stopping = stamps["Worker has been shut down."] - stamps["Shutting down..."]
    assert stopping.total_seconds() < 0.5, stamps


def test_an_idle_worker_bills_nothing_but_stock_polls(kind, start_in_process, meter):
    # Given a worker that has started and settled
    start_in_process()
    time.sleep(1.5)

    # When nothing happens for 3 seconds
    start = time.time()
    time.sleep(3)
    billed = meter.bill(start, time.time())

    # Then ours sends no command at all, while stock polls (the meter does see commands)
    if kind == "frugal":
        assert sum(billed.values()) == 0, billed
    else:
        assert sum(billed.values()) >= 12, billed


@pytest.mark.parametrize("kind", ["frugal"])
def test_the_idle_wait_is_rearmed_within_the_wait_timeout(start_in_process, meter):
    # Given a worker on 2 queues (4 lists with their delay queues), 1 s wait timeout
    start_in_process(wait_timeout=1_000)
    time.sleep(1.5)

    # When it idles for 4 seconds
    start = time.time()
    time.sleep(4)
    billed = meter.bill(start, time.time())

    # Then it only re-arms its blocking waits: about one BLMOVE per list per second
    assert set(billed) == {"BLMOVE"}, billed
    assert 10 <= billed["BLMOVE"] <= 20, billed


@pytest.mark.parametrize("kind", ["frugal"])
def test_blocked_connections_probe_their_peer_within_the_safety_interval(start_in_process):
    # Given an idle worker with a 40 s safety interval, its consumers blocked
    in_process = start_in_process(safety_interval=40)
    time.sleep(1)

    # When we look at the sockets of its blocked waits
    waiters = [thread.consumer._waiter for thread in in_process.worker.consumers.values()]
    sockets = [
        connection._sock
        for waiter in waiters
        for connection in waiter._client.connection_pool._in_use_connections
    ]

    # Then each has kernel keepalive probes set so that a vanished peer is noticed in
    # 40 s: first probe after 20 s of silence, then every 5 s, given up after 4
    assert len(sockets) == len(waiters) == 4  # 2 queues and their delay queues
    for sock in sockets:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 20
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4


def test_a_safety_interval_out_of_range_is_refused(redis_url):
    with pytest.raises(ValueError, match="safety_interval must be 8-3600 seconds, got 2"):
        make_broker("frugal", redis_url, safety_interval=2)


@pytest.mark.parametrize("kind", ["frugal"])
def test_a_burst_of_tasks_costs_few_commands_each(in_process, meter):
    # Given an idle worker
    time.sleep(1)

    # When 20 messages are sent in a burst (as a group does) and run
    start = time.time()
    for i in range(20):
        in_process.actors["record"].send(f"c{i}")
    wait_until(lambda: len(ends(in_process.log)) >= 20, 15, "20 messages")
    time.sleep(0.5)  # acks are written after the actor returns
    billed = meter.bill(start, time.time())

    # Then everything (enqueue, wake-up, fetch, ack, heartbeat) costs at most 6 per task,
    # acks going out in batches (one HDEL and one SREM for several)
    assert billed["HSET"] == billed["RPUSH"] == 20
    assert billed["SREM"] == billed["HDEL"] < 20
    assert sum(billed.values()) <= 6 * 20, billed


@pytest.mark.parametrize("kind", ["frugal"])
def test_one_task_at_a_time_costs_a_bounded_number_of_commands(in_process, meter):
    # Given an idle worker
    time.sleep(1)

    # When 10 messages are sent one after the other, each once the previous one ran
    start = time.time()
    for i in range(10):
        in_process.actors["record"].send(f"s{i}")
        wait_until(lambda i=i: ends(in_process.log, f"s{i}"), 10, f"message {i}")
    time.sleep(0.5)
    billed = meter.bill(start, time.time())

    # Then each costs enqueue 2 + wake-up 1 + fetch 5 + ack 2, plus a rare heartbeat
    assert sum(billed.values()) <= 10 * 10, billed


@pytest.mark.parametrize("kind", ["frugal"])
def test_a_batched_group_is_enqueued_in_two_commands(in_process, meter):
    # Given an idle worker
    time.sleep(1)
    messages = [in_process.actors["record"].message(f"g{i}") for i in range(5)]

    # When a group of 5 is sent in a batch, and a failing batch sends nothing
    start = time.time()
    with in_process.broker.batched_enqueues():
        dramatiq.group(messages, broker=in_process.broker).run()
    end = time.time()
    with pytest.raises(RuntimeError), in_process.broker.batched_enqueues():
        in_process.actors["record"].send("never")
        raise RuntimeError("the dispatch failed")

    # Then all 5 run, for one HSET and one RPUSH
    wait_until(lambda: len(ends(in_process.log)) >= 5, 15, "the group")
    billed = meter.bill(start, end)  # (the worker may have fetched meanwhile)
    assert (billed["HSET"], billed["RPUSH"]) == (1, 1), billed
    time.sleep(0.5)
    assert sorted(e["token"] for e in ends(in_process.log)) == [f"g{i}" for i in range(5)]


# --- ours only: scaling out ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["frugal"])
def test_acks_finished_together_go_out_together(start_in_process, meter, redis_server):
    # Given an idle worker with 8 threads
    running = start_in_process(threads=8)
    time.sleep(1)

    # When a group of 5 messages that finish together runs
    start = time.time()
    with running.broker.batched_enqueues():
        for i in range(5):
            running.actors["record"].send(f"t{i}", 0.3)
    wait_until(lambda: len(ends(running.log)) >= 5, 15, "the group")
    with redis_server.client() as client:
        wait_until(lambda: not client.exists(running.acks_key()), 5, "the acks")
    billed = meter.bill(start, time.time())

    # Then their acks cost one HDEL and one SREM (two if the machine spread them out)
    assert billed["HDEL"] == billed["SREM"] <= 2, billed


@pytest.mark.parametrize("kind", ["frugal"])
def test_a_push_wakes_one_idle_worker_not_all(start_in_process, meter):
    # Given three idle workers on the same queues
    workers = [start_in_process() for _ in range(3)]
    time.sleep(1.5)

    # When one message is sent
    start = time.time()
    workers[0].actors["record"].send("one")
    wait_until(lambda: ends(workers[0].log, "one"), 10, "the message")
    time.sleep(0.5)  # its ack
    billed = meter.bill(start, time.time())

    # Then one worker fetched it (one script call) and re-armed its wait; the other two
    # slept through it: enqueue 2 + wait 1 + fetch 5 + ack 2
    assert billed["EVALSHA"] == 1, billed
    assert billed["BLMOVE"] == 1, billed
    assert sum(billed.values()) <= 10, billed


@pytest.mark.parametrize("kind", ["frugal"])
def test_a_worker_holds_no_more_than_its_threads_and_the_margin(start_in_process, redis_server):
    # Given a worker with 2 threads and no margin (Dramatiq would prefetch 4)
    running = start_in_process(threads=2, fetch_margin=0)

    # When 10 slow messages are sent
    for i in range(10):
        running.actors["record"].send(f"h{i}", 0.2)

    # Then it holds its 2, and runs them all (Dramatiq's 4 would show). Its acks set
    # counts what it holds and, while an ack waits for its batch, one message it has
    # finished (a thread frees, the next message is fetched, then the ack goes out)
    held = []
    with redis_server.client() as client:
        while len(ends(running.log)) < 10:
            held.append(client.scard(running.acks_key()))
            assert len(held) < 600, "the messages did not all run in time"
            time.sleep(0.02)
    assert 2 <= max(held) <= 3, held
    assert len(ends(running.log)) == 10


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["frugal"])
def test_a_group_spreads_over_the_idle_threads_of_two_processes(
    kind, redis_url, redis_server, log_path, worker_processes
):
    # Given two idle worker processes with 3 threads each
    worker_processes(threads=3)
    worker_processes(threads=3)
    producer = make_broker(kind, redis_url)
    actors = declare_actors(producer, str(log_path))
    with redis_server.client() as client:
        # Both idle: 2 processes x 4 lists (2 queues and their delay queues) waiting
        def waiting() -> bool:
            return sum(c["cmd"] == "blmove" for c in client.client_list()) >= 8

        wait_until(waiting, 30, "both processes to wait")

    # When a group of 5 one-second messages is sent in one batch
    with producer.batched_enqueues():
        for i in range(5):
            actors["record"].send(f"g{i}", 1.0)

    # Then both processes take part, neither runs more than its threads, and all 5
    # start together (none waits in a busy process while threads are idle elsewhere)
    wait_until(lambda: len(ends(log_path)) >= 5, 20, "the group")
    started = starts(log_path)
    by_process = [sum(1 for e in started if e["pid"] == pid) for pid in {e["pid"] for e in started}]
    assert sorted(by_process) == [2, 3], started
    stamps = [e["t"] for e in started]
    assert max(stamps) - min(stamps) < 0.8, stamps
    producer.close()


def _plant_held_message(client: redis.Redis, message: dramatiq.Message, worker: str, key: str):
    """Store ``message`` as held by ``worker`` under ``key`` (its acks set or taken list),
    with a fresh heartbeat: what a worker that fetched it and died leaves behind."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hset("dramatiq:kit-a.msgs", message.message_id, message.encode())
        if key.endswith(".taken"):
            pipe.rpush(key, message.message_id)
        else:
            pipe.sadd(key, message.message_id)
            pipe.zadd("dramatiq:__heartbeats__", {worker: time.time() * 1000})
        pipe.execute()


@pytest.mark.parametrize("kind", ["frugal"])
def test_a_dead_workers_messages_are_requeued_within_a_few_heartbeat_timeouts(
    start_in_process, redis_server
):
    # Given an idle worker (1 s heartbeat timeout, hourly idle maintenance), settled
    running = start_in_process(heartbeat_timeout=1_000, maintenance_interval=3_600_000)
    time.sleep(3.5)  # past its first maintenance passes: idle schedule

    # When another worker dies holding a message, and work comes in
    orphan = running.actors["record"].message("orphan")
    with redis_server.client() as client:
        _plant_held_message(client, orphan, "gone", "dramatiq:__acks__.gone.kit-a")
    poked = time.time()
    running.actors["record"].send("poke")

    # Then the dead worker's message runs within a few timeouts, not an hour later
    (end,) = wait_until(lambda: ends(running.log, "orphan"), 10, "the orphan to be requeued")
    assert end["t"] - poked < 4.0


@pytest.mark.parametrize("kind", ["frugal"])
def test_an_id_a_dying_process_had_just_taken_is_requeued(start_in_process, redis_server):
    # Given a worker with fast maintenance
    running = start_in_process(heartbeat_timeout=1_000, maintenance_interval=300)

    # When a process without a heartbeat left an id in its taken list (it died between
    # the wait that moved the id and the fetch)
    orphan = running.actors["record"].message("taken")
    with redis_server.client() as client:
        _plant_held_message(client, orphan, "gone", "dramatiq:__acks__.gone.kit-a.taken")

        # Then the message runs, and the taken list is gone
        wait_until(lambda: ends(running.log, "taken"), 10, "the taken id to be requeued")
        assert not client.exists("dramatiq:__acks__.gone.kit-a.taken")


@pytest.mark.parametrize("kind", ["frugal"])
def test_maintenance_slows_to_the_idle_interval_once_work_stops(start_in_process, meter):
    # Given a worker with a 1 s heartbeat timeout and hourly idle maintenance, which
    # has just run a message (busy: it looks after dead workers every second)
    running = start_in_process(heartbeat_timeout=1_000, maintenance_interval=3_600_000)
    running.actors["record"].send("work")
    wait_until(lambda: ends(running.log, "work"), 10, "the message")
    time.sleep(3.5)  # two maintenance passes: the busy one, then one that finds all idle

    # When it idles for 3 seconds
    start = time.time()
    time.sleep(3)
    billed = meter.bill(start, time.time())

    # Then it bills nothing: no maintenance every heartbeat timeout while all are idle
    assert sum(billed.values()) == 0, billed


# --- ranks (ours) ---------------------------------------------------------------------


def _queue_before_a_worker(redis_url: str, log_path: Path, sends: list[tuple[str, int | None]]):
    """Send ``record`` messages (token, rank or None) one by one while no worker runs."""
    producer = make_broker("frugal", redis_url)
    actors = declare_actors(producer, str(log_path))
    for token, rank in sends:
        options = {} if rank is None else {"rank": rank}
        actors["record"].send_with_options(args=(token,), **options)
    producer.close()


@pytest.mark.parametrize("kind", ["frugal"])
@pytest.mark.parametrize(("window", "place"), [(64, 0), (4, 3), (0, 6)])
def test_a_ranked_message_overtakes_the_stock_ones_within_the_window(
    start_in_process, redis_url, log_path, window, place
):
    # Given six messages without a rank (as a stock producer sends), then one ranked
    sends = [(f"u{i}", None) for i in range(6)] + [("ranked", 3)]
    _queue_before_a_worker(redis_url, log_path, sends)

    # When a worker with one thread and no margin takes them, looking at `window` ids
    start_in_process(threads=1, fetch_margin=0, rank_window=window)
    wait_until(lambda: len(ends(log_path)) >= 7, 15, "the 7 messages")

    # Then the ranked one runs as soon as it is in the window (the first fetch sees all
    # 7 with 64; with 4, the fourth fetch; with 0, the queue's order), the others in order
    order = [event["token"] for event in starts(log_path)]
    unranked = [token for token, _ in sends[:-1]]
    assert order == [*unranked[:place], "ranked", *unranked[place:]]


@pytest.mark.parametrize("kind", ["frugal"])
def test_a_window_as_big_as_the_queue_runs_messages_by_rank(start_in_process, redis_url, log_path):
    # Given 30 messages sent one by one with ranks out of order, some equal
    ranks = [(i * 7) % 5 for i in range(30)]
    _queue_before_a_worker(redis_url, log_path, [(f"m{i}", r) for i, r in enumerate(ranks)])

    # When a worker with one thread and no margin takes them
    start_in_process(threads=1, fetch_margin=0)
    wait_until(lambda: len(ends(log_path)) >= 30, 15, "the 30 messages")

    # Then they run highest rank first, equal ranks in the order they were sent
    expected = sorted(range(30), key=lambda i: -ranks[i])
    assert [event["token"] for event in starts(log_path)] == [f"m{i}" for i in expected]


def test_a_rank_window_out_of_range_is_refused(redis_url):
    with pytest.raises(ValueError, match="rank_window must be 0-1000"):
        make_broker("frugal", redis_url, rank_window=1001)
