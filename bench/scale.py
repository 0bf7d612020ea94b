"""Scale out: N copies of the sample job at once on K worker processes x T threads.

Run next to a throwaway PostgreSQL (this script starts its own redis-server)::

    scripts/with-services.sh .venv/bin/python bench/scale.py [--jobs 16] [--latency-ms 500]

For each K of ``--processes`` (default 1 2 4), on a fresh database and an empty Redis:
starts the Procfile's processes (gunicorn web, K ``dramatiq workers --processes 1
--threads T``, the scheduler), imports N copies of ``samples/sample_project.json`` and
submits their jobs at once through the JSON API, as users do, and follows them to the end.

Prints, per K: wall time from submit to the last job's end against the ideal
max(critical path, tasks x latency / (K x T)) and the efficiency (ideal / wall); with
``--strategy batches``, the ideal under the jobs' own batch barriers (each batch after
the previous one, FIFO on K x T threads, no overhead), with flow the ideal under the
jobs' dependencies (the engine's release rules replayed for N jobs on K x T threads,
FIFO, no overhead), the same with the queue handing out first the task with the
longest chain of tasks still after it (what a priority queue could reach), and that
with the K processes each fetching ``REDIS_FETCH_MARGIN`` messages ahead, task times
±2% and the submits within 0.6 task latencies (the mean of 20 seeds); the spread of
the jobs' finish times; billed Redis commands per task (``redis-cli monitor`` billed by
``redis-bill``: every command sent plus every ``redis.call`` inside a script); the peak
of PostgreSQL connections to the database (``pg_stat_activity``, sampled every 0.2 s);
the machine's CPU use during the run (/proc/stat, every process of the machine) and the
CPU seconds of web, workers, scheduler and PostgreSQL; the mean number of task runs in
the running state (threads busy on the jobs) and how often a thread was free while
messages waited in the queue (LLEN, left out of the bill); and checks that every job
succeeded with exactly one guide per task. Writes ``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import heapq
import itertools
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

import psycopg  # noqa: E402
import redis  # noqa: E402
from redis_cost import free_port, metered, redis_server  # noqa: E402
from sample_job import _sample_nodes, fresh_postgres  # noqa: E402

import pipelines  # noqa: E402
import settings  # noqa: E402
from samples import load_sample  # noqa: E402

#: The queue the sample's messages go to (settings.QUEUE_NAME's default).
QUEUE = "handson"
#: The API token of the bench's deployment (API writes need it).
TOKEN = secrets.token_hex(16)
#: Seconds between two samples of pg_stat_activity and of the jobs' progress.
SAMPLE_S = 0.2
#: The fetch-ahead replay: each task lasts 1 ± this many task latencies,
REPLAY_JITTER = 0.02
#: the jobs are submitted within this many task latencies of the first,
REPLAY_SPREAD = 0.6
#: and its figure is the mean over this many seeds.
REPLAY_SEEDS = 20


def critical_path(project: dict[str, Any]) -> int:
    """Return the number of tasks on the project's longest dependency chain."""
    depends = {task["key"]: task.get("depends_on", []) for task in project["tasks"]}
    depth: dict[str, int] = {}

    def chain(key: str) -> int:
        if key not in depth:
            depth[key] = 1 + max((chain(d) for d in depends[key]), default=0)
        return depth[key]

    return max(chain(key) for key in depends)


def barrier_schedule(batches: list[dict[str, Any]], jobs: int, threads: int) -> float:
    """Return the makespan, in task latencies, of ``jobs`` copies of a job whose batches
    run one after the other (a group's tasks in parallel, a pipeline's steps in turn),
    on ``threads`` threads taking ready tasks first come, first served, with no overhead:
    the best the worker side can do when the jobs' own barriers limit them.
    """
    units: list[int] = []  # tasks that may run together, one unit after the other
    for batch in batches:
        units += [batch["total"]] if batch["mode"] == "group" else [1] * batch["total"]
    free = [0.0] * threads
    ready = [(0.0, job, 0) for job in range(jobs)]
    end = 0.0
    while ready:
        at, job, index = heapq.heappop(ready)
        done = at
        for _ in range(units[index]):
            finish = max(heapq.heappop(free), at) + 1
            heapq.heappush(free, finish)
            done = max(done, finish)
        end = max(end, done)
        if index + 1 < len(units):
            heapq.heappush(ready, (done, job, index + 1))
    return end


