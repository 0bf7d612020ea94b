"""Redis commands billed by stock Dramatiq's consumer and by ours, side by side.

Run next to a throwaway PostgreSQL (this script starts its own redis-server)::

    scripts/with-services.sh .venv/bin/python bench/redis_cost.py [--idle-s 60]

Measures, for each broker (``stock``: Dramatiq's ``RedisBroker``; ``frugal``: ours),
with the same project code (``workers`` package) in one worker process:

(a) an idle worker over a fixed window, scaled to an hour and a month; for ours also
    with its timers shortened 180x, which shows the cost of its periodic re-arms and
    maintenance that a short window at default settings cannot catch;
(b) the 62-task sample job at GENERATOR_LATENCY_MS 200 and 1000, on each strategy
    (``--strategies``): billed commands per task;
(c) the job's cost extrapolated to the origin's timing (13 batches of about 60 s);
(d) the wake-up latency from ``send()`` to actor start while idle (p50, p99).

Commands are recorded with ``redis-cli monitor`` and billed with ``redis-bill`` (found in
``../shared/tools`` of the checkout or of a parent folder, or in ``$REDIS_TOOLS``): every
command a client sends and every ``redis.call`` in a script. Prints a table and writes
``bench/results/redis_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]


def find_tools() -> Path:
    """Return the folder of ``redis-meter``/``redis-bill``: ``$REDIS_TOOLS`` when set, else
    the first ``shared/tools`` next to the checkout or one of its parents (``../shared/tools``
    of the checkout, ``../../shared/tools`` of a worktree in a folder of worktrees)."""
    if os.environ.get("REDIS_TOOLS"):
        return Path(os.environ["REDIS_TOOLS"])
    for parent in ROOT.parents:
        if (parent / "shared" / "tools" / "redis-bill").exists():
            return parent / "shared" / "tools"
    raise SystemExit("redis-bill not found in ../shared/tools; set REDIS_TOOLS to its folder")


TOOLS = find_tools()
#: Seconds per month used for projections (30 days).
MONTH_S = 30 * 24 * 3600
#: Our broker's timers, shortened for the "accelerated idle" row (milliseconds).
FAST_TIMERS = {"wait_timeout": 10_000, "maintenance_interval": 20_000}
KINDS = ("stock", "frugal")


# --- worker side: ``bench/redis_cost.py --worker KIND`` ----------------------------


def use_broker_kind(kind: str, options: dict[str, Any] | None = None) -> None:
    """Make ``workers.broker.build_broker`` build the ``kind`` broker (before it is imported)."""
    from dramatiq.brokers.redis import RedisBroker

    from workers import broker as worker_setup
    from workers.redis_broker import FRUGAL_OPTIONS, FrugalRedisBroker

    def build(**kwargs: Any) -> Any:
        kwargs.update(options or {})  # the bench's timers win over the settings'
        if kind == "stock":  # settings for our consumer mean nothing to Dramatiq's
            for option in FRUGAL_OPTIONS:
                kwargs.pop(option, None)
            return RedisBroker(**kwargs)
        return FrugalRedisBroker(**kwargs)

    worker_setup.FrugalRedisBroker = build  # type: ignore[assignment]


def run_worker(kind: str, threads: int, ping_log: str, options: dict[str, Any]) -> None:
    """Run a Dramatiq Worker on our ``workers`` package until SIGTERM."""
    import dramatiq

    from settings import get_settings
    from workers import broker as worker_setup

    use_broker_kind(kind, options)
    broker = worker_setup.configure(get_settings())

    @dramatiq.actor(broker=broker, queue_name=get_settings().QUEUE_NAME, max_retries=0)
    def ping(sent_at: float) -> None:
        with open(ping_log, "a") as log:
            log.write(f"{time.time() - sent_at}\n")

    worker = dramatiq.Worker(broker, worker_threads=threads)
    worker.start()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    while not stopping:
        signal.pause()
    worker.stop()
    broker.close()


# --- bench side ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def redis_server() -> Iterator[int]:
    """Start a private redis-server (no persistence) and yield its port."""
    port = free_port()
    process = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no"),
        ],
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    try:
        yield port
    finally:
        process.terminate()
        process.wait()


@contextmanager
def metered(port: int) -> Iterator[dict[str, Any]]:
    """Record MONITOR while the block runs; fill the yielded dict with redis-bill's JSON."""
    result: dict[str, Any] = {}
    with tempfile.NamedTemporaryFile(suffix=".log") as log, open(log.name, "w") as out:
        monitor = subprocess.Popen(["redis-cli", "-p", str(port), "monitor"], stdout=out)
        time.sleep(0.3)
        start = time.time()
        try:
            yield result
        finally:
            end = time.time()
            time.sleep(0.3)
            monitor.terminate()
            monitor.wait()
            billed = subprocess.run(
                [
                    *(str(TOOLS / "redis-bill"), log.name, "--compact"),
                    *("--start", str(start), "--end", str(end)),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            result.update(json.loads(billed.stdout))
            result["window_s"] = end - start


@contextmanager
def worker_process(
    kind: str, env: dict[str, str], ping_log: str, options: dict[str, Any] | None = None
) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        [
            *(sys.executable, __file__, "--worker", kind, "--ping-log", ping_log),
            *("--options", json.dumps(options or {})),
        ],
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        time.sleep(3)  # boot, declare queues, first fetch
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def base_env(redis_url: str, database_url: str, latency_ms: int = 0) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        GENERATOR_LATENCY_MS=str(latency_ms),
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
    )
    return env


def idle_row(
    kind: str, port: int, db_url: str, seconds: float, *, settle_s: float = 0, options=None
) -> dict[str, Any]:
    """Bill an idle worker process over ``seconds``, ``settle_s`` after it booted."""
    env = base_env(f"redis://127.0.0.1:{port}/0", db_url)
    with (
        tempfile.NamedTemporaryFile() as pings,
        worker_process(kind, env, pings.name, options),
    ):
        time.sleep(settle_s)
        with metered(port) as bill:
            time.sleep(seconds)
    per_hour = bill["billed"] * 3600 / bill["window_s"]
    return {**bill, "per_hour": per_hour, "per_month": per_hour * MONTH_S / 3600}


def wakeup_row(kind: str, port: int, db_url: str, samples: int) -> dict[str, Any]:
    """Send pings to an idle worker one at a time; return latency percentiles (ms)."""
    import dramatiq

    from settings import Settings
    from workers import broker as worker_setup

    redis_url = f"redis://127.0.0.1:{port}/0"
    env = base_env(redis_url, db_url)
    with tempfile.NamedTemporaryFile() as pings, worker_process(kind, env, pings.name):
        use_broker_kind(kind)
        broker = worker_setup.build_broker(Settings(REDIS_URL=redis_url, DATABASE_URL=db_url))
        ping = dramatiq.actor(
            lambda sent_at: None, actor_name="ping", broker=broker, queue_name="handson"
        )
        for i in range(samples):
            ping.send(time.time())
            deadline = time.monotonic() + 10
            while len(Path(pings.name).read_text().split()) <= i:
                if time.monotonic() > deadline:
                    raise TimeoutError("a ping was not handled within 10 s")
                time.sleep(0.01)
            time.sleep(0.2)  # idle again before the next one
        latencies = sorted(1000 * float(x) for x in Path(pings.name).read_text().split())
        broker.close()
    return {
        "samples": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def job_row(kind: str, port: int, admin_url: str, latency_ms: int, strategy: str) -> dict[str, Any]:
    """Bill the 62-task sample job run by one worker process (5 threads)."""
    import sample_job

    from settings import Settings
    from workers import broker as worker_setup

    redis_url = f"redis://127.0.0.1:{port}/0"
    with sample_job.fresh_postgres(admin_url) as url:
        settings = Settings(DATABASE_URL=url, REDIS_URL=redis_url, GENERATOR_LATENCY_MS=latency_ms)
        use_broker_kind(kind)
        worker_setup.configure(settings, broker=worker_setup.build_broker(settings))
        env = base_env(redis_url, url, latency_ms)
        with (
            tempfile.NamedTemporaryFile() as pings,
            worker_process(kind, env, pings.name),
            metered(port) as bill,
        ):
            run = sample_job.run_sample(settings, strategy)
            time.sleep(0.5)  # the last acks land after the job's last event
        dramatiq_broker = worker_setup.dramatiq.get_broker()
        dramatiq_broker.close()
    job = run["job"]
    tasks = job["total_tasks"]
    ideal = sample_job.ideal_seconds(job, latency_ms, 0.0)
    return {
        **bill,
        "status": job["status"],
        "tasks": tasks,
        "per_task": bill["billed"] / tasks,
        "wall_s": run["wall_s"],
        "ideal_s": ideal,
        "overhead_pct": 100 * (run["wall_s"] - ideal) / ideal,
    }


def origin_model(job: dict[str, Any], rate_per_s: float, batches: int = 13) -> dict[str, Any]:
    """Extrapolate the slowest measured job to the origin's timing (60 s per batch).

    The work per task does not depend on the latency; what grows with wall time is the
    rate a worker bills while it waits on running tasks: for stock Dramatiq its polling
    (the idle rate), for ours one heartbeat per quarter heartbeat timeout.
    """
    wall = batches * 60.0
    billed = job["billed"] + rate_per_s * max(0.0, wall - job["wall_s"])
    return {"wall_s": wall, "billed": billed, "per_task": billed / job["tasks"]}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import sample_job

    admin_url = os.environ["TEST_DATABASE_URL"]
    results: dict[str, Any] = {"idle": {}, "job": {}, "origin_model": {}, "wakeup": {}}
    with redis_server() as port, sample_job.fresh_postgres(admin_url) as quiet_db:
        if not args.jobs_only:
            idle = results["idle"]
            if "stock" in args.kinds:
                idle["stock"] = idle_row("stock", port, quiet_db, args.idle_s)
            if "frugal" in args.kinds:
                # Past its first maintenance (one heartbeat timeout after boot): steady state.
                idle["frugal"] = idle_row("frugal", port, quiet_db, args.idle_s, settle_s=62)
                # Past its first maintenance too (one heartbeat timeout after boot, not scaled).
                fast = idle["frugal, timers 180x faster"] = idle_row(
                    "frugal", port, quiet_db, args.idle_s, settle_s=65, options=FAST_TIMERS
                )
                # Its periodic costs at the default timers: the same events, 180 times rarer.
                fast["per_hour_at_default_timers"] = fast["per_hour"] / 180
        stock_rate = results["idle"].get("stock", {}).get("per_hour", 3600) / 3600
        rates = {"stock": stock_rate, "frugal": 4 / 60}
        for kind in args.kinds:
            if not args.jobs_only:
                results["wakeup"][kind] = wakeup_row(kind, port, quiet_db, args.pings)
            jobs = results["job"][kind] = {
                (strategy, ms): job_row(kind, port, admin_url, ms, strategy)
                for strategy in args.strategies
                for ms in args.latencies
            }
            slowest = jobs[(args.strategies[0], max(args.latencies))]
            results["origin_model"][kind] = origin_model(slowest, rates[kind])
    return results


def print_table(results: dict[str, Any]) -> None:
    print("\n(a) idle worker process (queue 'handson' and its delay queue)")
    print(f"{'broker':<28} {'window s':>9} {'billed':>7} {'per hour':>10} {'per month':>11}")
    for name, r in results["idle"].items():
        print(
            f"{name:<28} {r['window_s']:>9.1f} {r['billed']:>7} {r['per_hour']:>10.1f}"
            f" {r['per_month']:>11.0f}"
        )
        if "per_hour_at_default_timers" in r:
            hourly = r["per_hour_at_default_timers"]
            label = "  = at default timers"
            print(f"{label:<28} {'':>9} {'':>7} {hourly:>10.1f} {hourly * 720:>11.0f}")
    print("\n(b) 62-task sample job, one worker process, 5 threads")
    print(
        f"{'broker':<8} {'strategy':<9} {'latency':>8} {'status':<10} {'billed':>7}"
        f" {'top':>6} {'lua':>6} {'per task':>9} {'wall s':>7} {'ideal s':>8} {'overhead':>9}"
    )
    for kind, rows in results["job"].items():
        for (strategy, ms), r in rows.items():
            print(
                f"{kind:<8} {strategy:<9} {ms:>6}ms {r['status']:<10} {r['billed']:>7}"
                f" {r['top_level']:>6} {r['lua_inner']:>6} {r['per_task']:>9.2f}"
                f" {r['wall_s']:>7.2f} {r['ideal_s']:>8.2f} {r['overhead_pct']:>8.1f}%"
            )
    print("\n(c) the sample job at the origin's timing (13 batches x 60 s), extrapolated")
    for kind, r in results["origin_model"].items():
        print(f"{kind:<8} {r['billed']:>9.0f} billed, {r['per_task']:.1f} per task")
    print("\n(d) wake-up latency while idle, send() to actor start")
    for kind, r in results["wakeup"].items():
        print(f"{kind:<8} p50 {r['p50_ms']:>7.1f} ms  p99 {r['p99_ms']:>7.1f} ms  n={r['samples']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument("--pings", type=int, default=50, help="wake-up latency samples")
    parser.add_argument("--latencies", type=int, nargs="+", default=[200, 1000])
    parser.add_argument(
        "--strategies", nargs="+", choices=["flow", "batches"], default=["flow", "batches"]
    )
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument(
        "--jobs-only", action="store_true", help="only the sample job rows (b, c), no idle rows"
    )
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--ping-log", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker, args.threads, args.ping_log, json.loads(args.options))
        return
    results = measure(args)
    print_table(results)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    results["job"] = {
        kind: {f"{strategy} {ms}ms": row for (strategy, ms), row in rows.items()}
        for kind, rows in results["job"].items()
    }
    (out / "redis_cost.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
