"""What the provider limits let through: peak calls at once and the most in any 60 s.

Runs one job of independent tasks on embedded worker threads (SQLite, or the database
of ``--database-url``, migrated to head) with ``GENERATOR=openai`` against the local
OpenAI-protocol server of the tests, which records when each request arrives and how
many it holds at once::

    .venv/bin/python bench/ai_limits.py [--tasks 40] [--threads 8] [--max-concurrent 4]
        [--per-minute 30] [--answer-ms 200] [--recheck-ms 1000]

With more tasks than ``--per-minute`` the run lasts over a minute: the tasks past the
limit wait for the window to roll. Prints the figures and the arrivals per 10 s.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_openai import FakeOpenAI, completion  # noqa: E402
from jobwatch import wait_for_job  # noqa: E402
from workerkit import make_project, start_embedded  # noqa: E402

from db import migrate  # noqa: E402
from workers import dispatch  # noqa: E402


def most_in_any_minute(times: list[float]) -> int:
    """The most arrivals in any 60 s window."""
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + 60) for i, start in enumerate(times))


def run(args: argparse.Namespace, database_url: str) -> None:
    with FakeOpenAI() as api:
        answer = dataclasses.replace(completion("# Guide\n\nDo it."), delay_s=args.answer_ms / 1000)
        api.script([answer] * args.tasks)
        embedded = start_embedded(
            database_url,
            args.threads,
            GENERATOR="openai",
            OPENAI_BASE_URL=api.url,
            OPENAI_API_KEY="sk-bench",
            AI_MAX_CONCURRENT=args.max_concurrent,
            AI_REQUESTS_PER_MINUTE=args.per_minute,
            AI_LIMIT_RECHECK_MS=args.recheck_ms,
            TASK_TIME_LIMIT_MS=600_000,
        )
        try:
            project_id = make_project(*[f"task-{n}" for n in range(args.tasks)])
            started = time.time()
            job_id = dispatch.submit(
                project_id,
                batch_size=min(args.tasks, 50),
                max_batch_size=50,
                max_tasks=10_000,
                max_in_flight=args.tasks,
            )
            job, _ = wait_for_job(job_id, timeout=args.tasks * 60 / max(1, args.per_minute) + 120)
        finally:
            embedded.worker.stop()
        # A wait is one message sent to the delay queue (the worker moves it back when due).
        waits = sum(m.queue_name.endswith(".DQ") for m in embedded.enqueued)
        report(args, job, api, started, waits)


def report(
    args: argparse.Namespace, job: dict, api: FakeOpenAI, started: float, waits: int
) -> None:
    arrivals = sorted(r.at - started for r in api.requests)
    print(
        f"limits: {args.max_concurrent or 'no'} at once, {args.per_minute or 'no'} a minute; "
        f"{args.tasks} tasks of {args.answer_ms} ms on {args.threads} threads"
    )
    print(f"job {job['status']}: {job['succeeded_tasks']}/{job['total_tasks']} guides")
    print(f"requests: {len(arrivals)}, first at {arrivals[0]:.2f} s, last at {arrivals[-1]:.2f} s")
    print(f"peak at once at the server: {api.peak_in_flight}")
    print(f"most in any 60 s: {most_in_any_minute(arrivals)}")
    print(f"waits re-queued: {waits}")
    buckets = collections.Counter(int(t // 10) * 10 for t in arrivals)
    print(
        "arrivals per 10 s: "
        + ", ".join(f"{k}-{k + 10} s: {n}" for k, n in sorted(buckets.items()))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--max-concurrent", type=int, default=4)
    parser.add_argument("--per-minute", type=int, default=30)
    parser.add_argument("--answer-ms", type=int, default=200)
    parser.add_argument("--recheck-ms", type=int, default=1000)
    parser.add_argument("--database-url", help="a database to migrate and use (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite:///{folder}/bench.db"
        migrate.upgrade(url)
        run(args, url)


if __name__ == "__main__":
    main()