def flow_schedule(
    plan: Any,
    max_in_flight: int,
    jobs: int,
    threads: int,
    *,
    by_path: bool = False,
    fetch_ahead: FetchAhead | None = None,
) -> float:
    """Return the makespan, in task latencies, of ``jobs`` copies of a flow job on
    ``threads`` threads with no overhead: each job releases its units as the engine does
    (a unit once every link into it is done, the longest chain left first, then in plan
    order (``pipelines.release_order``), within ``max_in_flight`` slots: a pipeline takes
    one, a group's task one each), released tasks queue first come, first served for a
    free thread, a pipeline's next step joins the queue when its previous step ends. The
    best the worker side can do under the jobs' dependencies.

    ``by_path``: the queue hands out first the task with the longest chain still after
    it (:func:`pipelines.remaining_paths`), across jobs, instead of the oldest.
    ``fetch_ahead``: the threads are split over processes that take messages ahead, and
    the times vary (:class:`FetchAhead`).
    """
    ahead = fetch_ahead or FetchAhead()
    rng = random.Random(ahead.seed)
    paths = pipelines.remaining_paths(plan)
    order = pipelines.release_order(plan)
    gates: dict[str, list[str]] = collections.defaultdict(list)
    for done, gated in plan.links:
        gates[done].append(gated)
    first = {unit.keys[0]: number for number, unit in enumerate(plan.units)}
    waiting = [collections.Counter(gated for _, gated in plan.links) for _ in range(jobs)]
    ready = [
        [order[n] for n, u in enumerate(plan.units) if not waiting[0][u.keys[0]]]
        for _ in range(jobs)
    ]
    slots = [max_in_flight] * jobs
    queue: list[tuple[int, int, int, int, int]] = []  # key, tie, job, unit, step
    # time, tie, process (None: the job is submitted), job, unit, step
    events: list[tuple[float, int, int | None, int, int, int]] = []
    tie = itertools.count()
    free = [threads // ahead.processes] * ahead.processes
    held: list[collections.deque[tuple[int, int, int]]] = [
        collections.deque() for _ in range(ahead.processes)
    ]

    def enqueue(job: int, number: int, step: int) -> None:
        key = -paths[plan.units[number].keys[step]] if by_path else 0
        heapq.heappush(queue, (key, next(tie), job, number, step))

    def release(job: int) -> None:
        took = False
        while ready[job] and slots[job] > 0:
            unit = plan.units[ready[job][0][1]]
            cost = 1 if unit.mode == "pipeline" else len(unit.keys)
            if took and cost > slots[job]:
                break
            took = True
            number = heapq.heappop(ready[job])[1]
            slots[job] -= cost
            for step in [0] if unit.mode == "pipeline" else range(len(unit.keys)):
                enqueue(job, number, step)

    def run(process: int, task: tuple[int, int, int], now: float) -> None:
        free[process] -= 1
        ends = now + 1 + rng.uniform(-ahead.jitter, ahead.jitter)
        heapq.heappush(events, (ends, next(tie), process, *task))

    def dispatch(now: float) -> None:
        for process in rng.sample(range(ahead.processes), ahead.processes):
            while free[process] and held[process]:
                run(process, held[process].popleft(), now)
            if free[process] and queue:
                wanted = min(free[process] + ahead.margin, len(queue))
                taken = [heapq.heappop(queue)[2:] for _ in range(wanted)]
                runs = free[process]
                for task in taken[:runs]:
                    run(process, task, now)
                held[process].extend(taken[runs:])

    for job in range(jobs):
        heapq.heapify(ready[job])
        heapq.heappush(events, (rng.uniform(0, ahead.spread), next(tie), None, job, 0, 0))
    now = 0.0
    while events:
        now, _, process, job, number, step = heapq.heappop(events)
        if process is not None:
            free[process] += 1
            unit = plan.units[number]
            if unit.mode == "pipeline" and step + 1 < len(unit.keys):
                enqueue(job, number, step + 1)
            else:
                slots[job] += 1
                for gated in gates[unit.keys[step]]:
                    waiting[job][gated] -= 1
                    if not waiting[job][gated]:
                        heapq.heappush(ready[job], order[first[gated]])
        release(job)
        if not events or events[0][0] > now:
            dispatch(now)
    return now


@dataclasses.dataclass(frozen=True)
class FetchAhead:
    """How the workers of :func:`flow_schedule` take messages, and how times vary.

    ``processes`` share the threads; a process whose threads free with nothing held
    takes ``margin`` messages more than it can run, which its next free threads run
    (``REDIS_FETCH_MARGIN``). Each task lasts 1 ± ``jitter`` latencies; each job is
    submitted within ``spread`` latencies of the first (drawn from ``seed``).
    """

    processes: int = 1
    margin: int = 0
    jitter: float = 0.0
    spread: float = 0.0
    seed: int = 0


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


class Cluster:
    """The Procfile's processes on one Redis and one database, stopped on exit."""

    def __init__(self, redis_url: str, database_url: str, latency_ms: int, log_dir: Path):
        self.env = dict(os.environ)
        self.env.update(
            REDIS_URL=redis_url,
            DATABASE_URL=database_url,
            GENERATOR_LATENCY_MS=str(latency_ms),
            PYTHONPATH=str(ROOT),
            SECRET_KEY=secrets.token_hex(32),
            API_TOKEN=TOKEN,
        )
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        #: Session id (the process's pid) -> role, for CPU accounting.
        self.roles: dict[int, str] = {}

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            env={**self.env, **env},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        self.roles[process.pid] = name
        return process

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for(condition, timeout: float, what: str) -> None:
    """Wait for the cluster to be ready (the bench's own set-up; not product code)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout} s")
        time.sleep(0.1)


def api(base: str, path: str, body: Any | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    request = urllib.request.Request(base + path, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def web_ready(base: str) -> bool:
    try:
        api(base, "/api/jobs")
        return True
    except OSError:
        return False


def waiting_consumers(client: redis.Redis) -> int:
    """Blocked waits of idle consumers (CLIENT LIST is free)."""
    return sum(c["cmd"] == "blmove" for c in client.client_list())


def cpu_by_session(sessions: dict[int, str], postmaster: int) -> dict[str, float]:
    """Return CPU seconds used so far by the processes of each session, by role name
    (``dramatiq workers`` forks its worker process: the session holds both), and by the
    PostgreSQL server's backends (children of ``postmaster``)."""
    used: dict[str, float] = dict.fromkeys([*sessions.values(), "postgres"], 0.0)
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent, session = int(fields[1]), int(fields[3])
        role = "postgres" if parent == postmaster else sessions.get(session)
        if role:
            used[role] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return used


def postmaster_pid(conninfo: str) -> int:
    """Return the pid of the PostgreSQL server (the parent of our backend)."""
    with psycopg.connect(conninfo) as conn:
        (backend,) = conn.execute("SELECT pg_backend_pid()").fetchone()
    return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])


