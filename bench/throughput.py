"""Throughput of no-op messages: stock Dramatiq's Redis consumer against ours.

Run next to a throwaway PostgreSQL (this script starts its own redis-server)::

    scripts/with-services.sh .venv/bin/python bench/throughput.py [--messages 3000]

One worker process (5 threads) per broker, idle and booted; the bench then sends
``--messages`` no-op messages one by one and measures the time from the first send to
the last message handled. Prints messages per second and ours as a share of stock's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import redis_cost  # noqa: E402


def drain_seconds(kind: str, port: int, db_url: str, messages: int) -> float:
    """Send ``messages`` pings to an idle worker; return seconds until the last is handled."""
    import dramatiq

    from settings import Settings
    from workers import broker as worker_setup

    redis_url = f"redis://127.0.0.1:{port}/0"
    env = redis_cost.base_env(redis_url, db_url)
    with (
        tempfile.NamedTemporaryFile() as pings,
        redis_cost.worker_process(kind, env, pings.name),
    ):
        redis_cost.use_broker_kind(kind)
        broker = worker_setup.build_broker(Settings(REDIS_URL=redis_url, DATABASE_URL=db_url))
        ping = dramatiq.actor(
            lambda sent_at: None, actor_name="ping", broker=broker, queue_name="handson"
        )
        started = time.time()
        for _ in range(messages):
            ping.send(started)  # each handled ping logs its time since ``started``
        deadline = time.monotonic() + 120
        while len(Path(pings.name).read_text().split()) < messages:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kind}: not every message was handled within 120 s")
            time.sleep(0.05)  # the bench waits; the product never does
        broker.close()
        return max(float(x) for x in Path(pings.name).read_text().split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000, help="no-op messages per run")
    parser.add_argument("--runs", type=int, default=2, help="runs per broker (best is kept)")
    args = parser.parse_args()
    import sample_job

    rates = {}
    with (
        redis_cost.redis_server() as port,
        sample_job.fresh_postgres(os.environ["TEST_DATABASE_URL"]) as db_url,
    ):
        for kind in redis_cost.KINDS:
            best = min(drain_seconds(kind, port, db_url, args.messages) for _ in range(args.runs))
            rates[kind] = args.messages / best
            print(f"{kind:<8} {args.messages} no-op messages in {best:.2f} s: {rates[kind]:.0f}/s")
    print(f"ours: {100 * rates['frugal'] / rates['stock']:.0f}% of stock's throughput")


if __name__ == "__main__":
    main()
