"""Test kit for the Redis conformance suite: brokers, recording actors, worker processes,
and a command meter that bills ``MONITOR`` output the way a per-command host does.

Run as a Dramatiq module (``dramatiq redis_kit``) it builds its broker from ``KIT_*``
variables, so the same actors run in separate worker processes.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, Pipelines

from workers.redis_broker import FRUGAL_OPTIONS, FrugalRedisBroker

ROOT = Path(__file__).resolve().parents[1]
#: Broker kinds every conformance test runs against.
KINDS = ("stock", "frugal")
#: Commands a per-command host does not bill (connection housekeeping).
FREE = {"AUTH", "HELLO", "SELECT", "COMMAND", "CONFIG", "INFO", "PING", "RESET", "QUIT", "MONITOR"}
_MONITOR_LINE = re.compile(r'^(\d+\.\d+) \[\d+ ([^\]]+)\] "([^"]+)"')


def make_broker(kind: str, url: str, **options: Any) -> RedisBroker:
    """Return a stock or frugal broker on ``url``.

    Stock Dramatiq requeues dead workers' messages on a random 0.1% of its calls; tests
    that need it set ``maintenance_chance`` to 1,000,000 (every call). Options that only
    the frugal broker knows are dropped for the stock one.
    """
    if kind == "stock":
        for option in FRUGAL_OPTIONS:
            options.pop(option, None)
        return RedisBroker(url=url, **options)
    return FrugalRedisBroker(url=url, **options)


def declare_actors(broker: dramatiq.Broker, log_path: str) -> dict[str, dramatiq.Actor]:
    """Declare the recording actors on ``broker``; each appends JSON lines to ``log_path``."""

    def write(event: str, token: str) -> None:
        line = json.dumps({"event": event, "token": token, "pid": os.getpid(), "t": time.time()})
        with open(log_path, "a") as log:
            log.write(line + "\n")

    def record(token: str, seconds: float = 0.0) -> None:
        write("start", token)
        time.sleep(seconds)
        write("end", token)

    def flaky(token: str, failures: int) -> None:
        write("start", token)
        attempts = sum(1 for e in read_log(log_path) if e["token"] == token)
        if attempts <= failures:
            raise RuntimeError(f"attempt {attempts} of {token} fails on purpose")
        write("end", token)

    def fan_out(token: str, count: int, seconds: float = 0.0) -> None:
        write("start", token)
        write("end", token)

    broker.add_middleware(_FanOut(), before=Pipelines)
    return {
        "record": dramatiq.actor(record, broker=broker, queue_name="kit-a", max_retries=0),
        "fan_out": dramatiq.actor(fan_out, broker=broker, queue_name="kit-a", max_retries=0),
        "record_b": dramatiq.actor(
            record, actor_name="record_b", broker=broker, queue_name="kit-b", max_retries=0
        ),
        "flaky": dramatiq.actor(
            flaky, broker=broker, queue_name="kit-a", min_backoff=300, max_backoff=5_000
        ),
    }


class _FanOut(Middleware):
    """After a ``fan_out(token, count, seconds)`` message ran, sends ``count`` ``record``
    messages as one batched group from the worker thread's after-hooks, as the Progress
    middleware's follow-up releases tasks."""

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if message.actor_name != "fan_out" or exception is not None:
            return
        token, count, seconds = (*message.args, 0.0)[:3]
        record = broker.get_actor("record")
        batched = getattr(broker, "batched_enqueues", contextlib.nullcontext)
        with batched():
            for i in range(count):
                record.send(f"{token}-{i}", seconds)


def read_log(log_path: str | Path) -> list[dict[str, Any]]:
    """Return the events the actors wrote, in order."""
    try:
        text = Path(log_path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def events(log_path: str | Path, event: str, token: str | None = None) -> list[dict[str, Any]]:
    """Return the ``event`` entries (``start``/``end``), of one token if given."""
    return [
        e
        for e in read_log(log_path)
        if e["event"] == event and (token is None or e["token"] == token)
    ]


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Wait for ``condition()`` to be truthy (tests only: they watch outcomes from outside)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def start_worker_process(
    kind: str,
    url: str,
    log_path: str,
    *,
    threads: int = 2,
    env: dict[str, str] | None = None,
    dramatiq_log: str | None = None,
    **options: Any,
) -> subprocess.Popen:
    """Start ``dramatiq redis_kit`` (one process) on a ``kind`` broker with ``options``.

    Dramatiq's own log goes to ``dramatiq_log`` when given, else nowhere.
    """
    env = {**os.environ, **(env or {})}
    env.update(
        KIT_BROKER=kind,
        KIT_REDIS_URL=url,
        KIT_LOG=log_path,
        KIT_OPTIONS=json.dumps(options),
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
    )
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "dramatiq", "redis_kit", "--processes", "1"),
            *("--threads", str(threads), "--worker-shutdown-timeout", "5000"),
            *(("--log-file", dramatiq_log) if dramatiq_log else ()),
        ],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Signal a worker process group and reap it (SIGKILL after 20 s)."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class CommandMeter:
    """Records ``redis-cli monitor`` on the test server; bills windows of it.

    Billing follows a per-command host: every command a client sends and every
    ``redis.call`` inside a script, free housekeeping excluded.
    """

    def __init__(self, url: str, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            ["redis-cli", "-u", url, "monitor"], stdout=self._log, stderr=subprocess.DEVNULL
        )
        time.sleep(0.3)  # MONITOR is in place once redis-cli is connected

    def bill(self, start: float, end: float) -> collections.Counter[str]:
        """Return billed commands between two ``time.time()`` stamps, by name.

        Script inner calls are prefixed with ``lua:``.
        """
        self._log.flush()
        counts: collections.Counter[str] = collections.Counter()
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = _MONITOR_LINE.match(line)
            if not match or not start <= float(match.group(1)) <= end:
                continue
            name = match.group(3).upper()
            if name not in FREE:
                counts[("lua:" if match.group(2) == "lua" else "") + name] += 1
        return counts

    def stop(self) -> None:
        """Stop recording."""
        self._process.terminate()
        self._process.wait()
        self._log.close()


if os.environ.get("KIT_REDIS_URL"):
    # Imported by ``dramatiq redis_kit`` in a worker process.
    _broker = make_broker(
        os.environ["KIT_BROKER"],
        os.environ["KIT_REDIS_URL"],
        **json.loads(os.environ.get("KIT_OPTIONS", "{}")),
    )
    dramatiq.set_broker(_broker)
    ACTORS = declare_actors(_broker, os.environ["KIT_LOG"])