def cpu_ticks() -> tuple[int, int]:
    """Return (busy, total) jiffies of the whole machine from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class Sampler(threading.Thread):
    """Samples the database's connections and the jobs still running."""

    def __init__(self, conninfo: str, database: str, job_ids: list[int], client: redis.Redis):
        super().__init__(daemon=True)
        self.conninfo, self.database, self.job_ids = conninfo, database, job_ids
        self.client = client
        #: Messages waiting in the queue list at each sample (LLEN, left out of the bill).
        self.queued: list[int] = []
        self.peak = 0
        #: Task runs in the running state at each sample (threads busy on our jobs).
        self.running: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self.done.is_set():
                (connections,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.database,),
                ).fetchone()
                self.peak = max(self.peak, connections)
                (unfinished, busy) = conn.execute(
                    "SELECT count(*) FILTER (WHERE finished_at IS NULL),"
                    " (SELECT count(*) FROM task_runs r WHERE r.job_id = ANY(%s)"
                    "  AND r.status = 'running') FROM jobs WHERE id = ANY(%s)",
                    (self.job_ids, self.job_ids),
                ).fetchone()
                self.running.append(busy)
                self.queued.append(self.client.llen(f"dramatiq:{QUEUE}"))
                if unfinished == 0:
                    self.done.set()
                self.done.wait(SAMPLE_S)


def _epoch(stamp: dt.datetime) -> float:
    """Seconds since the epoch of a database timestamp (naive ones are UTC)."""
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)).timestamp()


