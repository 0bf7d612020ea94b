"""JOB_STRATEGY: the scheduling of a job that does not name one, at every edge."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from webkit import make_app
from workerkit import fast_settings, make_project

import db
import pipelines
import settings
from cli import cli
from db import jobs, schedules
from db.models import Schedule, utcnow


@pytest.fixture
def database(sqlite_url: str) -> str:
    db.configure(sqlite_url)
    return sqlite_url


def _strategies() -> list[str]:
    with db.session_scope() as session:
        return list(session.scalars(sa.text("SELECT strategy FROM jobs ORDER BY id")))


def test_the_settings_know_the_planners_strategies():
    assert settings.JOB_STRATEGIES == pipelines.STRATEGIES


def test_an_unknown_job_strategy_is_refused_with_the_choices():
    with pytest.raises(settings.SettingsError, match="JOB_STRATEGY must be one of flow, batches"):
        settings.from_env({"JOB_STRATEGY": "fastest"})


def test_a_bad_job_strategy_stops_the_cli_with_exit_2(database: str):
    result = CliRunner().invoke(cli, ["status", "1"], env={"JOB_STRATEGY": "barriers"})
    assert result.exit_code == 2
    assert "JOB_STRATEGY must be one of flow, batches, got 'barriers'" in result.output


def test_the_api_uses_the_setting_unless_the_request_names_a_strategy(database: str):
    client = make_app(database, JOB_STRATEGY="batches").test_client()
    project_id = make_project("a", "b")
    url = f"/api/projects/{project_id}/jobs"
    assert client.post(url, json={}).status_code == 202
    assert client.post(url, json={"strategy": "flow", "force": True}).status_code == 202
    assert _strategies() == ["batches", "flow"]


def test_the_form_preselects_the_setting_and_submits_it(database: str):
    app = make_app(database, JOB_STRATEGY="batches")
    client = app.test_client()
    project_id = make_project("a")
    page = client.get(f"/projects/{project_id}").get_data(as_text=True)
    assert '<option value="batches" selected>' in page
    assert '<option value="flow">' in page


def test_enqueue_uses_the_setting_unless_given_strategy(database: str):
    project_id = make_project("a", "b")
    obj = fast_settings(database, JOB_STRATEGY="batches")
    runner = CliRunner()
    assert runner.invoke(cli, ["enqueue", str(project_id)], obj=obj).exit_code == 0
    given = ["enqueue", str(project_id), "--strategy", "flow"]
    assert runner.invoke(cli, given, obj=obj).exit_code == 0
    assert _strategies() == ["batches", "flow"]


def test_a_recurring_job_uses_the_deployments_strategy(database: str):
    project_id = make_project("a", "b")
    schedule_id = schedules.add_schedule(project_id, "*/5 * * * *", batch_size=5, max_batch_size=50)
    with db.session_scope() as session:
        session.execute(
            sa.update(Schedule)
            .where(Schedule.id == schedule_id)
            .values(next_run_at=utcnow() - dt.timedelta(minutes=1))
        )
    (fired,) = schedules.fire_due(max_tasks=100, max_batch_size=50, strategy="batches")
    assert fired.job_id is not None
    assert jobs.snapshot(fired.job_id)["strategy"] == "batches"
