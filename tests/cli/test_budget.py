"""``handson budget``: the PostgreSQL connections of a deployment, planned and open now."""

from __future__ import annotations

import re

from click.testing import CliRunner
from redis_kit import wait_until

import db
from cli import cli
from db import connections
from settings import Settings


def budget(settings: Settings, *args: str) -> str:
    result = CliRunner().invoke(cli, ["budget", *args], obj=settings, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def planned_rows(output: str) -> dict[str, int]:
    """Return ``{kind: connections}`` from the plan's lines."""
    section = output.split("PostgreSQL connections at peak")[1].split("\n\n")[0]
    rows = re.findall(r"^  (web|worker|scheduler|total)\s.*?(\d+)$", section, re.M)
    return {kind: int(count) for kind, count in rows}


def test_the_plan_follows_the_settings_and_the_process_counts(sqlite_url):
    # Given the default settings: the Procfile's 8 worker threads, one gunicorn worker
    output = budget(Settings(DATABASE_URL=sqlite_url))

    # Then web pools 4 and listens on 1, the worker pools one per thread, the scheduler 2
    assert planned_rows(output) == {"web": 5, "worker": 8, "scheduler": 2, "total": 15}
    assert "no server connections to count now" in output

    # And with more processes, threads and gunicorn workers, the plan grows with them
    settings = Settings(DATABASE_URL=sqlite_url, WORKER_THREADS=4, WEB_CONCURRENCY=2)
    output = budget(settings, "--workers", "3", "--schedulers", "2")
    assert planned_rows(output) == {"web": 10, "worker": 12, "scheduler": 4, "total": 26}

    # And a fixed pool size replaces every pool's
    output = budget(Settings(DATABASE_URL=sqlite_url, DATABASE_POOL_SIZE=3))
    assert planned_rows(output) == {"web": 4, "worker": 3, "scheduler": 3, "total": 10}


def test_a_negative_process_count_is_a_usage_error(sqlite_url):
    result = CliRunner().invoke(
        cli, ["budget", "--web", "-1"], obj=Settings(DATABASE_URL=sqlite_url)
    )
    assert result.exit_code == 2
    assert "--web" in result.output


def test_on_postgresql_it_shows_the_connections_open_now_by_process_kind(processes, postgres_url):
    # Given a worker process of 3 threads running on the database
    processes.start_worker(threads=3)
    db.configure(postgres_url)
    wait_until(
        lambda: connections.open_now().by_name.get("handson/worker") == 3,
        30,
        "the worker's 3 connections",
    )

    # When the budget command runs against it
    output = budget(Settings(DATABASE_URL=postgres_url))

    # Then it lists them under their name, with what they are, and the server's limit
    opened = output.split("PostgreSQL connections open now: ")[1]
    assert re.search(r"^  handson/worker\s+3  worker pools$", opened, re.M), opened
    assert re.search(r"the server allows \d+", opened)
