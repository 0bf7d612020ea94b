"""Bad input at every edge of the web app, on SQLite and PostgreSQL: a clear 4xx, nothing written.

Each class here answered 500 before: integers beyond the database's range (PostgreSQL
from 2^31, SQLite from 2^63), JSON nested a thousand levels deep, a NUL character or a
lone surrogate in a text field, a dependency written with a non-ASCII digit.
"""

from __future__ import annotations

import copy
import io
import json
import re

import pytest
import sqlalchemy as sa
from webkit import make_app

from db import session_scope

#: Beyond PostgreSQL's INTEGER, beyond SQLite's INTEGER, beyond anything.
HUGE = [2**31, 2**63, 10**30]
#: Ids in the paths of the API and of the pages (``{}`` is the id).
ID_PATHS = [
    ("GET", "/api/projects/{}"),
    ("POST", "/api/projects/{}/jobs"),
    ("GET", "/api/jobs/{}"),
    ("GET", "/api/jobs/{}/events"),
    ("POST", "/api/jobs/{}/cancel"),
    ("POST", "/api/jobs/{}/retry"),
    ("GET", "/api/tasks/{}/hands_on"),
    ("GET", "/projects/{}"),
    ("POST", "/projects/{}/jobs"),
    ("GET", "/projects/{}/guides.md"),
    ("GET", "/jobs/{}"),
    ("POST", "/jobs/{}/cancel"),
    ("POST", "/jobs/{}/retry"),
    ("GET", "/tasks/{}/guide"),
]
DEEP = "[" * 1000 + "]" * 1000
PROJECT = {"name": "Recipe app", "tasks": [{"key": "a", "title": "A", "description": "d"}]}


@pytest.fixture
def client(database_url: str):
    return make_app(database_url).test_client()


def counts() -> dict[str, int]:
    with session_scope() as session:
        return {
            table: session.scalar(sa.text(f"SELECT count(*) FROM {table}"))
            for table in ("projects", "tasks", "jobs", "events", "schedules")
        }


def assert_error(response, status: int, code: str | None = None, field: str | None = None):
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.json["error"]
    if code is not None:
        assert error["code"] == code
    assert error["field"] == field
    return error["message"]


def csrf(client, path: str = "/projects/new") -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match
    return match.group(1)


def form_error(response) -> str:
    page = response.get_data(as_text=True)
    match = re.search(r'id="form-error"[^>]*>([^<]*)<', page)
    assert match, page
    return match.group(1)


# --- integers beyond the database's range -----------------------------------------------


@pytest.mark.parametrize("number", HUGE, ids=["2^31", "2^63", "10^30"])
def test_ids_beyond_the_database_range_are_404_everywhere(client, number):
    before = counts()
    for method, path in ID_PATHS:
        response = client.open(path.format(number), method=method)
        assert response.status_code == 404, (path, response.get_data(as_text=True)[:200])
    assert counts() == before


@pytest.mark.parametrize("number", HUGE, ids=["2^31", "2^63", "10^30"])
def test_a_project_id_beyond_range_in_a_body_is_404_and_starts_nothing(client, number):
    body = {"project_id": number, "config": {"batch_size": 2}}
    message = assert_error(client.post("/api/task_hands_on/generate_all", json=body), 404)
    assert f"Project {str(number)[:20]}" in message and "does not exist" in message
    assert counts()["jobs"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=2147483648", "page"),
        ("page=9223372036854775808", "page"),
        ("page=0", "page"),
        ("page=%D9%A3", "page"),  # an Arabic-Indic 3
        ("per_page=9223372036854775808", "per_page"),
        ("per_page=101", "per_page"),
    ],
)
def test_page_numbers_out_of_range_are_400_naming_the_parameter(client, query, field):
    message = assert_error(client.get(f"/api/jobs?{query}"), 400, "bad_request", field)
    assert f"{field} must be a whole number from 1 to" in message
    page = client.get(f"/jobs?{query}", headers={"Accept": "text/html"})
    assert page.status_code == (400 if field == "page" else 200)


@pytest.mark.parametrize("seq", ["2147483648", "9223372036854775808", "-1", "1e3", "\u0663"])
def test_a_last_event_id_out_of_range_is_400(client, seq):
    project = client.post("/api/projects", json=PROJECT).json
    job_id = client.post(f"/api/projects/{project['id']}/jobs").json["job_id"]
    url = f"/api/jobs/{job_id}/events"
    for response, field in (
        (client.get(url, headers={"Last-Event-ID": seq}), "Last-Event-ID"),
        (client.get(url, query_string={"last_event_id": seq}), "last_event_id"),
        (
            client.get(url, headers={"Last-Event-ID": "0"}, query_string={"last_event_id": seq}),
            "last_event_id",
        ),
    ):
        assert "event seq" in assert_error(response, 400, "bad_request", field)


