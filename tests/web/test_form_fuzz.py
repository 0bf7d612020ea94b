"""The forms fuzzed with Hypothesis, on SQLite and PostgreSQL: a page or a form error, never a 5xx.

Schemathesis covers the API from its description; the forms have none, so this sends
them arbitrary text (NUL, surrogate-free Unicode of every category, digits of every
script, parentheses and arrows), arbitrary files and arbitrary batch sizes.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webkit import make_app

#: Examples per test and per database: enough to find a class of bug, quick.
MAX_EXAMPLES = 40
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
#: Text that looks like the form's syntax, mixed with anything.
LINE = st.lists(
    st.one_of(
        st.text(max_size=12),
        st.sampled_from(
            ["(after ", ")", "<- ", ", ", " :: ", "\n", "#", "\x00", "²", "٣", "9" * 30]
        ),
        st.integers(min_value=-5, max_value=2**70).map(str),
        # Whole lines that depend on tasks written in other digits than 0-9
        st.sampled_from(["A (after \u00b2)\n", "B (after 1, \u0663)\n", "C <- \u00b9\n"]),
    ),
    max_size=12,
).map("".join)


@pytest.fixture
def client(database_url: str) -> Any:
    return make_app(database_url, PROPAGATE_EXCEPTIONS=False).test_client()


def token(client: Any, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match
    return match.group(1)


def test_the_project_form_answers_every_typed_input_with_a_page_or_a_form_error(client):
    csrf = token(client, "/projects/new")

    @FUZZ
    @given(name=LINE, description=LINE, tasks=LINE)
    def post(name: str, description: str, tasks: str) -> None:
        data = {"csrf_token": csrf, "name": name, "description": description, "tasks": tasks}
        response = client.post("/projects", data=data, content_type="multipart/form-data")
        assert response.status_code in (303, 422), response.get_data(as_text=True)[:300]

    post()


def test_the_project_form_answers_every_uploaded_file_with_a_page_or_a_form_error(client):
    csrf = token(client, "/projects/new")
    documents = st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner),
            max_leaves=20,
        ).map(lambda value: repr(value).replace("'", '"').encode("utf-8", "surrogatepass")),
    )

    @FUZZ
    @given(content=documents)
    def post(content: bytes) -> None:
        upload = (io.BytesIO(content), "project.json")
        data = {"csrf_token": csrf, "name": "", "file": upload}
        response = client.post("/projects", data=data, content_type="multipart/form-data")
        assert response.status_code in (303, 422), response.get_data(as_text=True)[:300]

    post()


def test_the_generate_form_answers_every_batch_size_with_a_page_or_a_form_error(client):
    created = client.post("/api/projects", json={"name": "P", "tasks": [{"title": "A"}]})
    project_id = created.json["id"]
    csrf = token(client, f"/projects/{project_id}")

    @FUZZ
    @given(size=LINE)
    def post(size: str) -> None:
        data = {"csrf_token": csrf, "batch_size": size, "force": "1"}
        response = client.post(f"/projects/{project_id}/jobs", data=data)
        assert response.status_code in (303, 422), response.get_data(as_text=True)[:300]

    post()
