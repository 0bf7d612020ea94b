"""Wall time of the 62-task sample job, embedded and on Redis + PostgreSQL; SQL per outcome.

Run next to throwaway servers (they are started and stopped for you)::

    scripts/with-services.sh .venv/bin/python bench/sample_job.py [--latency-ms 200]

Prints a table (best and median of ``--runs`` runs per mode) and writes
``bench/results/sample_job_<latency>ms.json``. Without ``TEST_REDIS_URL``
and ``TEST_DATABASE_URL`` (set by ``with-services.sh``) only the embedded row is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

import db  # noqa: E402
from db import jobs, listen, migrate, projects  # noqa: E402
from samples import load_sample  # noqa: E402
from settings import Settings  # noqa: E402
from workers import broker as worker_setup  # noqa: E402
from workers import dispatch  # noqa: E402
from workers.embedded import EmbeddedWorker  # noqa: E402


def ideal_seconds(job: dict[str, Any], latency_ms: int) -> float:
    """Time the job needs with zero overhead: one latency per group, one per pipeline step."""
    steps = sum(b["total"] if b["mode"] == "pipeline" else 1 for b in job["batches"])
    return steps * latency_ms / 1000


def run_sample(settings: Settings) -> dict[str, Any]:
    """Submit the sample job and follow it to its end; return its snapshot and wall time."""
    project_id = projects.create_project(projects.parse_project(load_sample(), max_tasks=1000))
    started = time.perf_counter()
    job_id = dispatch.submit(
        project_id, batch_size=settings.BATCH_SIZE, max_batch_size=50, max_tasks=1000
    )
    for _ in listen.watch(job_id):
        pass
    wall = time.perf_counter() - started
    return {"job": jobs.snapshot(job_id), "wall_s": wall}


def embedded_row(latency_ms: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            DATABASE_URL=f"sqlite:///{tmp}/bench.db", GENERATOR_LATENCY_MS=latency_ms
        )
        migrate.upgrade(settings.DATABASE_URL)
        broker = worker_setup.configure(settings)
        with EmbeddedWorker(broker, threads=5):
            return run_sample(settings)


@contextlib.contextmanager
def fresh_postgres(admin_url: str):
    name = f"bench_{uuid.uuid4().hex[:8]}"
    conninfo = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        listen.close_hub()
        db.get_engine().dispose()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def redis_row(latency_ms: int, redis_url: str, admin_url: str) -> dict[str, Any]:
    with fresh_postgres(admin_url) as url:
        settings = Settings(DATABASE_URL=url, REDIS_URL=redis_url, GENERATOR_LATENCY_MS=latency_ms)
        worker_setup.configure(settings)
        env = dict(
            os.environ, DATABASE_URL=url, REDIS_URL=redis_url, GENERATOR_LATENCY_MS=str(latency_ms)
        )
        env["PYTHONPATH"] = str(ROOT)
        worker = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "workers", "--processes", "1", "--threads", "5"],
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            time.sleep(3)  # let the worker process boot before the clock starts
            return run_sample(settings)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=int, default=200, help="simulated AI latency per task")
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per mode (shared machines are noisy)"
    )
    args = parser.parse_args()
    modes = {"embedded (SQLite, in-memory broker)": lambda: embedded_row(args.latency_ms)}
    redis_url, admin_url = os.environ.get("TEST_REDIS_URL"), os.environ.get("TEST_DATABASE_URL")
    if redis_url and admin_url:
        modes["Redis + PostgreSQL (dramatiq workers)"] = lambda: redis_row(
            args.latency_ms, redis_url, admin_url
        )
    results = []
    print(f"Sample job, 62 tasks, batch size 5, GENERATOR_LATENCY_MS={args.latency_ms}")
    print(
        f"{'mode':<40} {'status':<10} {'runs':>5} {'best s':>7} {'median s':>9} {'ideal s':>8}"
        f" {'overhead (best, median)':>24}"
    )
    for mode, run in modes.items():
        rows = [run() for _ in range(args.runs)]
        job = rows[-1]["job"]
        walls = sorted(row["wall_s"] for row in rows)
        best, median = walls[0], statistics.median(walls)
        ideal = ideal_seconds(job, args.latency_ms)
        statuses = {row["job"]["status"] for row in rows}
        results.append(
            {
                "mode": mode,
                "status": ",".join(sorted(statuses)),
                "batches": job["total_batches"],
                "wall_s": [round(wall, 3) for wall in walls],
                "ideal_s": ideal,
            }
        )
        overhead = f"{100 * (best - ideal) / ideal:.1f}%, {100 * (median - ideal) / ideal:.1f}%"
        print(
            f"{mode:<40} {','.join(sorted(statuses)):<10} {len(walls):>5} {best:>7.2f}"
            f" {median:>9.2f} {ideal:>8.2f} {overhead:>24}"
        )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"sample_job_{args.latency_ms}ms.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
