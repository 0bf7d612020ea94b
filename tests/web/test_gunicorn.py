"""The Procfile's web server: gunicorn with our config holds 200 streams and stops cleanly."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sse import Stream, open_stream
from workerkit import make_project

import db
from db import jobs

ROOT = Path(__file__).resolve().parents[2]
#: Concurrent streams the web process must hold (issue 4).
STREAMS = 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "gunicorn exited at start"
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)  # starting up; there is no event to wait on across processes
    raise TimeoutError("gunicorn did not answer /healthz")


@pytest.fixture
def gunicorn(sqlite_url: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """Gunicorn as in the Procfile, in the embedded mode on a SQLite file."""
    port = free_port()
    env = dict(os.environ, DATABASE_URL=sqlite_url, PYTHONPATH=str(ROOT), LOG_LEVEL="WARNING")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "--config", "python:web.gunicorn_conf",
            "--bind", f"127.0.0.1:{port}", "--workers", "1", "--access-logfile", "/dev/null",
            "web:create_app()",
        ],
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_until_up(port, process)
        yield process, port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_gunicorn_holds_200_streams_and_stops_promptly_on_sigterm(sqlite_url, gunicorn):
    # Given a job that waits (written, never dispatched) and gunicorn serving the app
    process, port = gunicorn
    db.configure(sqlite_url)
    project_id = make_project("a", "b")
    job_id = jobs.create_job(project_id, batch_size=5, max_batch_size=50, max_tasks=100).job_id

    # When 200 clients open the job's stream
    streams: list[Stream] = []
    for _ in range(STREAMS):
        stream = open_stream("127.0.0.1", port, job_id, timeout=30)
        assert stream.status == 200
        streams.append(stream)
    for stream in streams:
        assert next(stream.events()).event == "snapshot"

    # Then the server still answers other requests
    health = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    health.request("GET", "/healthz")
    assert health.getresponse().status == 200

    # And on SIGTERM every stream ends and gunicorn exits well within its graceful timeout
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    for stream in streams:
        assert list(stream.events()) == []
        stream.close()
    assert process.wait(timeout=30) == 0
    elapsed = time.monotonic() - started
    print(f"SIGTERM to exit with {STREAMS} streams open: {elapsed:.2f} s")
    assert elapsed < 15
