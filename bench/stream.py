"""What streaming guides costs: flushes per task, SQL statements and bytes per flush, Redis.

Run next to a throwaway PostgreSQL (this script starts its own redis-server)::

    scripts/with-services.sh .venv/bin/python bench/stream.py [--tasks 10] [--latency-ms 2000]

Runs the same job twice, streaming off (``GUIDE_STREAM_INTERVAL_MS=0``) then on (300 ms),
each on a fresh PostgreSQL database, on our Redis broker with 5 worker threads in this
process: ``--tasks`` tasks of the sample project without their dependencies (5 in
flight), the offline generator writing each guide word by word over ``--latency-ms``.
This process's event hub LISTENs as a web process does and records every delta it hears.
Prints, per run: flushes per second of writing per task (mean and max over tasks, the
tail's flush included), the shortest gap between two flushes of a task (the tail's left
out), SQL statements per flush (SQLAlchemy's count of
statements sent; each flush also checks a connection out of the pool, which pings it),
bytes per flush (NOTIFY payloads), and Redis commands billed (``redis-cli monitor`` and
``redis-bill``, as ``bench/redis_cost.py`` counts them). Writes ``bench/results/stream.json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

import dramatiq  # noqa: E402
from sqlalchemy import event  # noqa: E402

import db  # noqa: E402
from db import jobs, listen, projects  # noqa: E402
from db.text_stream import TextDelta  # noqa: E402
from samples import load_sample  # noqa: E402
from settings import Settings  # noqa: E402
from workers import broker as worker_setup  # noqa: E402
from workers import dispatch  # noqa: E402

#: Worker threads, and tasks in flight.
THREADS = 5


@contextlib.contextmanager
def counted() -> Iterator[dict[str, Any]]:
    """Count statements (all, and the NOTIFYs of guide text) and pool checkouts."""
    counts: dict[str, Any] = {"statements": 0, "notifies": 0, "checkouts": 0}

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        counts["statements"] += 1
        counts["notifies"] += "pg_notify('handson_text'" in statement

    def checkout(*_args: Any) -> None:
        counts["checkouts"] += 1

    engine = db.get_engine()
    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine.pool, "checkout", checkout)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine.pool, "checkout", checkout)


def project(tasks: int) -> int:
    """Store the first ``tasks`` tasks of the sample, independent of each other."""
    sample = load_sample()
    sample["tasks"] = [{**t, "depends_on": []} for t in sample["tasks"][:tasks]]
    return projects.create_project(projects.parse_project(sample, max_tasks=1000))


def run_job(settings: Settings, tasks: int, port: int) -> dict[str, Any]:
    """Run the job on an in-process worker; return its cost and the deltas heard."""
    import redis_cost

    broker = worker_setup.configure(settings)
    worker = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=100)
    worker.start()
    project_id = project(tasks)
    hub = listen.get_hub()
    heard: list[tuple[float, TextDelta]] = []
    hear = hub.hear_text

    def timed(delta: TextDelta) -> None:  # when the hub hears each delta
        heard.append((time.monotonic(), delta))
        hear(delta)

    hub.hear_text = timed  # type: ignore[method-assign]
    try:
        with redis_cost.metered(port) as bill, counted() as counts:
            started = time.perf_counter()
            job_id = dispatch.submit(
                project_id, batch_size=THREADS, max_batch_size=50, max_tasks=1000
            )
            for _ in listen.watch(job_id, hub=hub):
                pass
            wall = time.perf_counter() - started
            time.sleep(0.5)  # the last acks land after the job's last event
    finally:
        hub.hear_text = hear  # type: ignore[method-assign]
        worker.stop()
        broker.close()
    return {
        "interval_s": settings.GUIDE_STREAM_INTERVAL_MS / 1000,
        "job": jobs.snapshot(job_id),
        "wall_s": wall,
        "bill": bill,
        "counts": counts,
        "deltas": heard,
    }


def figures(run: dict[str, Any]) -> dict[str, Any]:
    """Flush rates per task, statements and bytes per flush, Redis commands billed."""
    by_run: dict[int, list[TextDelta]] = collections.defaultdict(list)
    for _, delta in run["deltas"]:
        by_run[delta.run_id].append(delta)
    counts, job = run["counts"], run["job"]
    row: dict[str, Any] = {
        "status": job["status"],
        "tasks": job["total_tasks"],
        "wall_s": run["wall_s"],
        "redis_billed": run["bill"]["billed"],
        "statements": counts["statements"],
        "checkouts": counts["checkouts"],
        "flushes": counts["notifies"],
    }
    if not by_run:
        return row
    times = _flush_times(run)
    # Per second of writing: the first flush comes one interval after the first word.
    interval = run["interval_s"]
    rates = [len(ts) / (ts[-1] - ts[0] + interval) for ts in times.values()]
    # The tail's flush may follow the one before sooner: it is left out of the gaps.
    gaps = [b - a for ts in times.values() for a, b in itertools.pairwise(ts[:-1])]
    sizes = [len(d.payload().encode()) for _, d in run["deltas"]]
    row.update(
        flushes_per_task=statistics.mean(len(ts) for ts in times.values()),
        flush_rate_mean=statistics.mean(rates),
        flush_rate_max=max(rates),
        shortest_gap_s=min(gaps) if gaps else None,
        statements_per_flush=counts["notifies"] / len(run["deltas"]),
        bytes_per_flush_mean=statistics.mean(sizes),
        bytes_per_flush_max=max(sizes),
    )
    return row


def _flush_times(run: dict[str, Any]) -> dict[int, list[float]]:
    """When this process heard each flush, per run."""
    times: dict[int, list[float]] = collections.defaultdict(list)
    for _heard_at, delta in run["deltas"]:
        times[delta.run_id].append(_heard_at)
    return times


def main() -> None:
    import redis_cost
    import sample_job

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--latency-ms", type=int, default=2000)
    parser.add_argument("--interval-ms", type=int, default=300)
    args = parser.parse_args()
    admin_url = os.environ["TEST_DATABASE_URL"]
    results: dict[str, Any] = {}
    with redis_cost.redis_server() as port:
        for name, interval in (("off", 0), ("on", args.interval_ms)):
            with sample_job.fresh_postgres(admin_url) as url:
                settings = Settings(
                    DATABASE_URL=url,
                    REDIS_URL=f"redis://127.0.0.1:{port}/0",
                    GENERATOR_LATENCY_MS=args.latency_ms,
                    GUIDE_STREAM_INTERVAL_MS=interval,
                )
                results[name] = figures(run_job(settings, args.tasks, port))
    print_table(results, args)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "stream.json").write_text(json.dumps(results, indent=2, default=str))


def print_table(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\n{args.tasks} tasks, {THREADS} at once, offline generator {args.latency_ms} ms,"
        f" PostgreSQL + our Redis broker, interval {args.interval_ms} ms"
    )
    print(
        f"{'streaming':<10} {'status':<10} {'wall s':>7} {'SQL stmts':>9} {'checkouts':>9}"
        f" {'flushes':>8} {'Redis billed':>12}"
    )
    for name, r in results.items():
        print(
            f"{name:<10} {r['status']:<10} {r['wall_s']:>7.2f} {r['statements']:>9}"
            f" {r['checkouts']:>9} {r['flushes']:>8} {r['redis_billed']:>12}"
        )
    on, off = results["on"], results["off"]
    print(
        f"\nflushes per task: {on['flushes_per_task']:.1f}; flushes per second per task:"
        f" mean {on['flush_rate_mean']:.2f}, max {on['flush_rate_max']:.2f};"
        f" shortest gap {1000 * on['shortest_gap_s']:.0f} ms"
    )
    print(
        f"SQL statements per flush: {on['statements_per_flush']:.2f}"
        f" (added by streaming: {on['statements'] - off['statements']} for"
        f" {on['flushes']} flushes; pool checkouts added: {on['checkouts'] - off['checkouts']})"
    )
    print(
        f"bytes per flush (NOTIFY payload): mean {on['bytes_per_flush_mean']:.0f},"
        f" max {on['bytes_per_flush_max']}"
    )
    print(
        f"Redis commands billed: off {off['redis_billed']}, on {on['redis_billed']}"
        f" (difference {on['redis_billed'] - off['redis_billed']:+d})"
    )


if __name__ == "__main__":
    main()
