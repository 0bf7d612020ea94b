"""``handson budget``: the PostgreSQL connections of a deployment, planned and open now."""

from __future__ import annotations

import datetime as dt
import json
import re

import sqlalchemy as sa
from click.testing import CliRunner
from redis_kit import wait_until

import db
from cli import cli
from db import ai_spend, connections
from db.models import Job, utcnow
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


def test_it_shows_the_ai_spend_of_the_window_by_model_and_the_month_against_the_budget(
    sqlite_url, tmp_path
):
    # Given a monthly AI budget and two offline jobs of a small project, one of them
    # started two hours ago (outside a 1 h window)
    settings = Settings(DATABASE_URL=sqlite_url, AI_MONTHLY_BUDGET=0.5, EMBEDDED_WORKER_THREADS=2)
    project = tmp_path / "p.json"
    tasks = [{"key": "a", "title": "A"}, {"key": "b", "title": "B", "depends_on": ["a"]}]
    project.write_text(json.dumps({"name": "P", "tasks": tasks}))
    run = CliRunner()
    assert run.invoke(cli, ["import", str(project)], obj=settings).exit_code == 0
    for _ in range(2):
        result = run.invoke(cli, ["enqueue", "1", "--wait"], obj=settings)
        assert result.exit_code == 0, result.output
    db.configure(sqlite_url)
    two_hours_ago = utcnow() - dt.timedelta(hours=2)
    with db.session_scope() as session:
        session.execute(sa.update(Job).where(Job.id == 1).values(created_at=two_hours_ago))
        old, recent = (session.get(Job, n) for n in (1, 2))
        old_cost, recent_cost = old.cost, recent.cost
        tokens = recent.prompt_tokens + recent.completion_tokens
    assert old_cost > 0 and recent_cost > 0

    # When the budget is shown for the last hour
    output = budget(settings, "--hours", "1")

    # Then the AI section has the recent job's cost and tokens, its guides by model
    # (estimated: the offline generator), and the month's cost as a share of the budget
    ai = output.split("AI spend in the last 1 h: ")[1].split("\n\n")[0]
    assert ai.startswith(f"cost {recent_cost:.4f}, {tokens:,} tokens")
    assert re.search(
        rf"^  offline\s+2 guides\s+{tokens:,} tokens\s+{recent_cost:.4f}, 2 estimated$", ai, re.M
    ), ai
    month_cost = recent_cost + (old_cost if two_hours_ago >= ai_spend.month_start(utcnow()) else 0)
    assert f": {month_cost:.4f} = {100 * month_cost / 0.5:.1f}% of the 0.5 monthly AI budget." in ai
    assert f"at this rate: {recent_cost * 720:.4f} = {100 * recent_cost * 720 / 0.5:.1f}%" in ai

    # And without a budget it says there is no cap
    assert "AI_MONTHLY_BUDGET unset: no cap." in budget(settings.replace(AI_MONTHLY_BUDGET=None))
