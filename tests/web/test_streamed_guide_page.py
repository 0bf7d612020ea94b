"""A guide shown while it is written, in real Chromium: the job page and the guide page.

The embedded worker runs the offline generator slowly (it streams its guide word by
word over its latency); the pages follow the job's event stream.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from webkit import LiveServer
from workerkit import make_project

from db import listen
from workers import dispatch

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
#: Text of the guide being written on the job page.
LIVE_TEXT = "document.querySelector('pre.guide-live')?.textContent.length ?? 0"
#: A phone's viewport, and whether the document is wider than the window (as in test_phone).
PHONE = {"width": 390, "height": 844}
WIDTHS = "() => [document.documentElement.scrollWidth, window.innerWidth]"
#: A task title with markup, which the page must show as text.
TITLE = "Write the <b>recipe</b> API"


def start_job(project_id: int) -> int:
    return dispatch.submit(project_id, batch_size=5, max_batch_size=50, max_tasks=100)


def wait_for_more_text(page, than: int, selector: str = "pre.guide-live") -> int:  # type: ignore[no-untyped-def]
    """Wait until the guide being written is longer than ``than``; return its length."""
    length = f"document.querySelector({selector!r})?.textContent.length ?? 0"
    page.wait_for_function(f"() => ({length}) > {than}")
    return int(page.evaluate(f"() => {length}"))


def test_a_running_guide_grows_on_its_pages_survives_a_reload_and_becomes_the_guide(
    page, live_factory: Callable[..., LiveServer], sqlite_url: str
):
    # Given a served app whose worker writes a guide in about 4 s
    live = live_factory(sqlite_url, threads=1, GENERATOR="offline", GENERATOR_LATENCY_MS=4000)
    listen.get_hub()  # this process's hub hears the guide from its first word
    # (an unbroken 300-character word in it must wrap on a phone)
    description = "Endpoints, tests and docs. " * 4 + "x" * 300 + " and more docs." * 4
    task = {"key": "api", "title": TITLE, "description": description}
    project_id = make_project(task, name="Streaming")

    # When its job runs and the job page is open
    job_id = start_job(project_id)
    page.goto(f"{live.base_url}/jobs/{job_id}")

    # Then the running task's guide shows under its row and grows
    first = wait_for_more_text(page, 10)
    grown = wait_for_more_text(page, first)
    assert page.locator("tr[data-run] .run-state").inner_text() == "running"
    preview = page.locator("pre.guide-live")
    assert preview.inner_text().startswith(f"# Hands-on: {TITLE}")  # as text, not markup
    assert preview.locator("b").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "job-guide-streaming.png"), full_page=True)

    # And a reload mid-guide (on a phone) shows the text so far at once, then the rest,
    # wrapped to the screen's width
    page.set_viewport_size(PHONE)
    page.reload()
    page.wait_for_selector("pre.guide-live")
    assert page.evaluate(f"() => {LIVE_TEXT}") >= grown
    grown = wait_for_more_text(page, max(grown, 400))  # past the long word
    assert page.evaluate(WIDTHS) == [PHONE["width"]] * 2
    page.screenshot(path=str(ARTIFACTS / "phone-job-guide-streaming.png"), full_page=True)

    # And once the guide is stored, the preview gives way to the row's link to it
    page.wait_for_selector("tr[data-run] .title a", timeout=30_000)
    assert page.locator("pre.guide-live").count() == 0
    assert page.locator("tr[data-run] .run-state").inner_text() == "succeeded"
    page.click("tr[data-run] .title a")
    page.wait_for_selector("#guide h1")
    assert "Hands-on: Write the recipe API" in page.inner_text("#guide h1")
    assert page.locator("#live-guide").count() == 0
    task_url = page.url

    # When the task runs again (a new job) and its guide page is open
    start_job(project_id)
    page.goto(task_url)

    # Then that page shows the new guide growing, then reloads to show it stored
    page.wait_for_selector("#live-guide")
    wait_for_more_text(page, wait_for_more_text(page, 10, "#guide-live"), "#guide-live")
    page.wait_for_function("() => !document.getElementById('live-guide')", timeout=30_000)
    assert "Hands-on: Write the recipe API" in page.inner_text("#guide h1")
    assert page.console_errors == []
