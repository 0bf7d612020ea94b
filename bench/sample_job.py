"""Wall time of the 62-task sample job per strategy, embedded and on Redis + PostgreSQL.

Run next to throwaway servers (they are started and stopped for you)::

    scripts/with-services.sh .venv/bin/python bench/sample_job.py \
        [--config 1000:0 200:0 1000:0.5] [--strategy flow batches] [--runs 1]

Each ``--config`` is ``LATENCY_MS:JITTER`` (the offline generator's median latency and
the sigma of its lognormal spread). For each config, the strategies run side by side in
one run, at batch size 5 (the flow strategy with 5 in flight). The ideal is the same
schedule with zero overhead: the engine's own rules replayed on each task's actual
latency (drawn from its key and job id). Prints a table (best and median of ``--runs``)
and writes ``bench/results/sample_job.json``. Without ``TEST_REDIS_URL`` and
``TEST_DATABASE_URL`` (set by ``with-services.sh``) only the embedded rows are measured.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import heapq
import itertools
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
import pipelines  # noqa: E402
from db import jobs, listen, migrate, projects  # noqa: E402
from db.guides import GuideRequest  # noqa: E402
from samples import load_sample  # noqa: E402
from settings import Settings  # noqa: E402
from workers import broker as worker_setup  # noqa: E402
from workers import dispatch  # noqa: E402
from workers.embedded import EmbeddedWorker  # noqa: E402
from workers.generators import OfflineGenerator  # noqa: E402

BATCH_SIZE = 5


def _sample_nodes() -> list[pipelines.TaskNode[str]]:
    spec = projects.parse_project(load_sample(), max_tasks=1000)
    return [pipelines.TaskNode(task.key, tuple(task.depends_on)) for task in spec.tasks]


def ideal_seconds(job: dict[str, Any], latency_ms: int, jitter: float) -> float:
    """The job's wall time with zero overhead: the engine's rules on each task's latency.

    Units are released while slots are free, the longest chain left first, then in plan
    order (``pipelines.release_order``; a pipeline takes one slot, a group's task one
    each); a unit goes when every link into it is done.
    """
    generator = OfflineGenerator(latency_ms=latency_ms, jitter=jitter)
    nodes = _sample_nodes()
    plan = pipelines.plan(nodes, job["strategy"], job["batch_size"])
    request = GuideRequest(project_name="", task_key="", task_title="", job_id=job["id"])
    latency = {
        n.key: generator.latency_s(dataclasses.replace(request, task_key=n.key)) for n in nodes
    }
    waiting = collections.Counter(gated for _, gated in plan.links)
    links = collections.defaultdict(list)
    for done, gated in plan.links:
        links[done].append(gated)
    unit_of = {unit.keys[0]: number for number, unit in enumerate(plan.units)}
    order = pipelines.release_order(plan)
    ready = [order[number] for number, unit in enumerate(plan.units) if not waiting[unit.keys[0]]]
    heapq.heapify(ready)
    ends: list[tuple[float, int, str, bool]] = []  # (time, tie, task, frees a slot)
    tie, now, free = itertools.count(), 0.0, job["max_in_flight"]
    while ready or ends:
        took = False
        while ready and free > 0:
            unit = plan.units[ready[0][1]]
            cost = 1 if unit.mode == pipelines.PIPELINE else len(unit.keys)
            if took and cost > free:  # as the engine: the first ready unit always goes
                break
            took = True
            heapq.heappop(ready)
            free -= cost
            at = now
            for step, key in enumerate(unit.keys):
                pipelined = unit.mode == pipelines.PIPELINE
                at = at + latency[key] if pipelined else now + latency[key]
                frees = not pipelined or step == len(unit.keys) - 1
                heapq.heappush(ends, (at, next(tie), key, frees))
        now, _, key, frees = heapq.heappop(ends)
        free += frees
        for gated in links[key]:
            waiting[gated] -= 1
            if not waiting[gated]:
                heapq.heappush(ready, order[unit_of[gated]])
    return now


def run_sample(settings: Settings, strategy: str) -> dict[str, Any]:
    """Submit the sample job and follow it to its end; return its snapshot and wall time."""
    project_id = projects.create_project(projects.parse_project(load_sample(), max_tasks=1000))
    started = time.perf_counter()
    job_id = dispatch.submit(
        project_id, batch_size=BATCH_SIZE, max_batch_size=50, max_tasks=1000, strategy=strategy
    )
    for _ in listen.watch(job_id):
        pass
    wall = time.perf_counter() - started
    return {"job": jobs.snapshot(job_id), "wall_s": wall}


def embedded_row(latency_ms: int, jitter: float, strategy: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            DATABASE_URL=f"sqlite:///{tmp}/bench.db",
            GENERATOR_LATENCY_MS=latency_ms,
            GENERATOR_LATENCY_JITTER=jitter,
        )
        migrate.upgrade(settings.DATABASE_URL)
        broker = worker_setup.configure(settings)
        with EmbeddedWorker(broker, threads=BATCH_SIZE):
            return run_sample(settings, strategy)


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


def redis_row(
    latency_ms: int, jitter: float, strategy: str, redis_url: str, admin_url: str
) -> dict[str, Any]:
    with fresh_postgres(admin_url) as url:
        settings = Settings(DATABASE_URL=url, REDIS_URL=redis_url, GENERATOR_LATENCY_MS=latency_ms)
        worker_setup.configure(settings)
        env = dict(
            os.environ,
            DATABASE_URL=url,
            REDIS_URL=redis_url,
            GENERATOR_LATENCY_MS=str(latency_ms),
            GENERATOR_LATENCY_JITTER=str(jitter),
        )
        env["PYTHONPATH"] = str(ROOT)
        # The worker's log lines would run through the table: they go to a file.
        log = (Path(tempfile.gettempdir()) / "bench-sample-job-worker.log").open("ab")
        worker = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "workers", "--processes", "1", "--threads", "5"],
            env=env,
            cwd=ROOT,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            time.sleep(3)  # let the worker process boot before the clock starts
            return run_sample(settings, strategy)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)


def _config(text: str) -> tuple[int, float]:
    latency, _, jitter = text.partition(":")
    return int(latency), float(jitter or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        type=_config,
        nargs="+",
        default=[(1000, 0.0), (200, 0.0), (1000, 0.5)],
        help="LATENCY_MS:JITTER pairs [default: 1000:0 200:0 1000:0.5]",
    )
    parser.add_argument(
        "--strategy",
        nargs="+",
        default=[pipelines.BATCHES, pipelines.FLOW],
        choices=pipelines.STRATEGIES,
    )
    parser.add_argument("--runs", type=int, default=1, help="runs per row (noisy machines: 3)")
    parser.add_argument("--embedded-only", action="store_true", help="skip Redis + PostgreSQL")
    args = parser.parse_args()
    redis_url, admin_url = os.environ.get("TEST_REDIS_URL"), os.environ.get("TEST_DATABASE_URL")
    modes = {"embedded": embedded_row}
    if redis_url and admin_url and not args.embedded_only:
        modes["redis+pg"] = lambda *a: redis_row(*a, redis_url, admin_url)
    print(f"Sample job, 62 tasks, batch size (and tasks in flight) {BATCH_SIZE}")
    print(
        f"{'latency':>8} {'jitter':>6} {'mode':<9} {'strategy':<8} {'status':<10} {'best s':>7}"
        f" {'median s':>9} {'ideal s':>8} {'overhead':>9} {'vs batches':>10}"
    )
    results = []
    for (latency_ms, jitter), (mode, run) in itertools.product(args.config, modes.items()):
        best_of: dict[str, float] = {}
        for strategy in args.strategy:
            rows = [run(latency_ms, jitter, strategy) for _ in range(args.runs)]
            job = rows[-1]["job"]
            walls = sorted(row["wall_s"] for row in rows)
            best, median = walls[0], statistics.median(walls)
            best_of[strategy] = best
            ideal = ideal_seconds(job, latency_ms, jitter)
            statuses = ",".join(sorted({row["job"]["status"] for row in rows}))
            versus = best / best_of["batches"] if "batches" in best_of else float("nan")
            results.append(
                {
                    "latency_ms": latency_ms,
                    "jitter": jitter,
                    "mode": mode,
                    "strategy": strategy,
                    "status": statuses,
                    "batches": job["total_batches"],
                    "wall_s": [round(wall, 3) for wall in walls],
                    "ideal_s": round(ideal, 3),
                }
            )
            print(
                f"{latency_ms:>8} {jitter:>6} {mode:<9} {strategy:<8} {statuses:<10} {best:>7.2f}"
                f" {median:>9.2f} {ideal:>8.2f} {100 * (best - ideal) / ideal:>8.1f}%"
                f" {versus:>10.2f}"
            )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "sample_job.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
