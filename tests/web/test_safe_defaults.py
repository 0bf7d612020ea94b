"""Safe by default when deployed: the session cookie, a closed API without a token, the
Origin check on API writes, and starting a project's job once (while one runs, and per
Idempotency-Key), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid

import pytest
import sqlalchemy as sa
from webkit import make_app

from db import idempotency, lease, session_scope
from db.models import Job, Lease, Project, utcnow

PROJECT = {"name": "Recipe app", "tasks": [{"key": "a", "title": "A"}, {"key": "b", "title": "B"}]}
#: A Redis nobody listens on: the app is deployed (not embedded) and sends nothing here.
DEPLOYED = {"REDIS_URL": "redis://127.0.0.1:9/0"}


def count(model) -> int:
    with session_scope() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model))


@pytest.fixture
def client(database_url: str):
    return make_app(database_url).test_client()


def start(client, project_id: int, *, key: str | None = None, **body):
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(
        "/api/task_hands_on/generate_all",
        json={"project_id": project_id, **body},
        headers=headers,
    )


# --- the session cookie -------------------------------------------------------------------


def session_cookie(client) -> str:
    response = client.get("/projects/new")  # renders a CSRF token: the session is set
    cookies = [v for k, v in response.headers.items() if k == "Set-Cookie"]
    assert cookies, "no session cookie was set"
    return cookies[0]


def test_the_session_cookie_is_samesite_lax_and_httponly(sqlite_url):
    cookie = session_cookie(make_app(sqlite_url).test_client())
    assert "SameSite=Lax" in cookie and "HttpOnly" in cookie
    assert "Secure" not in cookie


def test_the_session_cookie_is_secure_when_the_setting_says_so(sqlite_url):
    cookie = session_cookie(make_app(sqlite_url, SESSION_COOKIE_SECURE=True).test_client())
    assert "Secure" in cookie and "SameSite=Lax" in cookie


# --- a deployed API without a token ----------------------------------------------------------


def test_a_deployed_api_without_a_token_refuses_writes_and_says_so_at_start(
    sqlite_url, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.WARNING, logger="web.security"):
        client = make_app(sqlite_url, **DEPLOYED).test_client()
    assert "API writes are refused" in caplog.text and "API_OPEN=1" in caplog.text
    response = client.post("/api/projects", json=PROJECT)
    assert response.status_code == 403
    assert response.json["error"]["code"] == "api_closed"
    assert "API_TOKEN" in response.json["error"]["message"]
    assert client.post("/api/jobs/1/cancel").status_code == 403
    assert count(Project) == 0
    assert client.get("/api/jobs").status_code == 200  # reads stay open


def test_api_open_lets_anyone_write_and_warns_at_start(
    sqlite_url, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.WARNING, logger="web.security"):
        client = make_app(sqlite_url, API_OPEN=True, **DEPLOYED).test_client()
    assert "anyone who reaches this app can write" in caplog.text
    assert client.post("/api/projects", json=PROJECT).status_code == 201


def test_the_embedded_app_is_open_and_quiet(sqlite_url, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="web.security"):
        client = make_app(sqlite_url).test_client()
    assert caplog.text == ""
    assert client.post("/api/projects", json=PROJECT).status_code == 201


def test_a_token_opens_a_deployed_api(sqlite_url):
    client = make_app(sqlite_url, API_TOKEN="s3cret", **DEPLOYED).test_client()
    assert client.post("/api/projects", json=PROJECT).status_code == 401
    right = {"Authorization": "Bearer s3cret"}
    assert client.post("/api/projects", json=PROJECT, headers=right).status_code == 201


# --- Origin and Referer -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost.evil.example"},
        {"Referer": "https://evil.example/page.html"},
    ],
    ids=["other-site", "null", "lookalike", "referer"],
)
def test_api_writes_from_another_origin_are_refused(client, headers):
    for path in ("/api/projects", "/api/jobs/1/cancel", "/api/task_hands_on/generate_all"):
        response = client.post(path, json=PROJECT, headers=headers)
        assert response.status_code == 403, path
        assert response.json["error"]["code"] == "cross_origin"
    assert count(Project) == 0


def test_api_writes_from_the_app_itself_or_without_origin_pass(client):
    for headers in (
        {},
        {"Origin": "http://localhost"},
        {"Referer": "http://localhost/projects/new"},
        {"Origin": "https://LOCALHOST"},  # a proxy that ends TLS: the host is what counts
    ):
        assert client.post("/api/projects", json=PROJECT, headers=headers).status_code == 201
    assert count(Project) == 4


# --- starting a project's job once ---------------------------------------------------------------


def test_a_second_start_while_a_job_runs_is_409_with_its_id_unless_forced(client):
    project_id = client.post("/api/projects", json=PROJECT).json["id"]
    first = start(client, project_id)
    assert first.status_code == 202
    job_id = first.json["job_id"]

    again = start(client, project_id, config={"batch_size": 1})
    assert again.status_code == 409
    assert again.json["error"]["code"] == "job_running"
    assert again.json["error"]["job_id"] == job_id
    other = client.post(f"/api/projects/{project_id}/jobs")
    assert other.status_code == 409 and other.json["error"]["job_id"] == job_id
    assert count(Job) == 1

    forced = start(client, project_id, force=True)
    assert forced.status_code == 202 and forced.json["job_id"] != job_id
    assert count(Job) == 2
    assert start(client, project_id, force="yes").status_code == 422


def test_a_start_after_the_job_ended_is_a_new_job(client):
    project_id = client.post("/api/projects", json=PROJECT).json["id"]
    job_id = start(client, project_id).json["job_id"]
    assert client.post(f"/api/jobs/{job_id}/cancel").json["cancelled"] is True
    again = start(client, project_id)
    assert again.status_code == 202 and again.json["job_id"] != job_id


def test_the_same_idempotency_key_gives_the_same_job(client):
    project_id = client.post("/api/projects", json=PROJECT).json["id"]
    key = str(uuid.uuid4())
    first = start(client, project_id, key=key)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    # Even forced, and even after the job ended: the key already started its job.
    client.post(f"/api/jobs/{first.json['job_id']}/cancel")
    for _ in range(2):
        again = start(client, project_id, key=key, force=True)
        assert again.status_code == 202
        assert again.json["job_id"] == first.json["job_id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["Location"] == first.headers["Location"]
    assert count(Job) == 1
    # A new key is a new request
    assert start(client, project_id, key=str(uuid.uuid4())).json["job_id"] != first.json["job_id"]


def test_an_idempotency_key_in_flight_or_reused_elsewhere_is_refused(client):
    first = client.post("/api/projects", json=PROJECT).json["id"]
    second = client.post("/api/projects", json=PROJECT).json["id"]
    key = "retry-me"
    # Given another request holding the key while it starts its job
    name = idempotency._key_name(key)
    assert lease.acquire(name, "pending:other", ttl_s=60)
    busy = start(client, first, key=key)
    assert busy.status_code == 409 and busy.json["error"]["code"] == "idempotency_key_in_use"
    lease.release(name, "pending:other")
    # A key that started a job of one project cannot start one of another
    assert start(client, first, key=key).status_code == 202
    reused = start(client, second, key=key)
    assert reused.status_code == 422 and reused.json["error"]["field"] == "Idempotency-Key"
    assert start(client, first, key=" ").status_code == 422
    assert count(Job) == 1


def test_a_start_that_fails_releases_its_key_and_the_project(client):
    project_id = client.post("/api/projects", json=PROJECT).json["id"]
    bad = start(client, project_id, key="k1", config={"batch_size": 0})
    assert bad.status_code == 422
    assert start(client, 999, key="k2").status_code == 404
    good = start(client, project_id, key="k1")
    assert good.status_code == 202 and "Idempotent-Replayed" not in good.headers
    assert count(Job) == 1


def test_simultaneous_starts_of_a_project_start_one_job(database_url):
    # Given eight requests that start the same project at the same moment
    app = make_app(database_url)
    project_id = app.test_client().post("/api/projects", json=PROJECT).json["id"]
    barrier = threading.Barrier(8)
    answers: list = []

    def post() -> None:
        client = app.test_client()
        barrier.wait()
        answers.append(start(client, project_id))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # Then one job was started; every other answer is a 409 (naming it once it is written)
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [202] + [409] * 7, [a.json for a in answers]
    job_id = next(a.json["job_id"] for a in answers if a.status_code == 202)
    assert {a.json["error"]["job_id"] for a in answers if a.status_code == 409} <= {job_id, None}
    assert count(Job) == 1


def test_two_clicks_on_generate_start_one_job(client):
    project_id = client.post("/api/projects", json=PROJECT).json["id"]
    page = client.get(f"/projects/{project_id}").get_data(as_text=True)
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    form = {"csrf_token": token, "batch_size": "2"}
    first = client.post(f"/projects/{project_id}/jobs", data=form)
    second = client.post(f"/projects/{project_id}/jobs", data=form)
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"] == "/jobs/1"
    assert "is running already" in client.get("/jobs/1").get_data(as_text=True)
    assert count(Job) == 1
    forced = client.post(f"/projects/{project_id}/jobs", data={**form, "force": "1"})
    assert forced.headers["Location"] == "/jobs/2"


def test_a_key_names_its_job_for_a_day_then_is_forgotten(client):
    project_id = client.post("/api/projects", json=PROJECT).json["id"]
    first = start(client, project_id, key="old-key").json["job_id"]
    client.post(f"/api/jobs/{first}/cancel")
    name = idempotency._key_name("old-key")
    with session_scope() as session:
        row = session.get(Lease, name)
        assert row.holder == f"project:{project_id}:job:{first}"
        assert row.expires_at - utcnow() > dt.timedelta(hours=23)
        row.expires_at = utcnow() - dt.timedelta(seconds=1)  # a day later
    # The next keyed start forgets it; the same key then starts a new job
    assert start(client, project_id, key="new-key").status_code == 202
    with session_scope() as session:
        assert session.get(Lease, name) is None
    client.post(f"/api/jobs/{first + 1}/cancel")
    assert start(client, project_id, key="old-key").json["job_id"] == first + 2
