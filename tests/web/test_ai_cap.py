"""The monthly AI budget at submit: a job that would pass what is left is refused (API
409 ``budget_exceeded``, the form 409, CLI exit 2) and nothing is written."""

from __future__ import annotations

import re

import sqlalchemy as sa
from click.testing import CliRunner
from workerkit import fast_settings, make_project

import db
from cli import cli
from db import ai_spend
from db.models import Job
from web import create_app

#: The default guide estimate at the default prices: 1,500 x 0.15 + 800 x 0.60 per million.
DEFAULT_GUIDE = (1_500 * 0.15 + 800 * 0.60) / 1e6


def job_count() -> int:
    with db.session_scope() as session:
        return session.scalar(sa.select(sa.func.count(Job.id))) or 0


def test_a_job_over_the_budget_left_is_refused_with_the_figures_and_writes_nothing(
    database_url: str,
):
    # Given a 3-task project, no guide metered yet, and a budget of 0.01
    settings = fast_settings(database_url, AI_MONTHLY_BUDGET=0.01)
    client = create_app({"TESTING": True}, settings=settings).test_client()
    project_id = make_project("a", "b", "c")
    url = f"/api/projects/{project_id}/jobs"
    assert ai_spend.Cap(0.01, 0.15, 0.60).default_guide_cost == DEFAULT_GUIDE

    # When a job is submitted: 3 x the default estimate fits in 0.01
    accepted = client.post(url, json={})
    assert accepted.status_code == 202, accepted.json

    # And this month's spend reaches 0.0095 (its guides' cost)
    with db.session_scope() as session:
        session.execute(sa.update(Job).values(cost=0.0095))

    # Then the next job (0.0021 estimated, 0.0005 left) is refused with the figures
    refused = client.post(url, json={"force": True})
    assert refused.status_code == 409
    error = refused.json["error"]
    assert error["code"] == "budget_exceeded"
    assert "estimated AI cost 0.0021 (3 tasks x 0.000705 a guide)" in error["message"]
    assert "0.0005 left of the monthly AI budget (0.0095 of 0.01 spent" in error["message"]
    assert job_count() == 1

    # And so is it from the form (the project page, with the message) and the CLI
    page = client.get(f"/projects/{project_id}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    form = client.post(
        f"/projects/{project_id}/jobs",
        data={"batch_size": "5", "force": "1", "csrf_token": token[1]},
    )
    assert form.status_code == 409 and b"monthly AI budget" in form.data
    result = CliRunner().invoke(cli, ["enqueue", str(project_id)], obj=settings)
    assert result.exit_code == 2 and "monthly AI budget" in result.output
    assert job_count() == 1

    # And without a budget, the same job goes
    open_client = create_app(
        {"TESTING": True}, settings=settings.replace(AI_MONTHLY_BUDGET=None)
    ).test_client()
    assert open_client.post(url, json={"force": True}).status_code == 202
    assert job_count() == 2


def test_the_estimate_follows_the_recent_average_cost_of_a_guide(database_url: str):
    # Given guides already metered at 0.001 each, and a budget of 0.005 with nothing spent
    settings = fast_settings(database_url, GENERATOR="offline", AI_MONTHLY_BUDGET=0.005)
    client = create_app({"TESTING": True}, settings=settings).test_client()
    project_id = make_project("a", "b", "c", "d", "e", "f")
    with db.session_scope() as session:
        connection = session.connection()
        for task_id in connection.scalars(sa.text("SELECT id FROM tasks")):
            connection.execute(
                sa.text(
                    "INSERT INTO hands_on (task_id, markdown, generator, model, prompt_tokens,"
                    " completion_tokens, tokens_estimated, cost, created_at, updated_at)"
                    " VALUES (:t, 'x', 'openai:m', 'm', 1, 1, false, 0.001, :now, :now)"
                ),
                {"t": task_id, "now": db.models.utcnow()},
            )

    # When a 6-task job is submitted: 6 x 0.001 is more than 0.005
    refused = client.post(f"/api/projects/{project_id}/jobs", json={})

    # Then it is refused on that average, not on the default estimate
    assert refused.status_code == 409
    assert "(6 tasks x 0.001000 a guide)" in refused.json["error"]["message"]
