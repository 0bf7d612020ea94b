"""The JSON API: every endpoint, and each error it answers with."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from webkit import make_app

from db import session_scope
from db.models import HandsOn, Project, Task

PROJECT = {
    "name": "Recipe app",
    "description": "A small app",
    "tasks": [
        {"key": "repo", "title": "Set up the repository"},
        {"key": "model", "title": "Write the data model", "depends_on": ["repo"]},
        {"key": "api", "title": "Write the API", "depends_on": ["repo", "model"]},
    ],
}


def create(client, document=None) -> dict:
    response = client.post("/api/projects", json=document or PROJECT)
    assert response.status_code == 201, response.json
    return response.json


def assert_error(response, status: int, code: str | None = None, field: str | None = None):
    assert response.status_code == status
    assert response.is_json
    error = response.json["error"]
    assert set(error) == {"code", "message", "field"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if field is not None:
        assert error["field"] == field
    return error


def project_count() -> int:
    with session_scope() as session:
        return session.scalar(sa.select(sa.func.count(Project.id)))


# --- projects ---------------------------------------------------------------------


def test_post_projects_creates_a_project_and_get_returns_it(client):
    # When a project is posted in the import format
    response = client.post("/api/projects", json=PROJECT)

    # Then it is created with its tasks and dependencies, and can be read back
    assert response.status_code == 201
    project = response.json
    assert response.headers["Location"] == f"/api/projects/{project['id']}"
    assert project["name"] == "Recipe app"
    assert [t["key"] for t in project["tasks"]] == ["repo", "model", "api"]
    assert project["tasks"][2]["depends_on"] == ["repo", "model"]
    assert client.get(f"/api/projects/{project['id']}").json == project


def test_get_an_unknown_project_is_404(client):
    assert_error(client.get("/api/projects/999"), 404, "not_found")


@pytest.mark.parametrize(
    ("document", "code", "field"),
    [
        (
            {
                "name": "C",
                "tasks": [{"title": "a", "depends_on": ["2"]}, {"title": "b", "depends_on": ["1"]}],
            },
            "cycle",
            "tasks",
        ),
        (
            {"name": "U", "tasks": [{"title": "a", "depends_on": ["9"]}]},
            "unknown_dependency",
            "tasks",
        ),
        ({"name": "E", "tasks": []}, "empty_project", "tasks"),
        ({"tasks": [{"title": "a"}]}, "project_format", "name"),
        ({"name": "T", "tasks": "nope"}, "project_format", "tasks"),
        ({"name": "T", "tasks": [{"title": ""}]}, "project_format", "tasks[0].title"),
        ([1, 2], "project_format", None),
    ],
    ids=[
        "cycle",
        "unknown-dependency",
        "empty",
        "no-name",
        "tasks-not-a-list",
        "empty-title",
        "not-an-object",
    ],
)
def test_post_projects_rejects_an_invalid_project_with_422_and_saves_nothing(
    client, document, code, field
):
    error = assert_error(client.post("/api/projects", json=document), 422, code)
    assert error["field"] == field
    assert project_count() == 0


def test_post_projects_rejects_too_many_tasks(sqlite_url):
    client = make_app(sqlite_url, MAX_TASKS=2).test_client()
    document = {"name": "Big", "tasks": [{"title": str(i)} for i in range(3)]}
    assert_error(client.post("/api/projects", json=document), 422, "too_many_tasks", "tasks")


def test_post_projects_rejects_a_body_that_is_not_json(client):
    assert_error(client.post("/api/projects", data="name=x"), 415, "unsupported_media_type")
    bad = client.post("/api/projects", data="{nope", content_type="application/json")
    assert_error(bad, 400, "invalid_json")


def test_an_oversized_body_is_413(sqlite_url):
    client = make_app(sqlite_url, MAX_CONTENT_LENGTH=1000).test_client()
    document = {"name": "x" * 2000, "tasks": [{"title": "a"}]}
    assert_error(client.post("/api/projects", json=document), 413, "too_large")
    assert project_count() == 0


def test_a_wrong_method_is_405_with_allow(client):
    response = client.delete("/api/projects/1")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_an_unknown_api_path_is_a_json_404(client):
    assert_error(client.get("/api/nothing-here"), 404, "not_found")


# --- jobs ---------------------------------------------------------------------------


def test_generate_all_keeps_the_origin_contract(client):
    project = create(client)
    body = {"project_id": project["id"], "config": {"batch_size": 2}}
    response = client.post("/api/task_hands_on/generate_all", json=body)
    assert response.status_code == 202
    job_id = response.json["job_id"]
    assert response.json == {"job_id": job_id}
    assert response.headers["Location"] == f"/api/jobs/{job_id}"
    assert client.get(f"/api/jobs/{job_id}").json["batch_size"] == 2


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"project_id": 999}, 404, None),
        ({"project_id": "1"}, 422, "project_id"),
        ({}, 422, "project_id"),
        ({"project_id": 1, "config": {"batch_size": 0}}, 422, "batch_size"),
        ({"project_id": 1, "config": {"batch_size": 10_000}}, 422, "batch_size"),
        ({"project_id": 1, "config": {"batch_size": "5"}}, 422, "batch_size"),
        ({"project_id": 1, "config": []}, 422, "config"),
        ([], 422, None),
    ],
    ids=["unknown", "id-string", "no-id", "zero", "too-big", "size-string", "config-list", "list"],
)
def test_generate_all_rejects_bad_input(client, body, status, field):
    create(client)
    error = assert_error(client.post("/api/task_hands_on/generate_all", json=body), status)
    assert error["field"] == field


def test_post_project_jobs_starts_a_job_with_the_default_batch_size(client, app):
    project = create(client)
    response = client.post(f"/api/projects/{project['id']}/jobs")
    assert response.status_code == 202
    job = client.get(f"/api/jobs/{response.json['job_id']}").json
    assert job["batch_size"] == app.config["HANDSON"].BATCH_SIZE
    sized = client.post(
        f"/api/projects/{project['id']}/jobs", json={"batch_size": 1, "force": True}
    )
    assert client.get(f"/api/jobs/{sized.json['job_id']}").json["batch_size"] == 1


def test_post_project_jobs_errors(client):
    assert_error(client.post("/api/projects/999/jobs", json={}), 404)
    project = create(client)
    url = f"/api/projects/{project['id']}/jobs"
    assert_error(client.post(url, json={"batch_size": -1}), 422, "batch_size", "batch_size")
    assert_error(client.post(url, json=[1]), 422)
    assert_error(client.post(url, data="x", content_type="text/plain"), 415)


def test_get_job_returns_status_counters_batches_and_runs(client):
    project = create(client)
    job_id = client.post(f"/api/projects/{project['id']}/jobs", json={"batch_size": 5}).json[
        "job_id"
    ]
    job = client.get(f"/api/jobs/{job_id}").json
    assert job["status"] == "running"
    assert (job["total_tasks"], job["done_tasks"]) == (3, 0)
    assert (job["strategy"], job["max_in_flight"], job["in_flight"]) == ("flow", 5, 1)
    assert job["total_batches"] == len(job["batches"]) == 1
    # The first task is released; the others wait for the tasks they depend on
    released = [run for batch in job["batches"] for run in batch["runs"]]
    assert [(run["key"], run["status"]) for run in released] == [("repo", "queued")]
    waiting = {run["key"]: run["waits_for"] for run in job["unreleased"]}
    assert waiting == {"model": ["repo"], "api": ["repo", "model"]}
    assert {run["status"] for run in job["unreleased"]} == {"waiting"}
    assert_error(client.get("/api/jobs/999"), 404)


def test_get_jobs_lists_newest_first_with_pages(client):
    project = create(client)
    url = f"/api/projects/{project['id']}/jobs"
    ids = [client.post(url, json={"force": True}).json["job_id"] for _ in range(3)]
    first = client.get("/api/jobs?per_page=2").json
    assert [j["id"] for j in first["items"]] == ids[::-1][:2]
    assert (first["pages"], first["total"]) == (2, 3)
    second = client.get("/api/jobs?per_page=2&page=2").json
    assert [j["id"] for j in second["items"]] == ids[:1]


# --- guides -------------------------------------------------------------------------


def save_guide(task_id: int, markdown: str) -> None:
    with session_scope() as session:
        session.add(HandsOn(task_id=task_id, markdown=markdown, generator="test"))


def test_get_hands_on_returns_markdown_and_sanitized_html(client):
    project = create(client)
    task_id = project["tasks"][0]["id"]
    assert_error(client.get(f"/api/tasks/{task_id}/hands_on"), 404, "not_generated")
    save_guide(task_id, "# Step\n<script>alert(1)</script>[x](javascript:alert(1))")
    guide = client.get(f"/api/tasks/{task_id}/hands_on").json
    assert guide["markdown"].startswith("# Step")
    assert "<h1>Step</h1>" in guide["html"]
    assert "<script" not in guide["html"] and "javascript:" not in guide["html"]
    assert_error(client.get("/api/tasks/999/hands_on"), 404, "not_found")


# --- health, auth, headers, failures ----------------------------------------------------


def test_healthz_reports_database_and_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok", "broker": "ok"}


def test_healthz_is_503_when_the_broker_is_unreachable(sqlite_url):
    client = make_app(sqlite_url, REDIS_URL="redis://127.0.0.1:9/0").test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["broker"] == "unreachable"
    assert response.json["database"] == "ok"


def test_api_writes_need_the_bearer_token_when_one_is_set(sqlite_url):
    client = make_app(sqlite_url, API_TOKEN="s3cret").test_client()
    # Without, or with a wrong token: 401 with a Bearer challenge
    response = client.post("/api/projects", json=PROJECT)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = {"Authorization": "Bearer nope"}
    assert_error(client.post("/api/projects", json=PROJECT, headers=wrong), 401)
    assert project_count() == 0
    # With the token: accepted; reads need none
    right = {"Authorization": "Bearer s3cret"}
    project = client.post("/api/projects", json=PROJECT, headers=right).json
    assert client.get(f"/api/projects/{project['id']}").status_code == 200


def test_an_unexpected_error_is_a_plain_500_without_a_trace(sqlite_url):
    app = make_app(sqlite_url, PROPAGATE_EXCEPTIONS=False)

    def boom() -> None:
        raise RuntimeError("secret internals")

    app.add_url_rule("/api/boom", view_func=boom)
    app.add_url_rule("/boom", view_func=boom)
    client = app.test_client()
    error = assert_error(client.get("/api/boom"), 500, "internal_error")
    assert "secret" not in error["message"]
    page = client.get("/boom", headers={"Accept": "text/html"})
    assert page.status_code == 500
    assert b"Traceback" not in page.data and b"secret" not in page.data


def test_every_response_has_the_security_headers(client):
    for response in (client.get("/"), client.get("/api/projects/1"), client.get("/healthz")):
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"


def test_json_errors_are_valid_json_documents(client):
    body = client.get("/api/jobs/1").data
    assert json.loads(body)["error"]["code"] == "not_found"


def test_task_ids_in_the_project_match_the_database(client):
    project = create(client)
    with session_scope() as session:
        ids = session.scalars(sa.select(Task.id).order_by(Task.position)).all()
    assert [t["id"] for t in project["tasks"]] == ids


def test_secret_key_is_required_outside_debug_testing_and_embedded_mode(
    sqlite_url, monkeypatch: pytest.MonkeyPatch
):
    from workerkit import fast_settings

    import web
    from web import create_app
    from web.security import SecretKeyMissingError

    # A deployed app stores this process's Redis usage once a minute from then on: here
    # that thread would outlive the test and take other tests' counts.
    monkeypatch.setattr(web, "_start_usage_flusher", lambda process_kind: None)

    deployed = fast_settings(sqlite_url, REDIS_URL="redis://127.0.0.1:9/0")
    with pytest.raises(SecretKeyMissingError, match="SECRET_KEY is not set"):
        create_app(settings=deployed)
    assert create_app({"DEBUG": True}, settings=deployed).secret_key
    keyed = create_app(settings=deployed.replace(SECRET_KEY="k" * 32))
    assert keyed.secret_key == "k" * 32


def test_the_openapi_description_lists_every_api_route(app):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text()
    documented = set(re.findall(r"^  (/\S+):$", text, flags=re.MULTILINE))
    served = {
        re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/") or rule.rule == "/healthz"
    }
    assert documented == served
