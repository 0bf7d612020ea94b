"""PostgreSQL connections as a budget: the Procfile's processes under load, counted."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
import sqlalchemy as sa
from click.testing import CliRunner
from processkit import FAST_ENV, ROOT
from test_procfile import BIN, free_port, honcho, wait_until_healthy

from cli import cli
from samples import SAMPLE_PROJECT_PATH
from settings import Settings

pytestmark = pytest.mark.slow

#: Event streams open on the job while it runs (issue 11).
STREAMS = 50
#: Most connections web + worker (8 threads) + scheduler may hold at once (issue 11).
BUDGET = 16


class ConnectionSampler:
    """Counts the connections to one database in ``pg_stat_activity``, on a thread.

    A measurement, taken every ``interval`` seconds until stopped: PostgreSQL keeps no
    record of a peak, so it is sampled.
    """

    def __init__(self, database_url: str, interval: float = 0.02) -> None:
        url = sa.make_url(database_url).set(drivername="postgresql")
        self._database = str(url.database)
        self._server = url.set(database="postgres").render_as_string(hide_password=False)
        self._interval = interval
        self._stop = threading.Event()
        self.peak: dict[str, int] = {}
        self.samples: list[dict[str, int]] = []
        self._thread = threading.Thread(target=self._run, name="connection-sampler")

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_total(self) -> int:
        return sum(self.peak.values())

    def _run(self) -> None:
        query = (
            "SELECT coalesce(application_name, ''), count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid() GROUP BY 1"
        )
        with psycopg.connect(self._server, autocommit=True) as connection:
            while not self._stop.wait(self._interval):
                rows = connection.execute(query, [self._database]).fetchall()
                sample = {name: int(count) for name, count in rows}
                self.samples.append(sample)
                if sum(sample.values()) > self.peak_total:
                    self.peak = sample


def follow(base: str, job_id: int, opened: threading.Barrier) -> list[str]:
    """Open the job's stream, wait for the others to open theirs, read it to its end."""
    kinds: list[str] = []
    with requests.get(f"{base}/api/jobs/{job_id}/events", stream=True, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines(decode_unicode=True):
            if not line.startswith("data:"):
                continue
            kinds.append(json.loads(line[5:]).get("type", "snapshot"))
            if len(kinds) == 1:
                opened.wait(timeout=60)  # every stream is open before the job is released
            if kinds[-1] in {"job_finished", "job_cancelled"}:
                break
    return kinds


@pytest.fixture
def deployment(redis_url: str, postgres_url: str, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Web, worker (the Procfile's 8 threads) and scheduler under honcho; yields the base URL."""
    port = free_port()
    env = dict(os.environ, **FAST_ENV)
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=postgres_url,
        SECRET_KEY="connections-test",
        API_OPEN="1",  # a deployed API takes no open writes otherwise
        GENERATOR_LATENCY_MS="300",
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
        PORT=str(port),
    )
    env.pop("WORKER_THREADS", None)
    log = (tmp_path / "honcho.log").open("wb")
    system = honcho(
        "start", "-p", str(port), "web", "worker", "scheduler",
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/healthz", system)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(system.pid, signal.SIGTERM)
        try:
            system.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(system.pid, signal.SIGKILL)
            system.wait()


def test_a_procfile_deployment_under_load_stays_within_16_connections(deployment, postgres_url):
    base = deployment
    project = requests.post(
        f"{base}/api/projects", json=json.loads(SAMPLE_PROJECT_PATH.read_text()), timeout=10
    )
    assert project.status_code == 201, project.text
    with ConnectionSampler(postgres_url) as sampler:
        # Given a job of the 62-task sample, 8 tasks at a time
        started = requests.post(
            f"{base}/api/task_hands_on/generate_all",
            json={"project_id": project.json()["id"], "config": {"batch_size": 8}},
            timeout=10,
        )
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]

        # When 50 clients follow it live over event streams until it finishes
        opened = threading.Barrier(STREAMS)
        with ThreadPoolExecutor(max_workers=STREAMS) as clients:
            followed = list(clients.map(lambda _: follow(base, job_id, opened), range(STREAMS)))

    # Then every stream saw the job finish
    assert all(kinds[-1] == "job_finished" for kinds in followed)
    job = requests.get(f"{base}/api/jobs/{job_id}", timeout=10).json()
    assert job["status"] == "succeeded" and job["succeeded_tasks"] == 62

    # And the deployment never held more than 16 connections to the database, the
    # worker one per thread, and the web process one LISTEN connection for all streams
    seen: dict[str, int] = collections.defaultdict(int)
    for sample in sampler.samples:
        for name, count in sample.items():
            seen[name] = max(seen[name], count)
    print(
        f"peak PostgreSQL connections: {sampler.peak_total} {sampler.peak}"
        f" (most per name: {dict(seen)}; {len(sampler.samples)} samples)"
    )
    assert sampler.peak_total <= BUDGET
    assert seen["handson/worker"] == 8
    assert seen["handson/listen"] == 1
    assert seen["handson/web"] >= 1

    # And `handson budget` shows what is open now, by process kind
    result = CliRunner().invoke(cli, ["budget"], obj=Settings(DATABASE_URL=postgres_url))
    assert result.exit_code == 0, result.output
    print(result.output)
    opened = result.output.split("PostgreSQL connections open now: ")[1]
    assert re.search(r"^  handson/worker\s+8  worker pools$", opened, re.M), opened
    assert re.search(r"^  handson/listen\s+1  event listeners$", opened, re.M), opened
