"""Real processes for system tests: ``dramatiq workers`` and the scheduler, on real servers."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import db
from db.models import Batch, Event, HandsOn, Job, TaskRun

ROOT = Path(__file__).resolve().parent.parent

#: Settings of every process in a system test: quick tasks, quick repairs.
FAST_ENV = {
    "QUEUE_NAME": "handson-test",
    "GENERATOR": "scripted_generator:factory",
    "GENERATOR_LATENCY_MS": "60",
    "MAX_RETRIES": "2",
    "MIN_BACKOFF_MS": "100",
    "MAX_BACKOFF_MS": "500",
    "TASK_TIME_LIMIT_MS": "20000",
    "STALL_TIMEOUT_S": "3",
    "RECONCILE_INTERVAL_S": "1",
    "SCHEDULER_TICK_S": "1",
    "SCHEDULER_LEASE_S": "3",
    "LOG_LEVEL": "INFO",
}


@dataclasses.dataclass
class Cluster:
    """Our processes on one Redis and one PostgreSQL database; stopped at teardown."""

    redis_url: str
    database_url: str
    log_dir: Path
    extra_env: dict[str, str] = dataclasses.field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)
    logs: dict[int, Path] = dataclasses.field(default_factory=dict)

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment of a process of ours in this cluster."""
        env = dict(os.environ)
        env.update(FAST_ENV)
        env.update(
            REDIS_URL=self.redis_url,
            DATABASE_URL=self.database_url,
            PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
        )
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``python -m <args>`` in its own process group, logging to a file."""
        path = self.log_dir / f"{name}-{len(self.processes)}.log"
        log = path.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            env=self.env(**env),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        self.logs[process.pid] = path
        return process

    def log_of(self, process: subprocess.Popen[bytes]) -> str:
        """Return what the process has logged so far."""
        return self.logs[process.pid].read_text(errors="replace")

    def start_worker(self, threads: int = 4, **env: str) -> subprocess.Popen[bytes]:
        """Start ``dramatiq workers`` (one process) on our package, as the Procfile does."""
        return self.start("worker", "dramatiq", "workers", "-p", "1", "-t", str(threads), **env)

    def start_scheduler(self, **env: str) -> subprocess.Popen[bytes]:
        """Start ``python -m workers.scheduler``."""
        return self.start("scheduler", "workers.scheduler", **env)

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        """``kill -9`` the process and its children (a crash, no clean-up)."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        """SIGTERM every process still running; SIGKILL what has not exited in 20 s."""
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill(process)


def assert_counted_exactly_once(job: dict[str, Any]) -> None:
    """The job succeeded with one guide per task and every count recorded exactly once."""
    assert job["status"] == "succeeded", job["status"]
    assert job["succeeded_tasks"] == job["done_tasks"] == job["total_tasks"]
    assert job["completed_batches"] == job["total_batches"]
    with db.session_scope() as session:
        job_id = job["id"]
        guides = session.scalar(
            sa.select(sa.func.count(HandsOn.id))
            .join(TaskRun, TaskRun.task_id == HandsOn.task_id)
            .where(TaskRun.job_id == job_id)
        )
        assert guides == job["total_tasks"]
        batches = session.execute(
            sa.select(Batch.done, Batch.total, Batch.succeeded).where(Batch.job_id == job_id)
        ).all()
        assert all(done == total == ok for done, total, ok in batches)
        kinds = session.execute(
            sa.select(Event.type, sa.func.count())
            .where(Event.job_id == job_id)
            .group_by(Event.type)
        ).all()
        counts = dict(kinds)
        assert counts["batch_completed"] == job["total_batches"]
        assert counts["task_succeeded"] == job["total_tasks"]
        assert counts["job_finished"] == 1
        seqs = session.scalars(sa.select(Event.seq).where(Event.job_id == job_id)).all()
        assert sorted(seqs) == list(range(1, len(seqs) + 1))
        assert session.scalar(sa.select(Job.status).where(Job.id == job_id)) == "succeeded"
