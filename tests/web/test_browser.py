"""Browser tests in real headless Chromium (Debian's), driven by Playwright for Python.

The app is served by a real HTTP server in a thread, jobs run on an embedded worker.
Screenshots of the job page (mid-run and finished) go to ``tests/artifacts/``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from webkit import LiveServer

from db import jobs

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
#: Eight tasks: a pipeline (1 -> 2 -> 3 -> 4), independent tasks, and a final one.
TASKS = """Set up the repository
Write the data model (after 1)
Write the API :: REST with tests (after 2)
Write the UI <- 3
Write the docs
Add CI
Add linting
Deploy (after 4, 5, 6, 7)
"""


def create_project(page, base_url: str, name: str, tasks: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base_url}/projects/new")
    page.fill("input[name=name]", name)
    page.fill("textarea[name=tasks]", tasks)
    page.click("#project-form button[type=submit]")


@pytest.mark.both_strategies
def test_a_job_started_from_the_form_is_followed_live_to_100_percent(
    page, live_factory: Callable[..., LiveServer], sqlite_url: str
):
    ARTIFACTS.mkdir(exist_ok=True)
    live = live_factory(sqlite_url, threads=2, GENERATOR_LATENCY_MS=400)

    # Given a project created through the form
    create_project(page, live.base_url, "Browser project", TASKS)
    page.wait_for_selector("#project-name")
    assert page.inner_text("#project-name") == "Browser project"
    assert page.locator("#tasks tbody tr").count() == 8

    # When a job is started from the project page
    api_requests: list[str] = []
    page.on("request", lambda r: api_requests.append(r.url) if "/api/" in r.url else None)
    page.fill("input[name=batch_size]", "3")
    page.click("#generate-form button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    page.evaluate("window.__sameDocument = true")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    # Then the page moves on its own: mid-run...
    page.wait_for_function(
        "() => { const p = parseInt(document.getElementById('overall-percent').textContent);"
        " return p > 0 && p < 100; }"
    )
    page.screenshot(path=str(ARTIFACTS / "job-mid-run.png"), full_page=True)
    assert page.inner_text("#now").startswith("Now: batch")

    # ...to 100 %, every batch completed, the job succeeded, without a reload or polling
    page.wait_for_function(
        "() => document.getElementById('job-status').textContent === 'succeeded'", timeout=90_000
    )
    assert page.inner_text("#overall-percent") == "100%"
    assert page.eval_on_selector("#overall", "el => el.value === el.max")
    states = page.locator(".batch-state").all_inner_texts()
    assert states and all(state == "completed" for state in states)
    assert page.locator(".run-state").all_inner_texts() == ["succeeded"] * 8
    assert page.inner_text("#count-succeeded") == "8"
    assert page.inner_text("#eta") == "done"
    # with the job's AI tokens and cost, moved live by its events (the page opened at 0)
    stored = jobs.snapshot(int(page.url.rsplit("/", 1)[1]))
    assert stored["prompt_tokens"] > 0 and stored["completion_tokens"] > 0
    assert page.inner_text("#count-prompt-tokens") == str(stored["prompt_tokens"])
    assert page.inner_text("#count-completion-tokens") == str(stored["completion_tokens"])
    assert page.inner_text("#ai-cost") == f"{stored['cost']:.4f}"
    page.wait_for_function("() => document.getElementById('job').dataset.live === 'ended'")
    page.screenshot(path=str(ARTIFACTS / "job-finished.png"), full_page=True)
    assert page.evaluate("window.__sameDocument") is True
    assert navigations == []
    assert len(api_requests) == 1 and api_requests[0].endswith("/events")
    assert page.console_errors == []

    # And a rendered guide opens from the job page
    page.click("tr[data-run] .title a >> nth=0")
    page.wait_for_selector("#guide h1")
    assert page.inner_text("#task-title") == "Set up the repository"
    assert "Set up the repository" in page.inner_text("#guide h1")
    page.screenshot(path=str(ARTIFACTS / "guide.png"), full_page=True)


def test_a_cycle_comes_back_as_a_form_error(
    page, live_factory: Callable[..., LiveServer], sqlite_url: str
):
    live = live_factory(sqlite_url, worker=False)
    create_project(page, live.base_url, "Cyclic", "First (after 2)\nSecond (after 1)\n")
    error = page.wait_for_selector("#form-error")
    assert "cycle" in error.inner_text()
    assert page.input_value("input[name=name]") == "Cyclic"
    assert "Second (after 1)" in page.input_value("textarea[name=tasks]")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "form-error.png"), full_page=True)
    page.goto(f"{live.base_url}/")
    assert "No project yet" in page.inner_text("main")


@pytest.mark.both_strategies
def test_failed_and_skipped_tasks_show_live_with_their_errors(
    page, live_factory: Callable[..., LiveServer], sqlite_url: str
):
    ARTIFACTS.mkdir(exist_ok=True)
    live = live_factory(sqlite_url, GENERATOR_LATENCY_MS=100)
    tasks = "Plan\nBuild [fail] (after 1)\nShip (after 2)\nWrite notes\n"
    create_project(page, live.base_url, "Failing project", tasks)
    page.wait_for_selector("#generate-form")
    page.click("#generate-form button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/\d+$"))

    page.wait_for_function(
        "() => document.getElementById('job-status').textContent === 'partial'", timeout=90_000
    )
    states = dict(
        zip(
            page.locator("tr[data-run] .title").all_inner_texts(),
            page.locator("tr[data-run] .run-state").all_inner_texts(),
            strict=True,
        )
    )
    assert states == {
        "Plan": "succeeded",
        "Build [fail]": "failed",
        "Ship": "skipped",
        "Write notes": "succeeded",
    }
    errors = page.locator("tr[data-run] .run-error").all_inner_texts()
    assert any("scripted failure" in error for error in errors)
    assert (page.inner_text("#count-failed"), page.inner_text("#count-skipped")) == ("1", "1")
    assert page.inner_text("#overall-percent") == "100%"
    page.screenshot(path=str(ARTIFACTS / "job-partial.png"), full_page=True)


@pytest.mark.both_strategies
def test_a_cancel_shows_live_with_every_unfinished_task_cancelled(
    page, live_factory: Callable[..., LiveServer], sqlite_url: str
):
    from db import control

    live = live_factory(sqlite_url, threads=1, GENERATOR_LATENCY_MS=500)
    create_project(page, live.base_url, "Cancelled project", "One\nTwo\nThree\nFour\nFive\n")
    page.wait_for_selector("#generate-form")
    page.fill("input[name=batch_size]", "2")
    page.click("#generate-form button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    page.wait_for_function("() => document.getElementById('job').dataset.live === 'open'")
    job_id = int(page.url.rsplit("/", 1)[1])

    # When the job is cancelled elsewhere (the CLI, the API) while it runs
    assert control.cancel_job(job_id)

    # Then the page shows it, re-reads the job once, and every unfinished task is cancelled
    page.wait_for_function(
        "() => document.getElementById('job-status').textContent === 'cancelled'"
        " && document.getElementById('job').dataset.live === 'ended'"
    )
    states = page.locator(".run-state").all_inner_texts()
    assert "cancelled" in states
    assert set(states) <= {"succeeded", "cancelled"}
    # And the bar shows what was done and what was cancelled, not a full bar
    done, cancelled = states.count("succeeded"), states.count("cancelled")
    assert page.inner_text("#overall-text") == f"{done} of 5 tasks done, {cancelled} cancelled"
    assert page.eval_on_selector("#overall", "el => [el.value, el.max]") == [done, 5]
    assert page.inner_text("#overall-percent") == f"{100 * done // 5}%"
    assert page.locator(".overall.has-cancelled").count() == 1
    assert page.console_errors == []
