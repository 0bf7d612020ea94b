"""The Procfile end to end under honcho: release, web, worker and scheduler."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from processkit import FAST_ENV, ROOT

from db import migrate
from samples import SAMPLE_PROJECT_PATH

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture
def empty_database(postgres_server_url: str) -> Iterator[str]:
    """A PostgreSQL database with no table at all: the release phase must migrate it."""
    name = f"procfile_{uuid.uuid4().hex[:8]}"
    admin = sa.make_url(postgres_server_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield sa.make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def honcho(*args: str, env: dict[str, str], **kwargs) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    return subprocess.Popen([str(BIN / "honcho"), *args], env=env, cwd=ROOT, **kwargs)


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "honcho exited before the web process was up"
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # still starting (loading the app can take seconds on a busy machine)
        time.sleep(0.3)
    raise AssertionError(f"{url} was not healthy within {timeout} s")


def follow_until_finished(url: str) -> list[str]:
    """Read the job's event stream until its final event; return the event types."""
    kinds = []
    with requests.get(url, stream=True, timeout=120) as response:
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("data:"):
                kinds.append(json.loads(line[5:]).get("type", "snapshot"))
                if kinds[-1] in {"job_finished", "job_cancelled"}:
                    break
    return kinds


def test_honcho_runs_the_procfile_and_stops_on_sigterm(redis_url, empty_database, tmp_path):
    port = free_port()
    env = dict(os.environ, **FAST_ENV)
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=empty_database,
        SECRET_KEY="procfile-test",
        API_TOKEN="procfile-token",
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
        PORT=str(port),
    )

    # Given the release phase, run as the platform runs it
    assert honcho("start", "release", env=env).wait(timeout=120) == 0
    head = ScriptDirectory.from_config(migrate.alembic_config(empty_database)).get_current_head()
    assert migrate.current(empty_database) == head

    # When web, worker and scheduler start, and a job is submitted over HTTP
    log = (tmp_path / "honcho.log").open("wb")
    system = honcho(
        "start", "-p", str(port), "web", "worker", "scheduler",
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{base}/healthz", system)
        auth = {"Authorization": "Bearer procfile-token"}  # a deployed API takes no open writes
        created = requests.post(
            f"{base}/api/projects",
            json=json.loads(SAMPLE_PROJECT_PATH.read_text()),
            headers=auth,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        started = requests.post(
            f"{base}/api/task_hands_on/generate_all",
            json={"project_id": created.json()["id"], "config": {"batch_size": 5}},
            headers=auth,
            timeout=10,
        )
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]

        # Then it completes, followed live over the event stream
        kinds = follow_until_finished(f"{base}/api/jobs/{job_id}/events")
        assert kinds[-1] == "job_finished"
        job = requests.get(f"{base}/api/jobs/{job_id}", timeout=10).json()
        assert job["status"] == "succeeded" and job["succeeded_tasks"] == 62
    finally:
        # And SIGTERM stops everything within a platform's 30 s
        stopping = time.monotonic()
        os.killpg(system.pid, signal.SIGTERM)
        try:
            system.wait(timeout=30)
        finally:
            stopped_in = time.monotonic() - stopping
            os.killpg(system.pid, signal.SIGKILL) if system.poll() is None else None
    left = subprocess.run(["pgrep", "-g", str(system.pid)], capture_output=True, text=True)
    assert left.stdout.strip() == "", f"processes left: {left.stdout}"
    assert stopped_in < 30
    print(f"honcho: everything stopped {stopped_in:.1f} s after SIGTERM")
