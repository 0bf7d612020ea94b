"""Cancel a job and rerun its failed tasks: the API, the job page's forms, the browser.

(Not ``test_control.py``: ``tests/workers/test_control.py`` has that basename, and test
modules without packages must have unique basenames to be collected together.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jobwatch import wait_for_job
from webkit import LiveServer, make_app
from workerkit import make_project, start_embedded, submit

from db import jobs

#: A job of three tasks where only the middle one fails (at its first attempt).
FLAKY_TASKS = ("a", {"key": "f", "title": "[flaky] F"}, "b")
BEARER = {"Authorization": "Bearer s3cret"}


def running_job() -> int:
    """A job that stays running: no worker consumes its messages."""
    return submit(make_project("a", "b"))


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]


def csrf(client: FlaskClient, path: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match, "the page has no CSRF token"
    return match.group(1)


def shown_forms(page: str) -> set[str]:
    """Return the ids of the action forms the job page shows (not ``hidden``)."""
    forms = re.findall(r'<form[^>]*\bid="(cancel-form|retry-form)"([^>]*)>', page)
    assert len(forms) == 2, "the job page lacks its action forms"
    return {form_id for form_id, rest in forms if " hidden" not in rest}


def reruns(job: dict, after_batches: int) -> list[str]:
    """Keys of the tasks in the batches after the first ``after_batches``."""
    return [run["key"] for batch in job["batches"][after_batches:] for run in batch["runs"]]


@pytest.fixture
def worker_app(sqlite_url: str, tmp_path: Path, monkeypatch) -> Iterator[Flask]:
    """The app with an embedded worker; no retries, so a ``[flaky]`` task fails its job."""
    monkeypatch.setenv("SCRIPTED_STATE_DIR", str(tmp_path))
    app = make_app(sqlite_url, MAX_RETRIES=0)
    # After make_app, which configures its own broker: the worker's broker wins.
    embedded = start_embedded(sqlite_url, MAX_RETRIES=0)
    yield app
    embedded.worker.stop()
    embedded.broker.close()


def partial_job() -> dict:
    """Run a job whose ``[flaky]`` task fails; return its finished snapshot."""
    job, _ = wait_for_job(submit(make_project(*FLAKY_TASKS)))
    assert (job["status"], job["failed_tasks"], job["succeeded_tasks"]) == ("partial", 1, 2)
    return job


# --- API: cancel ---------------------------------------------------------------------


@pytest.mark.both_strategies
def test_api_cancel_ends_a_running_job_once_and_is_idempotent(client):
    # Given a running job
    job_id = running_job()

    # When it is cancelled, with no body at all
    response = client.post(f"/api/jobs/{job_id}/cancel")

    # Then it ends cancelled, every unfinished task with it
    assert response.status_code == 200
    assert response.json == {"job_id": job_id, "cancelled": True, "status": "cancelled"}
    job = jobs.snapshot(job_id)
    assert job["status"] == "cancelled" and job["cancelled_tasks"] == 2

    # And cancelling again answers 200 with cancelled false, and changes nothing
    again = client.post(f"/api/jobs/{job_id}/cancel", json={})
    assert again.status_code == 200
    assert again.json == {"job_id": job_id, "cancelled": False, "status": "cancelled"}
    assert jobs.snapshot(job_id)["event_seq"] == job["event_seq"]


def test_api_cancel_of_a_finished_job_reports_its_status(worker_app):
    job = partial_job()
    response = worker_app.test_client().post(f"/api/jobs/{job['id']}/cancel")
    assert response.json == {"job_id": job["id"], "cancelled": False, "status": "partial"}


def test_api_cancel_and_retry_of_an_unknown_job_are_404(client):
    assert_error(client.post("/api/jobs/999/cancel"), 404, "not_found")
    assert_error(client.post("/api/jobs/999/retry"), 404, "not_found")


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_api_cancel_and_retry_take_no_body_or_a_json_object_but_never_a_form(client, action):
    job_id = running_job()
    url = f"/api/jobs/{job_id}/{action}"
    # An empty form post (what a cross-site HTML form sends) and other bodies are refused
    assert_error(
        client.post(url, data="", content_type="application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    )
    assert_error(
        client.post(url, data="x", content_type="text/plain"), 415, "unsupported_media_type"
    )
    assert_error(client.post(url, data="{", content_type="application/json"), 400, "invalid_json")
    assert_error(client.post(url, json=[1]), 422, "invalid")
    # So is a body-less request a browser says comes from another site's page
    cross_site = {"Sec-Fetch-Site": "cross-site"}
    assert_error(client.post(url, headers=cross_site), 403, "forbidden")
    assert jobs.snapshot(job_id)["status"] == "running"
    # No body, an empty JSON body or a JSON object are accepted
    accepted = 200 if action == "cancel" else 409
    assert client.post(url).status_code == accepted
    assert client.post(url, data="", content_type="application/json").status_code in {200, 409}
    assert client.post(url, json={"reason": "ignored"}).status_code in {200, 409}


# --- API: retry ----------------------------------------------------------------------


@pytest.mark.both_strategies
def test_api_retry_reruns_only_the_failed_task_and_the_job_succeeds(worker_app):
    client = worker_app.test_client()
    # Given a finished partial job: its [flaky] task failed, the two others succeeded
    first = partial_job()

    # When its failed tasks are retried
    response = client.post(f"/api/jobs/{first['id']}/retry")

    # Then 202 says how much runs again, and Location is the job
    assert response.status_code == 202
    assert response.json == {"job_id": first["id"], "tasks": 1, "batches": 1}
    assert response.headers["Location"] == f"/api/jobs/{first['id']}"

    # And the job ends succeeded, after rerunning the failed task only
    job, events = wait_for_job(first["id"], after_seq=first["event_seq"])
    assert job["status"] == "succeeded" and job["succeeded_tasks"] == 3
    assert reruns(job, first["total_batches"]) == ["f"]
    assert [e["payload"]["task"] for e in events if e["type"] == "task_started"] == [
        next(r["task_id"] for b in job["batches"] for r in b["runs"] if r["key"] == "f")
    ]
    attempts = {r["key"]: r["attempts"] for b in job["batches"] for r in b["runs"]}
    assert (attempts["a"], attempts["b"]) == (1, 1)

    # And a succeeded job has nothing to retry: 409
    assert_error(client.post(f"/api/jobs/{first['id']}/retry"), 409, "not_retryable")


def test_api_retry_of_a_running_or_cancelled_job_is_409(client):
    job_id = running_job()
    error = client.post(f"/api/jobs/{job_id}/retry")
    assert_error(error, 409, "not_retryable")
    assert "is running" in error.json["error"]["message"]
    client.post(f"/api/jobs/{job_id}/cancel")
    assert_error(client.post(f"/api/jobs/{job_id}/retry"), 409, "not_retryable")


def test_api_cancel_and_retry_need_the_bearer_token_when_one_is_set(sqlite_url):
    client = make_app(sqlite_url, API_TOKEN="s3cret").test_client()
    job_id = running_job()
    # Without, or with a wrong token: 401, and nothing changes
    for action in ("cancel", "retry"):
        response = client.post(f"/api/jobs/{job_id}/{action}")
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer nope"}
        assert_error(
            client.post(f"/api/jobs/{job_id}/{action}", headers=wrong), 401, "unauthorized"
        )
    assert jobs.snapshot(job_id)["status"] == "running"
    # With the token: accepted (and still checked before the job is looked up)
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=BEARER).json["cancelled"] is True
    assert_error(client.post("/api/jobs/999/cancel"), 401, "unauthorized")


# --- pages ---------------------------------------------------------------------------


def test_the_job_page_shows_cancel_while_running_and_the_form_cancels(client):
    # Given a running job's page: "Cancel job" shown, "Rerun failed tasks" hidden
    job_id = running_job()
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert shown_forms(page) == {"cancel-form"}
    assert f'action="/jobs/{job_id}/cancel"' in page and "Cancel job" in page

    # When its form is posted with the CSRF token
    token = csrf(client, f"/jobs/{job_id}")
    response = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})

    # Then it goes back to the job page, which says so and shows no button any more
    assert response.status_code == 303
    assert response.headers["Location"] == f"/jobs/{job_id}"
    assert jobs.snapshot(job_id)["status"] == "cancelled"
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert re.search(r'id="notice"[^>]*>Job cancelled\.<', page)
    assert shown_forms(page) == set()

    # And again: the same page, saying the job had already ended; the notice is shown once
    client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert "already ended" in client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "already ended" not in client.get(f"/jobs/{job_id}").get_data(as_text=True)


@pytest.mark.both_strategies
def test_the_job_page_shows_rerun_when_partial_and_the_form_reruns(worker_app):
    client = worker_app.test_client()
    # Given a partial job's page: "Rerun failed tasks" shown, "Cancel job" hidden
    first = partial_job()
    url = f"/jobs/{first['id']}"
    assert shown_forms(client.get(url).get_data(as_text=True)) == {"retry-form"}

    # When its form is posted with the CSRF token
    response = client.post(f"{url}/retry", data={"csrf_token": csrf(client, url)})

    # Then it goes back to the job page, and only the failed task runs again
    assert response.status_code == 303 and response.headers["Location"] == url
    notice = client.get(url).get_data(as_text=True)
    assert "Rerunning 1 task(s)." in notice
    job, _ = wait_for_job(first["id"], after_seq=first["event_seq"])
    assert job["status"] == "succeeded"
    assert reruns(job, first["total_batches"]) == ["f"]
    page = client.get(url).get_data(as_text=True)
    assert shown_forms(page) == set()

    # And a second rerun has nothing to do, which the page says
    client.post(f"{url}/retry", data={"csrf_token": csrf(client, url)})
    assert "Nothing to rerun" in client.get(url).get_data(as_text=True)


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_the_action_forms_need_the_csrf_token(client, action):
    job_id = running_job()
    missing = client.post(f"/jobs/{job_id}/{action}")
    assert missing.status_code == 400
    assert "reload the page" in missing.get_data(as_text=True)
    wrong = client.post(f"/jobs/{job_id}/{action}", data={"csrf_token": "nope"})
    assert wrong.status_code == 400
    assert jobs.snapshot(job_id)["status"] == "running"


def test_the_action_forms_of_an_unknown_job_are_404(client):
    token = csrf(client, "/projects/new")
    for action in ("cancel", "retry"):
        response = client.post(f"/jobs/999/{action}", data={"csrf_token": token})
        assert response.status_code == 404


# --- browser -------------------------------------------------------------------------


def status_is(status: str) -> str:
    return f"() => document.getElementById('job-status').textContent === '{status}'"


@pytest.mark.both_strategies
def test_cancel_job_in_the_browser_shows_cancelled_live(
    page, live_factory: Callable[..., LiveServer], sqlite_url: str
):
    # Given the page of a slow running job, following it live
    live = live_factory(sqlite_url, threads=1, GENERATOR_LATENCY_MS=500)
    job_id = submit(make_project("one", "two", "three", "four", "five"), batch_size=2)
    page.goto(f"{live.base_url}/jobs/{job_id}")
    page.wait_for_function("() => document.getElementById('job').dataset.live === 'open'")
    page.evaluate("window.__sameDocument = true")
    assert page.is_hidden("#retry-form")

    # When "Cancel job" is clicked and confirmed
    page.click("#cancel-form summary")
    page.click("#cancel-yes")

    # Then the status becomes cancelled without a reload, and no button is left
    page.wait_for_function(
        status_is("cancelled") + " && document.getElementById('job').dataset.live === 'ended'"
    )
    assert jobs.snapshot(job_id)["status"] == "cancelled"
    # The notice comes with the POST's answer, which may arrive after the stream's event
    page.wait_for_function("() => document.getElementById('notice').textContent !== ''")
    assert page.inner_text("#notice") == "Job cancelled."
    assert page.is_hidden("#cancel-form") and page.is_hidden("#retry-form")
    assert set(page.locator(".run-state").all_inner_texts()) <= {"succeeded", "cancelled"}
    assert page.evaluate("window.__sameDocument") is True
    assert page.console_errors == []


@pytest.mark.both_strategies
def test_rerun_failed_tasks_in_the_browser_follows_the_rerun_live(
    page, live_factory: Callable[..., LiveServer], sqlite_url: str, tmp_path, monkeypatch
):
    # Given the page of a job that ended partial (its [flaky] task failed)
    monkeypatch.setenv("SCRIPTED_STATE_DIR", str(tmp_path))
    live = live_factory(sqlite_url, MAX_RETRIES=0, GENERATOR_LATENCY_MS=100)
    first = partial_job()
    page.goto(f"{live.base_url}/jobs/{first['id']}")
    page.wait_for_function(status_is("partial"))
    page.evaluate("window.__sameDocument = true")
    assert page.is_hidden("#cancel-form")

    # When "Rerun failed tasks" is clicked
    page.click("#retry-form button")

    # Then the page follows the rerun live to success, without a reload
    page.wait_for_function(status_is("succeeded"), timeout=60_000)
    page.wait_for_function("() => document.getElementById('job').dataset.live === 'ended'")
    assert page.inner_text("#notice") == "Rerunning 1 task(s)."
    assert page.locator(".run-state").all_inner_texts() == ["succeeded"] * 3
    assert page.locator("section.batch").count() == first["total_batches"] + 1
    assert page.is_hidden("#cancel-form") and page.is_hidden("#retry-form")
    assert page.evaluate("window.__sameDocument") is True
    assert page.console_errors == []
