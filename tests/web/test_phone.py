"""Every page on a 390 px phone in real Chromium: no side scroll, no overlap, long text wraps.

Pages are shown with the 62-task sample project and with a project whose name, keys,
titles and description are unbroken words as long as the limits allow (200, 100, 300
and 1,000 characters). Screenshots go to ``tests/artifacts/phone-*.png``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jobwatch import wait_for_job
from webkit import LiveServer
from workerkit import submit

from db import jobs, projects, starts
from samples import load_sample

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PHONE = {"width": 390, "height": 844}
#: Whether the document is wider than the window (a side scroll), as [scrollWidth, innerWidth].
WIDTHS = "() => [document.documentElement.scrollWidth, window.innerWidth]"
#: Pairs of elements in one run row or batch heading whose boxes intersect.
OVERLAPS = """() => {
  const hit = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5
    && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
  const found = [];
  document.querySelectorAll("tr[data-run], .batch h2, .summary").forEach(row => {
    const parts = [...row.querySelectorAll(".key, .title, .state, .run-error, .mode")]
      .filter(el => el.getClientRects().length);
    parts.forEach((a, i) => parts.slice(i + 1).forEach(b => {
      if (!a.contains(b) && !b.contains(a)
          && hit(a.getBoundingClientRect(), b.getBoundingClientRect())) {
        found.push(a.className + " / " + b.className);
      }
    }));
  });
  return found;
}"""


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    """A browser page 390 px wide, collecting console errors."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.console_errors = []
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    yield page
    context.close()


def long_project() -> int:
    """A project of unbroken words at the length limits; its job fails one task."""
    keys = [c * 100 for c in "ABCD"]
    tasks = [
        {"key": keys[0], "title": "T" * 300, "description": "D" * 1000},
        {"key": keys[1], "title": "F[fail]" + "F" * 293, "depends_on": [keys[0]]},
        {"key": keys[2], "title": "S" * 300, "depends_on": [keys[1]]},
        {"key": keys[3], "title": "W" * 300, "depends_on": [keys[0], keys[1], keys[2]]},
    ]
    document = {"name": "N" * 200, "description": "P" * 1000, "tasks": tasks}
    return projects.create_project(projects.parse_project(document, max_tasks=100))


def sample_project() -> int:
    return projects.create_project(projects.parse_project(load_sample(), max_tasks=1000))


def check(page: Any, base_url: str, path: str, shot: str | None = None) -> None:
    """Open ``path`` at phone width: it must not scroll sideways nor overlap its parts."""
    response = page.goto(base_url + path)
    assert response.status < 500, path
    page.wait_for_load_state("load")
    if page.locator("#job").count():
        page.wait_for_function("() => document.getElementById('job').dataset.live === 'ended'")
    scroll_width, inner_width = page.evaluate(WIDTHS)
    assert scroll_width <= inner_width, f"{path} is {scroll_width} px wide, {inner_width} px shown"
    assert page.evaluate(OVERLAPS) == [], path
    if shot:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"phone-{shot}.png"), full_page=True)
        page.screenshot(path=str(ARTIFACTS / f"phone-{shot}-top.png"))


def test_every_page_fits_a_phone_with_the_sample_and_with_long_unbroken_text(
    phone, live_factory: Callable[..., LiveServer], sqlite_url: str
):
    # Given the sample project and the long-text project, each with a finished job
    live = live_factory(sqlite_url, threads=2, MAX_RETRIES=0)
    sample, long = sample_project(), long_project()
    sample_job, _ = wait_for_job(submit(sample, 5), timeout=120)
    long_job, _ = wait_for_job(submit(long, 2))
    assert (sample_job["status"], long_job["status"]) == ("succeeded", "partial")
    sample_guide = sample_job["batches"][0]["runs"][0]["task_id"]
    long_guide = long_job["batches"][0]["runs"][0]["task_id"]

    # Then every page fits 390 px, with both
    base = live.base_url
    check(phone, base, "/", "home")
    check(phone, base, "/jobs", "jobs")
    check(phone, base, "/projects/new", "new-project")
    check(phone, base, f"/projects/{sample}", "project")
    check(phone, base, f"/projects/{long}", "project-long")
    check(phone, base, f"/jobs/{sample_job['id']}", "job")
    check(phone, base, f"/jobs/{long_job['id']}", "job-long")
    check(phone, base, f"/tasks/{sample_guide}/guide", "guide")
    check(phone, base, f"/tasks/{long_guide}/guide", "guide-long")

    # And the project form sent back with an error about a long unbroken line fits too
    phone.goto(f"{base}/projects/new")
    phone.fill("input[name=name]", "N" * 200)
    phone.fill("textarea[name=tasks]", "X" * 300 + " (after 9)\n")
    phone.click("#project-form button[type=submit]")
    phone.wait_for_selector("#form-error")
    assert phone.evaluate(WIDTHS)[0] <= PHONE["width"]
    assert phone.console_errors == []


@pytest.mark.both_strategies
def test_a_running_job_page_fits_a_phone_while_it_moves(
    phone, live_factory: Callable[..., LiveServer], sqlite_url: str
):
    # Given the page of the long-text project's running job
    live = live_factory(sqlite_url, worker=False)
    job_id = submit(long_project(), 2)
    phone.goto(f"{live.base_url}/jobs/{job_id}")
    phone.wait_for_function("() => document.getElementById('job').dataset.live === 'open'")

    # When its first task starts (a 300-character title on the "Now:" line)
    first = jobs.snapshot(job_id)["batches"][0]["runs"][0]["id"]
    starts.start_run(first)
    phone.wait_for_function("() => document.getElementById('now').textContent.includes('TTT')")

    # Then the page fits, mid-run
    assert phone.evaluate(WIDTHS)[0] <= PHONE["width"]
    assert phone.evaluate(OVERLAPS) == []
    ARTIFACTS.mkdir(exist_ok=True)
    phone.screenshot(path=str(ARTIFACTS / "phone-job-running.png"), full_page=True)
    phone.locator("section.batch").first.screenshot(path=str(ARTIFACTS / "phone-batch.png"))