def check_guides(conninfo: str, job_ids: list[int]) -> dict[str, Any]:
    """Return statuses and whether each job has exactly one guide per task."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT j.id, j.status, j.total_tasks, count(h.id), count(DISTINCT h.task_id),"
            " j.finished_at FROM jobs j LEFT JOIN hands_on h ON h.job_id = j.id"
            " WHERE j.id = ANY(%s) GROUP BY j.id",
            (job_ids,),
        ).fetchall()
    ok = all(guides == distinct == tasks for _, _, tasks, guides, distinct, _ in rows)
    return {
        "statuses": sorted({row[1] for row in rows}),
        "one_guide_per_task": ok and len(rows) == len(job_ids),
        "finished_at": [_epoch(row[5]) for row in rows],
        "tasks": sum(row[2] for row in rows),
    }


def run_k(k: int, args: argparse.Namespace, port: int, admin_url: str) -> dict[str, Any]:
    """Run N sample jobs on K worker processes; return the figures."""
    redis_url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis(port=port)
    client.flushall()
    with (
        fresh_postgres(admin_url) as url,
        tempfile.TemporaryDirectory() as logs,
        contextlib.ExitStack() as stack,
    ):
        cluster = Cluster(redis_url, url, args.latency_ms, Path(logs))
        stack.callback(cluster.stop)
        web_port = free_port()
        cluster.start(
            "web",
            *("gunicorn", "--config", "python:web.gunicorn_conf"),
            *("--bind", f"127.0.0.1:{web_port}", "web:create_app()"),
        )
        for _ in range(k):
            cluster.start(
                "worker", "dramatiq", "workers", "--processes", "1", "--threads", str(args.threads)
            )
        cluster.start("scheduler", "workers.scheduler")
        base = f"http://127.0.0.1:{web_port}"
        try:
            wait_for(lambda: web_ready(base), 60, "web did not answer")
            wait_for(lambda: waiting_consumers(client) >= 2 * k, 60, "workers did not wait")
        except TimeoutError:
            for log in sorted(Path(logs).iterdir()):
                print(f"--- {log.name}", *log.read_text().splitlines()[-15:], sep="\n")
            raise
        project = load_sample()
        project_ids = [api(base, "/api/projects", project)["id"] for _ in range(args.jobs)]
        time.sleep(1)  # let the import's traffic settle
        return submit_and_follow(base, url, port, project_ids, k, args, project, cluster)


def submit_and_follow(
    base: str, url: str, port: int, project_ids: list[int], k: int, args, project, cluster
) -> dict[str, Any]:
    """Submit every job at once (one thread each), follow them, return the figures."""
    conninfo = libpq(url)
    database = url.rsplit("/", 1)[-1]
    job_ids: list[int] = []
    with metered(port) as bill:
        busy0, total0 = cpu_ticks()
        postmaster = postmaster_pid(conninfo)
        cpu0 = cpu_by_session(cluster.roles, postmaster)
        started = time.time()

        def submit(project_id: int) -> None:
            body = {"strategy": args.strategy} if args.strategy else {}
            job_ids.append(api(base, f"/api/projects/{project_id}/jobs", body)["job_id"])

        threads = [threading.Thread(target=submit, args=(p,)) for p in project_ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sampler = Sampler(conninfo, database, job_ids, redis.Redis(port=port))
        sampler.start()
        sampler.done.wait(args.timeout_s)
        sampler.join(timeout=5)
        busy1, total1 = cpu_ticks()
        cpu1 = cpu_by_session(cluster.roles, postmaster)
        time.sleep(0.5)  # the last acks land after the last job's end
    # The sampler's own LLENs are not the workers' cost.
    bill["billed"] -= bill["by_command"].pop("LLEN", 0)
    job = api(base, f"/api/jobs/{job_ids[0]}")
    result = check_guides(conninfo, job_ids)
    finished = result.pop("finished_at")
    tasks = result["tasks"]
    latency = args.latency_ms / 1000
    ideal = max(critical_path(project) * latency, tasks * latency / (k * args.threads))
    wall = max(finished) - started
    return {
        "processes": k,
        "threads": args.threads,
        "jobs": len(job_ids),
        **result,
        "wall_s": wall,
        "ideal_s": ideal,
        "efficiency": ideal / wall,
        "strategy": job.get("strategy", "batches"),
        # Only the batches strategy runs its batches one after the other.
        "barrier_ideal_s": (
            barrier_schedule(job["batches"], len(job_ids), k * args.threads) * latency
            if job.get("strategy", "batches") == "batches"
            else None
        ),
        **flow_replays(job, len(job_ids), k, args.threads, latency),
        "finish_spread_s": max(finished) - min(finished),
        "first_finish_s": min(finished) - started,
        "billed": bill["billed"],
        "lua_inner": bill["lua_inner"],
        "per_task": bill["billed"] / tasks,
        "by_command": bill["by_command"],
        "peak_pg_connections": sampler.peak,
        "mean_running": sum(sampler.running) / max(1, len(sampler.running)),
        # Samples where a thread was free while messages waited in Redis.
        "idle_while_queued": sum(
            1
            for run, queued in zip(sampler.running, sampler.queued, strict=True)
            if run < k * args.threads and queued > 0
        )
        / max(1, len(sampler.running)),
        "cpu_busy": (busy1 - busy0) / max(1, total1 - total0),
        "cpu_s": {role: round(cpu1[role] - cpu0[role], 1) for role in cpu1},
    }


def sample_plan(strategy: str, batch_size: int) -> Any:
    """Return the engine's plan of the sample job (units and links)."""
    return pipelines.plan(_sample_nodes(), strategy, batch_size)


