"""Form pages: project form (typed tasks or JSON file), CSRF, project and job pages, guides."""

from __future__ import annotations

import io
import json
import re

import pytest
import sqlalchemy as sa
from webkit import make_app

from db import session_scope
from db.models import HandsOn, Project
from web import forms


def csrf(client, path: str = "/projects/new") -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the form has no CSRF token"
    return match.group(1)


def post_project(client, **fields):
    data = {"csrf_token": csrf(client), "name": "Recipe app", "description": "", **fields}
    return client.post("/projects", data=data, content_type="multipart/form-data")


def project_count() -> int:
    with session_scope() as session:
        return session.scalar(sa.select(sa.func.count(Project.id)))


def test_the_form_creates_a_project_with_typed_dependencies(client):
    # When tasks are typed one per line with both dependency syntaxes
    tasks = "Set up the repo\n\nWrite the model (after 1)\nWrite the API :: REST <- 1, 2\n"
    response = post_project(client, tasks=tasks)

    # Then the project is created and its page shows the tasks and their dependencies
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Write the model" in page and "Generate hands-on guides" in page
    project = client.get("/api/projects/1").json
    assert [t["depends_on"] for t in project["tasks"]] == [[], ["1"], ["1", "2"]]
    assert project["tasks"][2]["description"] == "REST"


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ("A (after 2)\nB (after 1)", "cycle"),
        ("A\nB (after 7)", "7"),
        ("", "no task"),
        ("A (after x)", "Line 1"),
        ("(after 1)\nB", "Line 1"),
    ],
    ids=["cycle", "unknown-dependency", "empty", "bad-dependency-list", "empty-title"],
)
def test_form_errors_come_back_on_the_form_and_nothing_is_saved(client, tasks, message):
    response = post_project(client, tasks=tasks)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    error = re.search(r'id="form-error"[^>]*>([^<]*)<', page)
    assert error and message.lower() in error.group(1).lower(), page
    assert 'name="name" value="Recipe app"' in page  # what was typed is kept
    assert project_count() == 0


def test_the_form_refuses_too_many_tasks(sqlite_url):
    client = make_app(sqlite_url, MAX_TASKS=2).test_client()
    response = post_project(client, tasks="A\nB\nC")
    assert response.status_code == 422
    assert "at most 2" in response.get_data(as_text=True)


def test_the_form_accepts_a_json_import_file(client):
    document = {"name": "From file", "tasks": [{"key": "a", "title": "A"}]}
    upload = (io.BytesIO(json.dumps(document).encode()), "project.json")
    response = post_project(client, tasks="", file=upload)
    assert response.status_code == 303
    assert client.get("/api/projects/1").json["name"] == "From file"


def test_an_invalid_json_file_is_a_form_error(client):
    upload = (io.BytesIO(b'{"name": "x", '), "project.json")
    response = post_project(client, file=upload)
    assert response.status_code == 422
    assert "not valid JSON" in response.get_data(as_text=True)
    assert project_count() == 0


def test_a_too_large_file_is_a_form_error(sqlite_url):
    client = make_app(sqlite_url, MAX_CONTENT_LENGTH=2000).test_client()
    upload = (io.BytesIO(b" " * 5000), "project.json")
    response = post_project(client, file=upload)
    assert response.status_code == 413
    assert "too large" in response.get_data(as_text=True)
    assert 'id="project-form"' in response.get_data(as_text=True)
    assert project_count() == 0


def test_forms_without_the_csrf_token_are_refused(client):
    response = client.post("/projects", data={"name": "x", "tasks": "A"})
    assert response.status_code == 400
    assert "reload the page" in response.get_data(as_text=True)
    wrong = client.post("/projects", data={"name": "x", "tasks": "A", "csrf_token": "nope"})
    assert wrong.status_code == 400
    assert project_count() == 0


def test_generate_starts_a_job_and_goes_to_its_page(client):
    post_project(client, tasks="A\nB (after 1)")
    token = csrf(client, "/projects/1")
    response = client.post("/projects/1/jobs", data={"csrf_token": token, "batch_size": "2"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/jobs/1"
    page = client.get("/jobs/1").get_data(as_text=True)
    assert 'data-events-url="/api/jobs/1/events"' in page
    assert 'id="redis-commands" hidden' in page


def test_generate_with_a_bad_batch_size_stays_on_the_project_page(client):
    post_project(client, tasks="A")
    token = csrf(client, "/projects/1")
    for size in ("0", "many"):
        response = client.post("/projects/1/jobs", data={"csrf_token": token, "batch_size": size})
        assert response.status_code == 422
        assert "Batch size" in response.get_data(as_text=True)
    missing = client.post("/projects/9/jobs", data={"csrf_token": token, "batch_size": "1"})
    assert missing.status_code == 404


def test_the_jobs_list_is_newest_first_and_paginated(client):
    post_project(client, tasks="A")
    token = csrf(client, "/projects/1")
    for _ in range(22):
        client.post("/projects/1/jobs", data={"csrf_token": token, "batch_size": "1", "force": "1"})
    first = client.get("/jobs").get_data(as_text=True)
    ids = [int(i) for i in re.findall(r'href="/jobs/(\d+)"', first)]
    assert ids == list(range(22, 2, -1))
    assert "page 1 of 2" in first
    second = client.get("/jobs?page=2").get_data(as_text=True)
    assert [int(i) for i in re.findall(r'href="/jobs/(\d+)"', second)] == [2, 1]


def test_the_guide_page_renders_sanitized_html_and_guides_download(client):
    post_project(client, tasks="A\nB")
    evil = (
        "# Guide\n\n<script>alert('x')</script>\n\n<img src=x onerror=alert(1)>\n\n"
        '[click](javascript:alert(1)) <a href="JaVaScRiPt:alert(2)" onclick="x()">b</a>'
    )
    with session_scope() as session:
        session.add(HandsOn(task_id=1, markdown=evil, generator="test"))
    page = client.get("/tasks/1/guide").get_data(as_text=True)
    article = page.split('id="guide" dir="auto">', 1)[1].split("</article>", 1)[0]
    assert "<h1>Guide</h1>" in article
    # The attacks show as the text they are; none of it is an element or an attribute
    assert "<script" not in article.lower() and "<img" not in article.lower()
    assert not re.search(r"<[^>]*\b(onerror|onclick|href=\S*javascript)", article, re.I)
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in article
    assert "No guide yet" in client.get("/tasks/2/guide").get_data(as_text=True)

    download = client.get("/projects/1/guides.md")
    assert download.mimetype == "text/markdown"
    assert "attachment" in download.headers["Content-Disposition"]
    text = download.get_data(as_text=True)
    assert text.startswith("# Recipe app") and "## A" in text and "## B" in text


def test_unknown_pages_are_html_404s(client):
    for path in ("/projects/9", "/jobs/9", "/tasks/9/guide", "/projects/9/guides.md"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.mimetype == "text/html"


def test_json_preferring_clients_get_json_errors_from_pages(client):
    response = client.get("/jobs/9", headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Write the API  (after 2, 3)", ("Write the API", "", ["2", "3"])),
        ("Write the API <- 2,3", ("Write the API", "", ["2", "3"])),
        ("Deploy (AFTER #4)", ("Deploy", "", ["4"])),
        ("Docs :: with examples", ("Docs", "with examples", [])),
        ("Plain (not a dependency)", ("Plain (not a dependency)", "", [])),
    ],
)
def test_task_lines_parse(line, expected):
    task = forms.parse_task_line(line, 5)
    assert (task["title"], task["description"], task["depends_on"]) == expected
    assert task["key"] == "5"
