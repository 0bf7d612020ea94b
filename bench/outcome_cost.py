"""Time to record one task outcome on PostgreSQL, per strategy: the engine's own cost.

Run next to a throwaway PostgreSQL (started and stopped for you)::

    scripts/with-services.sh .venv/bin/python bench/outcome_cost.py [--outcomes 400]

A job of independent tasks (batch size 5, so 5 in flight with flow) has its runs started
and their outcomes recorded one after another from one thread, each outcome's
releases fed back in, as the ``Progress`` middleware records them but with no broker, no
generator and no other thread. Prints the median and 90th percentile of
``progress.record_outcome``'s wall time, and the SQL statements per outcome.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from sample_job import fresh_postgres  # noqa: E402
from sqlalchemy import event  # noqa: E402
from workerkit import make_project  # noqa: E402

import db  # noqa: E402
import pipelines  # noqa: E402
from db import jobs, progress, starts  # noqa: E402
from db.models import RunStatus  # noqa: E402


def outcome_times(strategy: str, outcomes: int) -> tuple[list[float], float]:
    """Record ``outcomes`` outcomes of a fresh job; return their ms and statements each."""
    project_id = make_project(*[f"t{i}" for i in range(outcomes + 5)])
    created = jobs.create_job(
        project_id, batch_size=5, max_batch_size=50, max_tasks=10_000, strategy=strategy
    )
    pending = [run for spec in created.dispatches for run in spec.run_ids]
    statements = [0]

    def count(*_args: object) -> None:
        statements[0] += 1

    times: list[float] = []
    while pending and len(times) < outcomes:
        run_id = pending.pop(0)
        starts.start_run(run_id)
        event.listen(db.get_engine(), "before_cursor_execute", count)
        started = time.perf_counter()
        outcome = progress.record_outcome(run_id, RunStatus.SUCCEEDED)
        times.append((time.perf_counter() - started) * 1000)
        event.remove(db.get_engine(), "before_cursor_execute", count)
        pending += [run for spec in outcome.dispatches for run in spec.run_ids]
    return times, statements[0] / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", type=int, default=400)
    args = parser.parse_args()
    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url:
        sys.exit("bench/outcome_cost.py: needs TEST_DATABASE_URL (run it under with-services.sh)")
    print(f"{args.outcomes} outcomes recorded one after another, PostgreSQL, batch size 5")
    print(f"{'strategy':<8} {'median ms':>9} {'p90 ms':>7} {'statements':>10}")
    with fresh_postgres(admin_url) as url:
        db.configure(url)
        for strategy in pipelines.STRATEGIES:
            times, statements = outcome_times(strategy, args.outcomes)
            p90 = statistics.quantiles(times, n=10)[-1]
            print(f"{strategy:<8} {statistics.median(times):9.2f} {p90:7.2f} {statements:10.2f}")


if __name__ == "__main__":
    main()