def flow_replays(
    job: dict[str, Any], jobs: int, processes: int, threads: int, latency: float
) -> dict[str, Any]:
    """Return the run's jobs replayed with :func:`flow_schedule`, in seconds (None unless
    flow): first come, first served; the longest chain left first; and that with each
    process fetching ``REDIS_FETCH_MARGIN`` ahead, task times and submits varying
    (:data:`REPLAY_JITTER`, :data:`REPLAY_SPREAD`; the mean of :data:`REPLAY_SEEDS` seeds).
    """
    margin = settings.from_env().REDIS_FETCH_MARGIN
    if job.get("strategy") != "flow":
        return {"flow_ideal_s": None, "path_first_ideal_s": None, "fetch_ahead_ideal_s": None}
    plan = sample_plan(job["strategy"], job["batch_size"])

    def replay(**options: Any) -> float:
        every_thread = processes * threads
        return flow_schedule(plan, job["max_in_flight"], jobs, every_thread, **options) * latency

    varying = {"jitter": REPLAY_JITTER, "spread": REPLAY_SPREAD}
    ahead = [
        replay(by_path=True, fetch_ahead=FetchAhead(processes, margin, seed=seed, **varying))
        for seed in range(REPLAY_SEEDS)
    ]
    return {
        "flow_ideal_s": replay(),
        "path_first_ideal_s": replay(by_path=True),
        "fetch_ahead_ideal_s": sum(ahead) / len(ahead),
        "fetch_margin": margin,
    }


def _barrier_note(r: dict[str, Any]) -> str:
    if r.get("flow_ideal_s"):
        ideal = r["flow_ideal_s"]
        return (
            f" ideal under the jobs' dependencies {ideal:.1f} s"
            f" (efficiency {ideal / r['wall_s']:.2f}); the same with the queue ordered by"
            f" the longest chain left {r['path_first_ideal_s']:.1f} s, and with each process"
            f" fetching {r['fetch_margin']} ahead (tasks ±{REPLAY_JITTER:.0%}, submits within"
            f" {REPLAY_SPREAD} of a task, {REPLAY_SEEDS} seeds) {r['fetch_ahead_ideal_s']:.1f} s;"
        )
    if r["barrier_ideal_s"] is None:
        return ""
    ideal = r["barrier_ideal_s"]
    return f" ideal under the batch barriers {ideal:.1f} s (efficiency {ideal / r['wall_s']:.2f});"


def print_row(r: dict[str, Any]) -> None:
    print(
        f"{r['processes']:>2} x {r['threads']:<2} {r['jobs']:>4} {r['tasks']:>6}"
        f" {r['wall_s']:>7.1f} {r['ideal_s']:>7.1f} {r['efficiency']:>6.2f}"
        f" {r['first_finish_s']:>6.1f}-{r['wall_s']:<6.1f} {r['per_task']:>8.2f}"
        f" {r['peak_pg_connections']:>7} {100 * r['cpu_busy']:>5.0f}%"
        f"  {','.join(r['statuses'])} {'yes' if r['one_guide_per_task'] else 'NO'}",
        f"  {r['strategy']};{_barrier_note(r)}"
        f" mean running {r['mean_running']:.1f}; free thread while queued"
        f" {100 * r['idle_while_queued']:.0f}% of samples;",
        "cpu s: " + ", ".join(f"{role} {s:.1f}" for role, s in r["cpu_s"].items()),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16, help="copies of the sample job (N)")
    parser.add_argument("--latency-ms", type=int, default=500, help="simulated AI latency")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process (T)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4], help="K values")
    parser.add_argument(
        "--strategy", choices=("flow", "batches"), help="job strategy (default: the API's)"
    )
    parser.add_argument("--timeout-s", type=float, default=600, help="give up on a run after")
    args = parser.parse_args()
    admin_url = os.environ["TEST_DATABASE_URL"]
    print(
        f"{args.jobs} sample jobs at once, {args.latency_ms} ms tasks; wall from submit to"
        " the last job's end; finish = first-last job end (s after submit)"
    )
    print(
        f"{'K x T':<7} {'jobs':>4} {'tasks':>6} {'wall s':>7} {'ideal s':>7} {'eff':>6}"
        f" {'finish s':>13} {'cmd/task':>8} {'peak pg':>7} {'cpu':>6}  status guide/task"
    )
    results = []
    with redis_server() as port:
        for k in args.processes:
            results.append(run_k(k, args, port, admin_url))
            print_row(results[-1])
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "scale.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
