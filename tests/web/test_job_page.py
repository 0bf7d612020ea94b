"""The job page in real Chromium: contrast, names, headers, announcements, the cancel
question, counters through a rerun, and user text that cannot reorder the page around it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from webkit import LiveServer
from workerkit import make_project, submit

from db import events, jobs, session_scope
from db.models import Task
from workers import dispatch

#: Every state a chip shows (jobs, batches, runs).
STATES = (
    "queued", "pending", "running", "succeeded", "completed", "partial", "failed", "skipped",
    "cancelled",
)  # fmt: skip
#: Contrast ratios (WCAG 2) of chips and other coloured text, from their computed styles.
CONTRASTS = """(states) => {
  const rgb = (value) => value.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const luminance = (value) => {
    const [r, g, b] = rgb(value).map(c => {
      c /= 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const bg = getComputedStyle(el).backgroundColor;
      if (!/rgba\\(.*, 0\\)$/.test(bg) && bg !== "transparent") { return bg; }
    }
    return "rgb(255, 255, 255)";
  };
  const ratio = (el) => {
    const [a, b] = [luminance(getComputedStyle(el).color), luminance(background(el))];
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  };
  const out = {};
  const host = document.querySelector("main");
  states.forEach(state => {
    const chip = document.createElement("span");
    chip.className = "state state-" + state;
    chip.textContent = state;
    host.append(chip);
    out["chip " + state] = ratio(chip);
  });
  const table = document.createElement("table");
  table.className = "runs";
  host.append(table);
  states.forEach(state => {
    const row = table.insertRow();
    row.dataset.status = state;
    const note = row.insertCell();
    note.className = "run-error";
    note.textContent = "a note";
    out["note " + state] = ratio(note);
  });
  [".hint", ".runs th", ".counts dt", "a", "button", ".now"].forEach(sel => {
    const el = document.querySelector(sel);
    if (el) { out[sel] = ratio(el); }
  });
  return out;
}"""
#: What the job page shows, except the clock: to compare a live page with a reloaded one.
VIEW = """() => {
  const text = (el) => el ? el.textContent.replace(/\\s+/g, " ").trim() : null;
  return {
    status: text(document.getElementById("job-status")),
    overall: text(document.getElementById("overall-text")),
    percent: text(document.getElementById("overall-percent")),
    counts: [...document.querySelectorAll(".counts dd:not(#elapsed):not(#eta)")].map(text),
    batches: [...document.querySelectorAll("section.batch")].map(s => [
      text(s.querySelector("h2")), text(s.querySelector(".batch-count")),
      s.querySelector(".batch-bar").value, s.querySelector(".batch-bar").max,
      text(s.querySelector(".batch-note"))]),
    runs: [...document.querySelectorAll("tr[data-run]")].map(r => [
      text(r.querySelector(".title")), text(r.querySelector(".run-state")),
      text(r.querySelector(".run-error"))]),
  };
}"""
#: Left edges of each character of ``word`` in the first text node after ``after``'s end.
POSITIONS = """([selector, word]) => {
  const anchor = document.querySelector(selector);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  walker.currentNode = anchor;
  let node;
  while ((node = walker.nextNode()) && (anchor.contains(node) || !node.data.includes(word))) {}
  const start = node.data.indexOf(word);
  return [...word].map((_, i) => {
    const range = document.createRange();
    range.setStart(node, start + i);
    range.setEnd(node, start + i + 1);
    return range.getBoundingClientRect().left;
  });
}"""
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
LIVE_OPEN = "() => document.getElementById('job').dataset.live === 'open'"
LIVE_ENDED = "() => document.getElementById('job').dataset.live === 'ended'"


def status_is(status: str) -> str:
    return f"() => document.getElementById('job-status').textContent === '{status}'"


def test_every_chip_and_coloured_text_meets_wcag_aa_contrast(
    page, live_factory: Callable[..., LiveServer], sqlite_url: str
):
    live = live_factory(sqlite_url, worker=False)
    job_id = submit(make_project("a", "b"))
    page.goto(f"{live.base_url}/jobs/{job_id}")
    ratios = page.evaluate(CONTRASTS, list(STATES))
    assert {f"{kind} {state}" for state in STATES for kind in ("chip", "note")} <= ratios.keys()
    low = {name: round(ratio, 2) for name, ratio in ratios.items() if ratio < 4.5}
    assert low == {}, f"below 4.5:1: {low}"


def test_bars_have_names_tables_have_headers_and_status_changes_are_announced(
    page, live_factory: Callable[..., LiveServer], sqlite_url: str
):
    # Given the page of a job, open while it runs: a and b released, c not yet
    live = live_factory(sqlite_url, worker=False)
    job_id = submit(make_project("a", "b", "c"), batch_size=2)
    page.goto(f"{live.base_url}/jobs/{job_id}")
    page.wait_for_function(LIVE_OPEN)

    # Then every progress bar has an accessible name, every run table a header row
    bars = page.get_by_role("progressbar")
    assert bars.count() == 1 + page.locator("section.batch").count() == 2
    named = page.get_by_role("progressbar", name=re.compile(r"^(Job progress|Batch \d+)$"))
    assert named.count() == bars.count()
    headers = page.eval_on_selector_all(
        "table.runs", "ts => ts.map(t => [...t.querySelectorAll('thead th')].map(h => h.scope))"
    )
    assert headers == [["col"] * 4] * 2
    assert page.get_by_role("columnheader", name="Task").count() == 2

    # And a polite live region announces the status change when the job is cancelled
    region = page.locator("#announce")
    assert region.get_attribute("aria-live") == "polite" and region.inner_text() == ""
    assert dispatch.cancel(job_id)
    page.wait_for_function(LIVE_ENDED)
    assert region.inner_text() == f"Job {job_id} cancelled: 0 of 3 tasks done, 3 cancelled."


def test_cancel_asks_first_and_keeps_focus_sensibly(
    page, live_factory: Callable[..., LiveServer], sqlite_url: str
):
    live = live_factory(sqlite_url, worker=False)
    job_id = submit(make_project("a", "b"))
    page.goto(f"{live.base_url}/jobs/{job_id}")
    page.wait_for_function(LIVE_OPEN)
    focused = "() => document.activeElement.id || document.activeElement.tagName"

    # When "Cancel job…" is pressed, a question opens; focus is on the harmless answer
    assert not page.is_visible("#cancel-yes")
    page.focus("#cancel-confirm summary")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => ({focused})() === 'cancel-no'")
    assert page.is_visible("#cancel-yes")
    assert "not finished will not run" in page.inner_text("#cancel-question")
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#job-actions").screenshot(path=str(ARTIFACTS / "cancel-question.png"))

    # Escape, or "Keep it running", closes it and gives focus back; nothing is cancelled
    page.keyboard.press("Escape")
    assert not page.is_visible("#cancel-yes") and page.evaluate(focused) == "SUMMARY"
    page.click("#cancel-confirm summary")
    page.click("#cancel-no")
    assert not page.is_visible("#cancel-yes") and page.evaluate(focused) == "SUMMARY"
    assert jobs.snapshot(job_id)["status"] == "running"

    # And "Yes" cancels; the form goes, focus lands on the notice saying so
    page.click("#cancel-confirm summary")
    page.click("#cancel-yes")
    page.wait_for_function(status_is("cancelled"))
    page.wait_for_function(f"() => ({focused})() === 'notice'")
    assert page.inner_text("#notice") == "Job cancelled."
    assert page.is_hidden("#cancel-form")
    assert jobs.snapshot(job_id)["status"] == "cancelled"
    page.screenshot(path=str(ARTIFACTS / "job-cancelled.png"))
    assert page.console_errors == []


@pytest.mark.both_strategies
def test_counters_and_skip_wording_stay_consistent_through_a_rerun_live_and_reloaded(
    page, live_factory: Callable[..., LiveServer], sqlite_url: str, tmp_path, monkeypatch
):
    # Given a pipeline a -> f -> s whose f fails at its first attempt (s is then skipped)
    monkeypatch.setenv("SCRIPTED_STATE_DIR", str(tmp_path))
    live = live_factory(sqlite_url, threads=1, MAX_RETRIES=0, GENERATOR_LATENCY_MS=700)
    project_id = make_project(
        "a",
        {"key": "f", "title": "[flaky] F", "depends_on": ["a"]},
        {"key": "s", "title": "S", "depends_on": ["f"]},
        "b",
    )
    job_id = submit(project_id, batch_size=3)
    page.goto(f"{live.base_url}/jobs/{job_id}")
    page.wait_for_function(LIVE_OPEN)
    s_state = (
        "[...document.querySelectorAll('tr[data-run]')].find(r => r.textContent.includes('S'))"
    )
    assert page.evaluate(f"() => {s_state}.querySelector('.run-state').textContent") == "queued"

    # When it ends partial, followed live: the live page says what a reload says
    page.wait_for_function(status_is("partial"), timeout=60_000)
    page.wait_for_function(LIVE_ENDED)
    live_view = page.evaluate(VIEW)
    stored = {r["title"]: r["error"] for b in jobs.snapshot(job_id)["batches"] for r in b["runs"]}
    assert ["S", "skipped", stored["S"]] in live_view["runs"]
    page.reload()
    page.wait_for_function(LIVE_ENDED)
    assert page.evaluate(VIEW) == live_view

    # And after "Rerun failed tasks", followed live to success
    page.click("#retry-form button")
    page.wait_for_function(status_is("succeeded"), timeout=60_000)
    page.wait_for_function(LIVE_ENDED)
    view = page.evaluate(VIEW)
    sections = len(view["batches"])
    assert sections == jobs.snapshot(job_id)["total_batches"] > 1
    assert view["counts"][-1] == f"{sections}/{sections}"  # never "Batches 3/2"
    for heading, count, value, maximum, _ in view["batches"]:
        assert "completed" in heading and value == maximum, (heading, count)  # full bars
    assert view["overall"] == "4 of 4 tasks done" and view["percent"] == "100%"
    assert any(note.endswith("rerun in a later batch") for *_, note in view["batches"])
    assert page.inner_text("#announce") == f"Job {job_id} succeeded: 4 of 4 tasks done."
    page.reload()
    page.wait_for_function(LIVE_ENDED)
    assert page.evaluate(VIEW) == view
    assert page.console_errors == []


@pytest.mark.both_strategies
def test_a_batch_started_that_the_page_has_not_seen_is_appended(
    page, live_factory: Callable[..., LiveServer], sqlite_url: str
):
    # Given the page of a running job of one batch
    live = live_factory(sqlite_url, worker=False)
    job_id = submit(make_project("a", "b"))
    page.goto(f"{live.base_url}/jobs/{job_id}")
    page.wait_for_function(LIVE_OPEN)
    assert page.locator("section.batch").count() == 1

    # When the job announces a batch the page has not seen (work released as it goes)
    with session_scope() as session:
        payload = {"batch": 2, "mode": "group", "done": 0, "total": 3}
        events.append(session, job_id, [("batch_started", payload)])

    # Then its section is appended, built like the others, and counted
    page.wait_for_function("() => document.querySelectorAll('section.batch').length === 2")
    added = page.locator("section.batch").nth(1)
    assert added.get_attribute("data-batch") == "2"
    assert " ".join(added.locator("h2").inner_text().split()) == "Batch 2 group running"
    assert added.locator(".batch-count").inner_text() == "0/3"
    assert page.get_by_role("progressbar", name="Batch 2").count() == 1
    assert page.inner_text("#count-batches-total") == "2"
    assert page.console_errors == []


def test_a_right_to_left_override_in_user_text_does_not_reverse_the_text_around_it(
    page, live_factory: Callable[..., LiveServer], sqlite_url: str
):
    # Given a project and a task key whose texts carry U+202E (RIGHT-TO-LEFT OVERRIDE)
    live = live_factory(sqlite_url, worker=False)
    rlo = "\u202e"
    project_id = make_project(
        {"key": f"k{rlo}ey", "title": "First"},
        {"key": "bravo", "title": "Second"},
        {"key": "c", "title": "Third", "depends_on": [f"k{rlo}ey", "bravo"]},
        name=f"Name {rlo}evil",
    )
    with session_scope() as session:
        task_id = session.scalar(sa.select(Task.id).where(Task.project_id == project_id))

    def left_to_right(path: str, selector: str, word: str) -> None:
        page.goto(live.base_url + path)
        edges = page.evaluate(POSITIONS, [selector, word])
        assert edges == sorted(edges), f"{word!r} after {selector} is reversed on {path}"

    # Then the text after each stays in reading order
    left_to_right(f"/tasks/{task_id}/guide", ".crumbs a", "task")
    left_to_right(
        f"/projects/{project_id}", "#tasks tbody tr:nth-child(3) td:nth-child(3) bdi", "bravo"
    )
