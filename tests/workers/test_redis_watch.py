"""Busy notices: a worker killed while holding messages, every survivor idle, is looked
after within a few heartbeat timeouts (not at the hourly idle maintenance pass).

Real redis-server and ``dramatiq`` worker processes; commands billed from ``MONITOR``.
"""

from __future__ import annotations

import os
import signal
import time
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

#: 1 s heartbeat timeout, hourly maintenance while every worker is idle.
SETTINGS = {"heartbeat_timeout": 1_000, "maintenance_interval": 3_600_000}


def parent_of(pid: int) -> int:
    """Return the parent process id of ``pid`` (Linux)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("notices", [True, False], ids=["notices", "no-notices"])
def test_a_killed_busy_workers_messages_run_within_a_few_timeouts_while_the_rest_idle(
    notices, redis_url, redis_server, meter, tmp_path
):
    log = tmp_path / "events.jsonl"
    # Given two idle worker processes on their hourly idle schedule (each has run its
    # first two maintenance passes per queue: one as it starts, one that found all idle)
    options = {**SETTINGS, **({} if notices else {"busy_notices": False})}
    workers = [start_worker_process("frugal", redis_url, str(log), **options) for _ in range(2)]
    producer = make_broker("frugal", redis_url)
    actors = declare_actors(producer, str(log))
    try:
        start = time.time()

        def maintained() -> bool:
            return meter.bill(start, time.time())["lua:ZRANGE"] >= 8

        wait_until(maintained, 30, "both workers' first maintenance passes")

        # When one of them takes a long message and is killed while running it
        actors["record"].send("held", 60.0)
        (first,) = wait_until(lambda: events(log, "start", "held"), 20, "the message to start")
        victim = next(w for w in workers if w.pid == parent_of(first["pid"]))
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        killed = time.time()

        # Then the survivor, idle all along, runs it within a few heartbeat timeouts
        def rerun() -> list[dict[str, Any]]:
            return [e for e in events(log, "start", "held") if e["pid"] != first["pid"]]

        if notices:
            (again,) = wait_until(rerun, 10, "the dead worker's message to run again")
            assert again["t"] - killed < 4.0
        else:
            # (without notices it waits for the hourly pass)
            with pytest.raises(AssertionError, match="timed out"):
                wait_until(rerun, 4, "the dead worker's message to run again")
    finally:
        producer.close()
        for worker in workers:
            stop_process(worker)


def test_notices_cost_nothing_while_every_worker_is_idle(redis_url, redis_server, meter, tmp_path):
    # Given an idle worker process waiting for busy notices, on its hourly idle schedule
    log = tmp_path / "events.jsonl"
    worker = start_worker_process("frugal", redis_url, str(log), **SETTINGS)
    try:
        start = time.time()
        with redis_server.client() as client:

            def settled() -> bool:
                waiting = any(c["cmd"] == "bzpopmin" for c in client.client_list())
                return waiting and meter.bill(start, time.time())["lua:ZRANGE"] >= 4

            wait_until(settled, 30, "the worker to wait for notices, past its first passes")

        # When three heartbeat timeouts pass
        start = time.time()
        time.sleep(3)

        # Then it bills nothing
        assert sum(meter.bill(start, time.time()).values()) == 0
    finally:
        stop_process(worker)
