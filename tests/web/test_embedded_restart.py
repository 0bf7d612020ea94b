"""``handson serve`` as real processes: one per database, Ctrl+C then start again resumes.

Each test starts ``python -m cli serve`` on a SQLite file (the embedded mode of ``make
run``) and talks to it over HTTP, as a user would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from processkit import assert_counted_exactly_once
from sse import open_stream

import db
from db import jobs
from db.models import Event, Job

ROOT = Path(__file__).resolve().parents[2]
#: Longest a server may take to start, in seconds (a slow, shared machine).
START_TIMEOUT_S = 60.0
#: Longest wait for the events a test expects, in seconds (the stall timeout is 420).
FOLLOW_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _default_sigint() -> None:
    # A shell running the tests in the background ignores SIGINT in its children; a
    # terminal's Ctrl+C reaches `make run` with the default disposition, so restore it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Server:
    """A ``handson serve`` process: its port and its captured output."""

    process: subprocess.Popen[str]
    port: int
    log: Path

    def opener(self) -> urllib.request.OpenerDirector:
        """A browser of sorts: keeps its cookies (the session) across requests."""
        return urllib.request.build_opener(urllib.request.HTTPCookieProcessor())

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def interrupt(self) -> int:
        """Ctrl+C: SIGINT, then wait for the process to exit; return its exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


