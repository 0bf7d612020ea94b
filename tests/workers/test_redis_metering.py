"""The Redis meter: commands counted per process and per job, stored, and budgeted."""

from __future__ import annotations

import collections
import threading
import time

import dramatiq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from jobwatch import wait_for_job
from redis_kit import CommandMeter
from workerkit import fast_settings, make_project, submit

import db
from cli.budget import budget_command
from db import jobs, usage
from db.models import TaskRun
from settings import Settings
from workers import broker as worker_setup
from workers.middleware.metering import Metering, UsageFlusher
from workers.redis_broker import FrugalRedisBroker
from workers.redis_meter import METER


@pytest.fixture(autouse=True)
def fresh_meter():
    """Each test starts and ends with an empty process meter."""
    METER.take()
    yield
    METER.take()


def test_the_broker_counts_every_command_it_sends_by_thread(redis_url):
    # Given our broker (its connections are metered)
    broker = FrugalRedisBroker(url=redis_url)
    METER.take()

    # When this thread sends a pipelined enqueue and a free PING for task run 7,
    # and another thread one command for the process
    METER.attribute_to(7)
    broker.do_enqueue("metered", "id-1", b"{}")
    broker.client.ping()
    METER.attribute_to(None)
    thread = threading.Thread(target=lambda: broker.client.llen("dramatiq:metered"))
    thread.start()
    thread.join()
    broker.close()

    # Then the billed commands are counted, each under its sender's run
    counts = METER.take()
    assert counts == {("HSET", 7): 1, ("RPUSH", 7): 1, ("LLEN", None): 1}


def test_the_meter_matches_a_per_command_hosts_bill_of_fetches(redis_url, tmp_path):
    # Given our broker, with MONITOR recording what the server runs
    broker = FrugalRedisBroker(url=redis_url)
    monitor = CommandMeter(redis_url, tmp_path / "monitor.log")
    METER.take()
    start = time.time()

    # When it enqueues 3 messages, fetches the highest ranked (writing a heartbeat; the
    # other two go back to the queue), then the other two, then finds none
    for i in range(3):
        broker.do_enqueue("metered", f"{i}.id-{i}", b"{}")
    assert [redis_id for redis_id, _ in broker.fetch("metered", 1)] == ["2.id-2"]
    assert len(broker.fetch("metered", 5)) == 2
    assert broker.fetch("metered", 5) == []
    time.sleep(0.3)  # MONITOR output reaches its log
    billed = monitor.bill(start, time.time())
    monitor.stop()
    broker.close()

    # Then the meter counts what the host bills, script inner calls included
    metered = collections.Counter()
    for (command, _run), n in METER.take().items():
        metered[command] += n
    as_billed = collections.Counter({name.removeprefix("lua:"): 0 for name in billed})
    for name, n in billed.items():
        as_billed[name.removeprefix("lua:")] += n
    assert billed["lua:LPOP"] == 3 and billed["lua:LPUSH"] == 1 and billed["lua:HMGET"] == 2
    assert metered == as_billed


def test_the_flusher_stores_counts_per_job_and_the_budget_sums_them(sqlite_url):
    # Given a job with task runs, and counts for one of its runs and for the process
    settings = fast_settings(sqlite_url)
    worker_setup.configure(settings, broker=_stub_broker())
    project_id = make_project("a", "b")
    from db import jobs

    job_id = jobs.create_job(project_id, batch_size=5, max_batch_size=50, max_tasks=100).job_id
    with db.session_scope() as session:
        run_id = session.scalar(sa.select(TaskRun.id).where(TaskRun.job_id == job_id).limit(1))
    METER.give_back({("HSET", run_id): 3, ("EVALSHA", None): 2})

    # When the flusher writes them
    assert UsageFlusher("worker").flush() == 2

    # Then the job shows its commands, and the budget sums the window
    assert jobs.snapshot(job_id)["redis_commands"] == 3
    result = usage.budget(hours=24, monthly_cap=1_000)
    assert result.total == 5
    assert result.by_process == {"worker": 5}
    assert result.by_command == {"HSET": 3, "EVALSHA": 2}
    assert result.per_month == pytest.approx(5 * 30)
    assert result.share_of_cap == pytest.approx(0.15)


def test_a_flush_that_fails_keeps_the_counts(monkeypatch):
    # Given counts, when storing them fails
    METER.give_back({("GET", None): 4})

    def broken(*args):
        raise RuntimeError("database down")

    monkeypatch.setattr(usage, "record", broken)

    # Then nothing is lost: the next flush has them
    assert UsageFlusher("web").flush() == 0
    assert METER.take() == {("GET", None): 4}


def test_handson_budget_prints_the_window_and_the_projection(sqlite_url):
    # Given stored usage
    db.configure(sqlite_url)
    usage.record("worker", {("EVALSHA", None): 10, ("HSET", None): 6})
    usage.record("web", {("HSET", None): 4})

    # When the budget command runs with a small cap
    result = CliRunner().invoke(
        budget_command, ["--cap", "1000"], obj=Settings(DATABASE_URL=sqlite_url)
    )

    # Then it shows totals by process kind and command, and the month's share of the cap
    assert result.exit_code == 0, result.output
    assert "Redis commands in the last 24 h: 20" in result.output
    assert "worker" in result.output and "web" in result.output
    assert "Projected for 30 days: 600 = 60.0% of a 1,000-command monthly cap." in result.output


@pytest.mark.both_strategies
def test_a_jobs_commands_are_attributed_to_it_on_redis(redis_url, postgres_url):
    # Given our Redis broker with the metering middleware and a worker in this process
    settings = fast_settings(postgres_url, REDIS_URL=redis_url)
    broker = worker_setup.build_broker(settings)
    assert any(isinstance(m, Metering) for m in broker.middleware)
    worker_setup.configure(settings, broker=broker)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        # When a two-batch job runs
        project_id = make_project("a", {"key": "b", "title": "B", "depends_on": ["a"]}, "c")
        job_id = submit(project_id, batch_size=1)
        job, _ = wait_for_job(job_id, timeout=30)
        assert job["status"] == "succeeded"
    finally:
        worker.stop()
        broker.close()

    # Then, once flushed, the job shows the commands its messages caused (enqueues of
    # later batches and acks: at least an ack's SREM and HDEL per task)
    used = jobs.snapshot(job_id)["redis_commands"]
    assert used >= 2 * 3
    assert usage.budget().by_process["worker"] > used


def _stub_broker() -> dramatiq.Broker:
    return worker_setup.build_broker(Settings(DATABASE_URL="sqlite://"))