def test_the_largest_id_is_an_ordinary_404(client):
    for method, path in ID_PATHS:
        if method == "GET" or path.startswith("/api/"):  # form posts check CSRF first
            assert client.open(path.format(2**31 - 1), method=method).status_code == 404


# --- JSON nested too deeply -----------------------------------------------------------------


def test_deeply_nested_json_is_400_invalid_json_naming_the_depth(client):
    for path in ("/api/projects", "/api/task_hands_on/generate_all"):
        response = client.post(path, data=DEEP, content_type="application/json")
        message = assert_error(response, 400, "invalid_json")
        assert "nested 1000 levels deep; at most 32" in message
    project = client.post("/api/projects", json=PROJECT).json
    response = client.post(
        f"/api/projects/{project['id']}/jobs", data=DEEP, content_type="application/json"
    )
    assert "nested 1000 levels deep" in assert_error(response, 400, "invalid_json")
    assert counts()["projects"] == 1 and counts()["jobs"] == 0


def test_json_with_a_huge_number_or_nan_is_400_invalid_json(client):
    for body in ('{"name": "x", "tasks": [' + "9" * 5000 + "]}", '{"name": NaN, "tasks": []}'):
        response = client.post("/api/projects", data=body, content_type="application/json")
        assert "not " in assert_error(response, 400, "invalid_json")
    assert counts()["projects"] == 0


def test_the_form_refuses_a_deeply_nested_json_file(client):
    upload = (io.BytesIO(DEEP.encode()), "project.json")
    data = {"csrf_token": csrf(client), "name": "", "file": upload}
    response = client.post("/projects", data=data, content_type="multipart/form-data")
    assert response.status_code == 422
    assert "nested 1000 levels deep" in form_error(response)
    assert counts()["projects"] == 0


# --- NUL characters and lone surrogates -------------------------------------------------------


def _with(bad: str, field: str) -> dict:
    """Return the project with ``a<bad>b`` in ``field`` (``name`` or ``tasks[0].title``)."""
    document = copy.deepcopy(PROJECT)
    target, _, name = field.rpartition(".")
    (document["tasks"][0] if target else document)[name] = f"a{bad}b"
    return document


@pytest.mark.parametrize("bad", ["\x00", "\ud800", "\udfff"], ids=["nul", "high", "low"])
@pytest.mark.parametrize(
    "field", ["name", "description", "tasks[0].key", "tasks[0].title", "tasks[0].description"]
)
def test_nul_and_lone_surrogates_are_422_naming_the_field(client, bad, field):
    response = client.post("/api/projects", json=_with(bad, field))
    message = assert_error(response, 422, "project_format", field)
    assert ("NUL" if bad == "\x00" else "lone surrogate") in message
    assert counts()["projects"] == 0


def test_the_form_refuses_a_nul_in_a_typed_field(client):
    for fields, expected in (
        ({"name": "Recipe\x00app", "tasks": "A"}, "name contains a NUL"),
        ({"name": "Recipe app", "tasks": "A\nB\x00 (after 1)"}, "Line 2"),
    ):
        data = {"csrf_token": csrf(client), "description": "", **fields}
        response = client.post("/projects", data=data, content_type="multipart/form-data")
        assert response.status_code == 422
        assert expected in form_error(response)
    assert counts()["projects"] == 0


# --- digits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "digit", ["\u00b2", "\u0663", "\uff11"], ids=["superscript", "arabic", "fullwidth"]
)
def test_a_dependency_in_non_ascii_digits_is_a_form_error(client, digit):
    data = {
        "csrf_token": csrf(client),
        "name": "P",
        "description": "",
        "tasks": f"A\nB (after {digit})",
    }
    response = client.post("/projects", data=data, content_type="multipart/form-data")
    assert response.status_code == 422
    message = form_error(response)
    assert "line 2: dependencies are task numbers" in message.lower()
    assert counts()["projects"] == 0


def test_a_batch_size_in_non_ascii_digits_or_beyond_range_is_a_form_error(client):
    client.post("/api/projects", json=PROJECT)
    token = csrf(client, "/projects/1")
    for size in ("\u0663", "\u00b2", str(2**63), "9" * 5000):
        response = client.post("/projects/1/jobs", data={"csrf_token": token, "batch_size": size})
        assert response.status_code == 422
        assert "Batch size must be a whole number from 1 to 50" in response.get_data(as_text=True)
    assert counts()["jobs"] == 0


def test_the_responses_are_json_documents(client):
    # The error bodies themselves never carry a raw NUL or surrogate back.
    response = client.post("/api/projects", json=_with("\ud800", "tasks[0].title"))
    json.loads(response.get_data(as_text=True))


def test_every_route_with_a_number_in_its_path_takes_a_bounded_id(client):
    rules = [rule.rule for rule in client.application.url_map.iter_rules()]
    assert [rule for rule in rules if "<int:" in rule] == []
    with_ids = {re.sub(r"<id:\w+>", "{}", rule) for rule in rules if "<id:" in rule}
    assert with_ids == {path for _, path in ID_PATHS}  # each one is tested above