def run_cli(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cli ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=cli_env(database_url, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )


def cli_env(database_url: str, **env: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "PYTHONPATH": str(ROOT),
        "LOAD_SAMPLE": "1",
        "GENERATOR_LATENCY_MS": "150",
        **env,
    }


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Return ``start(database_url, port=None, **env)``: a server (``PORT``), serving."""
    started: list[Server] = []

    def start(database_url: str, port: int | None = None, **env: str) -> Server:
        port = port or free_port()
        log = tmp_path / f"serve-{len(started)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve"],
            env=cli_env(database_url, PORT=str(port), **env),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            preexec_fn=_default_sigint,
        )
        server = Server(process, port, log)
        started.append(server)
        watchdog = threading.Timer(START_TIMEOUT_S, process.kill)
        watchdog.start()
        try:
            first = process.stdout.readline() if process.stdout else ""  # blocks until said
        finally:
            watchdog.cancel()
        assert first.startswith(f"Serving on http://127.0.0.1:{port}/"), (first, log.read_text())
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.terminate()
            server.process.wait(timeout=30)


def follow_until(
    server: Server, job_id: int, done: Callable[[list[dict]], bool], after: int = 0
) -> list[dict]:
    """Read the job's events from the server until ``done(events)``; return them.

    Gives up after :data:`FOLLOW_TIMEOUT_S` (keep-alive comments would hold it open).
    """
    stream = open_stream("127.0.0.1", server.port, job_id, last_event_id=after)
    watchdog = threading.Timer(FOLLOW_TIMEOUT_S, stream.close)
    watchdog.start()
    seen: list[dict] = []
    try:
        for frame in stream.events():
            seen.append({"seq": frame.id, **frame.json()})
            if done(seen):
                return seen
    except OSError:
        pass  # closed by the watchdog
    finally:
        watchdog.cancel()
        stream.close()
    raise AssertionError(f"the stream ended first: {[e['type'] for e in seen][-5:]}")


def succeeded(count: int) -> Callable[[list[dict]], bool]:
    return lambda events: sum(e["type"] == "task_succeeded" for e in events) >= count


def finished(events: list[dict]) -> bool:
    return events[-1]["type"] in {"job_finished", "job_cancelled"}


def test_ctrl_c_mid_job_then_serving_again_resumes_the_job_at_once(serve, sqlite_url):
    # Given `make run` serving the sample, a form open in a browser, and a job under way
    first = serve(sqlite_url)
    browser = first.opener()
    form = browser.open(f"http://127.0.0.1:{first.port}/projects/new").read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    job_id = first.post("/api/task_hands_on/generate_all", {"project_id": 1})["job_id"]
    before = follow_until(first, job_id, succeeded(10))

    # When it is stopped with Ctrl+C in the middle of the job
    assert first.interrupt() == 0
    db.configure(sqlite_url)
    stopped = jobs.snapshot(job_id)
    assert stopped["status"] == "running" and stopped["done_tasks"] < stopped["total_tasks"]

    # ...and started again
    restarted_at = time.monotonic()
    second = serve(sqlite_url)
    after = follow_until(second, job_id, finished, after=before[-1]["seq"])
    resumed_in = time.monotonic() - restarted_at

    # Then the job ends succeeded, one guide per task, each counted once; its stopped
    # batch was re-dispatched at boot, not after the 7-minute stall timeout
    job = jobs.snapshot(job_id)
    assert_counted_exactly_once(job)
    assert "batch_redispatched" in [e["type"] for e in after]
    print(f"job resumed and finished {resumed_in:.1f} s after the restart")

    # And the form opened before the restart is still good: the secret key was kept
    # (readable by its owner only)
    fields = {"csrf_token": token, "name": "Across a restart", "tasks": "One\nTwo (after 1)"}
    created = browser.open(
        f"http://127.0.0.1:{second.port}/projects", urllib.parse.urlencode(fields).encode()
    )
    assert created.status == 200 and "/projects/2" in created.url
    key_file = Path(sa.make_url(sqlite_url).database + ".secret_key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_second_embedded_process_on_the_database_is_refused_and_writes_nothing(serve, sqlite_url):
    # Given `make run` serving a database
    first = serve(sqlite_url)
    db.configure(sqlite_url)
    with db.session_scope() as session:
        jobs_before = session.scalar(sa.select(sa.func.count(Job.id)))

    # When a second server, or a command that would run jobs, starts on it
    second = run_cli(sqlite_url, "serve", "--port", str(free_port()))
    enqueue = run_cli(sqlite_url, "enqueue", "1", "--wait")

    # Then each exits 2, naming the process that holds it, before writing anything
    holder = f"handson serve (pid {first.process.pid}, http://127.0.0.1:{first.port}/)"
    for refused in (second, enqueue):
        assert refused.returncode == 2, refused.stderr
        assert holder in refused.stderr and "only one process" in refused.stderr
        assert "Serving on" not in refused.stdout
    with db.session_scope() as session:
        assert session.scalar(sa.select(sa.func.count(Job.id))) == jobs_before
        assert session.scalar(sa.select(sa.func.count(Event.id))) == 0


def test_a_port_in_use_is_said_before_serving(tmp_path, sqlite_url):
    # Given a port some other program listens on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        # When `make run` is asked to serve on it
        result = run_cli(sqlite_url, "serve", "--port", str(port))

    # Then it says so and what to do, exit 2, and never claims to serve
    assert result.returncode == 2, result.stderr
    assert f"Port {port} is in use" in result.stderr
    assert f"PORT={port + 1} make run" in result.stderr
    assert "Serving on" not in result.stdout


def test_the_job_page_follows_the_job_through_ctrl_c_and_a_restart(serve, sqlite_url, page):
    # Given the job page open in a browser while the job runs
    first = serve(sqlite_url)
    job_id = first.post("/api/task_hands_on/generate_all", {"project_id": 1})["job_id"]
    page.goto(f"http://127.0.0.1:{first.port}/jobs/{job_id}")
    page.wait_for_function("() => Number(document.getElementById('count-done').textContent) >= 5")

    # When the server is stopped with Ctrl+C, the page says it is reconnecting
    assert first.interrupt() == 0
    page.wait_for_function(
        "() => document.getElementById('connection').textContent.includes('reconnecting')"
    )

    # ...and started again on the same port
    serve(sqlite_url, port=first.port)

    # Then the page picks the job up where it was and shows it to its end
    page.wait_for_function(
        "() => document.getElementById('job-status').textContent.trim() === 'succeeded'",
        timeout=FOLLOW_TIMEOUT_S * 1000,
    )
    done = page.text_content("#count-done")
    assert done == page.text_content("#count-total") == "62"
