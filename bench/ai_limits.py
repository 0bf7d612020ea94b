"""What the provider limits let through, and what waiting for a turn costs.

Runs one job of independent tasks on embedded worker threads (SQLite, or the database
of ``--database-url``, migrated to head; the in-memory broker, or the Redis broker of
``--redis-url``) with ``GENERATOR=openai`` against the local OpenAI-protocol server of
the tests, which records when each request arrives and how many it holds at once::

    .venv/bin/python bench/ai_limits.py [--tasks 40] [--threads 8] [--max-concurrent 4]
        [--per-minute 30] [--answer-ms 200] [--recheck-ms 1000]
        [--database-url URL] [--redis-url URL]

Prints the peak at once, the most in any 60 s, the arrivals per 10 s, the hand-over
latency (a call slot freed -> the next request arrived: the k-th request used the slot
the (k - max_concurrent)-th freed, so this holds while calls, not the minute window,
bind) and what a wait costs: the SQL statements (and Redis commands, with
``--redis-url``) of the job beyond the same job run with no limit, per wait (a wait is a
task told "not now": parked or sent again later). ``--recheck-ms`` is only read by code
that re-checks on a timer (before the wake-up; ``AI_LIMIT_RECHECK_MS``).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from fake_openai import FakeOpenAI, completion  # noqa: E402
from jobwatch import wait_for_job  # noqa: E402
from workerkit import make_project, start_embedded  # noqa: E402

from db import migrate  # noqa: E402
from settings import Settings  # noqa: E402
from workers import dispatch  # noqa: E402


def most_in_any_minute(times: list[float]) -> int:
    """The most arrivals in any 60 s window."""
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + 60) for i, start in enumerate(times))


class _Waits(logging.Handler):
    """Counts the limiter's "AI limit (...)" log records: one per wait."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.getMessage().startswith("AI limit (")


@dataclasses.dataclass
class Run:
    job: dict[str, Any]
    arrivals: list[float]
    peak: int
    waits: int
    statements: int
    redis_commands: int | None
    elapsed_s: float


def redis_calls(url: str | None) -> int | None:
    """Commands the Redis server has processed (INFO itself excluded); None: no Redis."""
    if not url:
        return None
    stats = redis.Redis.from_url(url).info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


def run(args: argparse.Namespace, database_url: str, max_concurrent: int, per_minute: int) -> Run:
    """Run one job of ``args.tasks`` tasks under the given limits; return what it cost."""
    overrides: dict[str, Any] = {}
    if "AI_LIMIT_RECHECK_MS" in Settings.__dataclass_fields__:  # code that re-checks
        overrides["AI_LIMIT_RECHECK_MS"] = args.recheck_ms
    if args.redis_url:
        redis.Redis.from_url(args.redis_url).flushdb()
        overrides["REDIS_URL"] = args.redis_url
    waits = _Waits()
    logging.getLogger("workers.middleware.ai_limits").addHandler(waits)
    logging.getLogger("workers.middleware.ai_limits").setLevel(logging.INFO)
    statements = 0

    def count(*_: object) -> None:
        nonlocal statements
        statements += 1

    with FakeOpenAI() as api:
        answer = dataclasses.replace(completion("# Guide\n\nDo it."), delay_s=args.answer_ms / 1000)
        api.script([answer] * args.tasks)
        embedded = start_embedded(
            database_url,
            args.threads,
            GENERATOR="openai",
            OPENAI_BASE_URL=api.url,
            OPENAI_API_KEY="sk-bench",
            AI_MAX_CONCURRENT=max_concurrent,
            AI_REQUESTS_PER_MINUTE=per_minute,
            TASK_TIME_LIMIT_MS=600_000,
            **overrides,
        )
        try:
            project_id = make_project(*[f"task-{n}" for n in range(args.tasks)])
            commands_before = redis_calls(args.redis_url)
            sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
            started = time.time()
            job_id = dispatch.submit(
                project_id,
                batch_size=min(args.tasks, 50),
                max_batch_size=50,
                max_tasks=10_000,
                max_in_flight=args.tasks,
            )
            job, _ = wait_for_job(job_id, timeout=args.tasks * 60 / max(1, per_minute) + 120)
            elapsed = time.time() - started
            sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
            commands_after = redis_calls(args.redis_url)
        finally:
            embedded.worker.stop()
            logging.getLogger("workers.middleware.ai_limits").removeHandler(waits)
        arrivals = sorted(r.at - started for r in api.requests)
        commands = None if commands_before is None else commands_after - commands_before
        return Run(job, arrivals, api.peak_in_flight, waits.count, statements, commands, elapsed)


def hand_overs(arrivals: list[float], answer_s: float, slots: int) -> list[float]:
    """Seconds from a slot freed (its call answered) to the next request that used it."""
    freed = sorted(t + answer_s for t in arrivals)
    return [arrivals[k] - freed[k - slots] for k in range(slots, len(arrivals))]


def report(args: argparse.Namespace, limited: Run, free: Run) -> None:
    arrivals = limited.arrivals
    print(
        f"limits: {args.max_concurrent or 'no'} at once, {args.per_minute or 'no'} a minute; "
        f"{args.tasks} tasks of {args.answer_ms} ms on {args.threads} threads"
    )
    job = limited.job
    print(f"job {job['status']}: {job['succeeded_tasks']}/{job['total_tasks']} guides")
    print(
        f"requests: {len(arrivals)}, first at {arrivals[0]:.2f} s, last at {arrivals[-1]:.2f} s "
        f"(job {limited.elapsed_s:.2f} s; with no limit {free.elapsed_s:.2f} s)"
    )
    print(f"peak at once at the server: {limited.peak}")
    print(f"most in any 60 s: {most_in_any_minute(arrivals)}")
    if args.max_concurrent and len(arrivals) > args.max_concurrent:
        gaps = hand_overs(arrivals, args.answer_ms / 1000, args.max_concurrent)
        print(
            f"hand-over (slot freed -> next request): mean {1000 * statistics.mean(gaps):.0f} ms,"
            f" max {1000 * max(gaps):.0f} ms"
        )
    waits = max(1, limited.waits)
    extra_sql = limited.statements - free.statements
    total = f"{extra_sql} SQL statements"
    each = f"{extra_sql / waits:.1f} SQL statements"
    if limited.redis_commands is not None and free.redis_commands is not None:
        extra_redis = limited.redis_commands - free.redis_commands
        total += f", {extra_redis} Redis commands"
        each += f", {extra_redis / waits:.1f} Redis commands"
    print(f"waits: {limited.waits}; beyond the same job with no limit: {total}; per wait: {each}")
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
    parser.add_argument("--redis-url", help="a Redis to use (FLUSHED) instead of in-memory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite:///{folder}/bench.db"
        migrate.upgrade(url)
        free = run(args, url, 0, 0)
        limited = run(args, url, args.max_concurrent, args.per_minute)
    report(args, limited, free)


if __name__ == "__main__":
    main()
