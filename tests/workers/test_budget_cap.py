"""A running job that reaches the monthly AI budget stops releasing work (both databases)."""

from __future__ import annotations

import collections
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from jobwatch import wait_for_job
from workerkit import Embedded, make_project

import db
from db import ai_spend
from db.models import HandsOn, Job
from workers import dispatch


def _submit(embedded: Embedded, *keys: str) -> int:
    """Submit a job of independent tasks, one at a time, under ``embedded``'s budget."""
    return dispatch.submit(
        make_project(*keys),
        batch_size=1,
        max_batch_size=50,
        max_tasks=100,
        strategy=embedded.settings.JOB_STRATEGY,
        ai_cap=ai_spend.cap_of(embedded.settings),
    )


@pytest.mark.both_strategies
def test_a_running_job_that_reaches_the_budget_stops_releasing_work(
    embedded_factory: Callable[..., Embedded], generated: collections.Counter[str]
):
    # Given guides priced cheaply so far (a first job), then at 1,000 times the prices
    cheap = {"AI_PRICE_INPUT_PER_MTOK": 0.001, "AI_PRICE_OUTPUT_PER_MTOK": 0.001}
    wait_for_job(_submit(embedded_factory(threads=1, **cheap), "x0", "x1"))
    with db.session_scope() as session:
        cheap_cost = session.scalar(sa.select(sa.func.avg(HandsOn.cost)))
        spent = session.scalar(sa.select(sa.func.sum(Job.cost)))
    dear = {key: value * 1_000 for key, value in cheap.items()}
    # The budget leaves room for two and a half guides at the new prices
    embedded = embedded_factory(
        threads=1, AI_MONTHLY_BUDGET=spent + 2.5 * cheap_cost * 1_000, **dear
    )

    # When a job of six tasks, one at a time, runs (estimated from the cheap guides)
    keys = [f"t{i}" for i in range(6)]
    job, events = wait_for_job(_submit(embedded, *keys))

    # Then the third guide reaches the budget: the other three are never released,
    # they end cancelled with the reason, and no AI call is made for them
    assert [generated[key] for key in keys] == [1, 1, 1, 0, 0, 0]
    assert (job["succeeded_tasks"], job["cancelled_tasks"], job["status"]) == (3, 3, "partial")
    assert [run["status"] for run in job["unreleased"]] == ["cancelled"] * 3
    assert {run["error"] for run in job["unreleased"]} == {ai_spend.BUDGET_REACHED}
    reached = [e["payload"] for e in events if e["type"] == "budget_reached"]
    assert [payload["cancelled_tasks"] for payload in reached] == [3]
    assert job["in_flight"] == 0 and job["done_tasks"] == 6


def test_without_a_budget_nothing_stops(embedded_factory: Callable[..., Embedded]):
    # Given expensive guides and no budget
    embedded = embedded_factory(threads=1, AI_PRICE_INPUT_PER_MTOK=1e6)

    # When a job runs, then every task runs
    job, _ = wait_for_job(_submit(embedded, "a", "b", "c"))
    assert (job["status"], job["succeeded_tasks"]) == ("succeeded", 3)
