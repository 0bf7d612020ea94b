"""A form whose CSRF token went stale comes back filled in, with a message; nothing is done."""

from __future__ import annotations

import html
import re

import sqlalchemy as sa
from webkit import make_app

from db import jobs, session_scope
from db.models import Job, Project


def token_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has no CSRF token"
    return match.group(1)


def count(model) -> int:
    with session_scope() as session:
        return session.scalar(sa.select(sa.func.count(model.id)))


def test_a_stale_project_form_comes_back_with_what_was_typed_and_sends_on_the_next_try(
    sqlite_url,
):
    # Given a form filled in with a token that no longer matches (another secret key)
    client = make_app(sqlite_url).test_client()
    typed = {"name": "Recipe <app>", "description": "d", "tasks": "Repo\nModel (after 1)"}

    # When it is sent
    response = client.post("/projects", data={"csrf_token": "stale", **typed})

    # Then it comes back with its contents and a message, and nothing is saved
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "This form had expired" in page and "nothing was done" in page
    assert f'value="{html.escape(typed["name"])}"' in page
    assert "Repo\nModel (after 1)</textarea>" in page
    assert count(Project) == 0

    # And sending it again as it came back creates the project
    again = client.post("/projects", data={"csrf_token": token_of(page), **typed})
    assert again.status_code == 303 and count(Project) == 1


def test_a_stale_generate_form_keeps_its_batch_size_and_starts_nothing(sqlite_url):
    # Given a project, and its Generate form sent with a stale token
    client = make_app(sqlite_url).test_client()
    project = {"name": "P", "tasks": [{"key": "a", "title": "A"}]}
    project_id = client.post("/api/projects", json=project).json["id"]

    response = client.post(
        f"/projects/{project_id}/jobs", data={"csrf_token": "stale", "batch_size": "3"}
    )

    # Then the project page comes back with the message and the batch size typed
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and "This form had expired" in page
    assert 'name="batch_size" min="1" value="3"' in page
    assert count(Job) == 0


def test_a_stale_cancel_button_shows_the_job_page_with_the_message(sqlite_url):
    # Given a running job, and its Cancel button pressed with a stale token
    client = make_app(sqlite_url).test_client()
    project = {"name": "P", "tasks": [{"key": "a", "title": "A"}]}
    project_id = client.post("/api/projects", json=project).json["id"]
    job_id = client.post("/api/task_hands_on/generate_all", json={"project_id": project_id}).json[
        "job_id"
    ]

    response = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": "stale"})

    # Then the job page says what happened, and the job goes on
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert re.search(r'id="notice"[^>]*>[^<]*Press the button again', page)
    assert jobs.snapshot(job_id)["status"] == "running"


def test_a_cross_site_post_gets_the_plain_refusal_without_its_contents(sqlite_url):
    client = make_app(sqlite_url).test_client()
    response = client.post(
        "/projects",
        data={"csrf_token": "forged", "name": "Planted", "tasks": "Evil"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert response.status_code == 400
    assert "Planted" not in response.get_data(as_text=True)
    assert count(Project) == 0
