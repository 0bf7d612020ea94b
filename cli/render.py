"""Render a job's progress and summary on a terminal (or a log, when not a terminal)."""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import click

BAR_WIDTH = 30
#: Clears the terminal line the cursor is on (the progress line).
CLEAR_LINE = "\r\x1b[K"

#: Held while the progress line or a log line is written: worker threads log meanwhile.
_terminal = threading.RLock()
#: The progress view whose line is on the terminal now, if any.
_drawn: ProgressView | None = None


def write_above(write: Callable[[], None]) -> None:
    """Call ``write`` (which writes whole lines) above the progress line, if one is drawn."""
    with _terminal:
        if _drawn is not None:
            click.echo(CLEAR_LINE, nl=False)
        write()
        if _drawn is not None:
            _drawn.draw()


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class ProgressView:
    """A one-line progress bar redrawn at each event (a line per batch off a terminal)."""

    def __init__(self, job: dict[str, Any], *, tty: bool | None = None) -> None:
        self.total = job["total_tasks"]
        self.done = job["done_tasks"]
        self.failed = job["failed_tasks"]
        self.skipped = job["skipped_tasks"]
        self.batches = job["total_batches"]
        self.in_flight = job["in_flight"]
        self.max_in_flight = job["max_in_flight"]
        self.started = time.monotonic()
        self.tty = sys.stdout.isatty() if tty is None else tty

    def line(self) -> str:
        """Return the progress line for the current state."""
        filled = BAR_WIDTH * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return (
            f"[{bar}] {self.done}/{self.total} tasks  in flight {self.in_flight}/"
            f"{self.max_in_flight}  batches {self.batches:<3}  failed {self.failed}"
            f"  skipped {self.skipped}"
            f"  {_elapsed(time.monotonic() - self.started)}"
        )

    def update(self, event: dict[str, Any]) -> None:
        """Apply one event and redraw."""
        payload = event["payload"]
        counters = payload.get("job")
        if counters:
            self.done, self.failed, self.skipped = (
                counters["done"],
                counters["failed"],
                counters["skipped"],
            )
            self.in_flight = counters.get("in_flight", self.in_flight)
        if event["type"] == "batch_started":
            self.batches = max(self.batches, payload["batch"])
        if self.tty:
            self.draw()
        elif event["type"] == "batch_completed":
            click.echo(self.line())

    def draw(self) -> None:
        """Draw the progress line over the current terminal line."""
        global _drawn
        with _terminal:
            click.echo(CLEAR_LINE + self.line(), nl=False)
            _drawn = self

    def close(self) -> None:
        """End the progress line."""
        global _drawn
        with _terminal:
            if self.tty:
                click.echo()
            _drawn = None


def follow(job: dict[str, Any], events: Iterable[dict[str, Any]]) -> None:
    """Draw progress for each of ``events`` (pushed as they happen)."""
    view = ProgressView(job)
    try:
        for event in events:
            view.update(event)
    finally:
        view.close()


def _wall_time(job: dict[str, Any]) -> str:
    if not job["finished_at"]:
        return "still running"
    start = dt.datetime.fromisoformat(job["created_at"])
    end = dt.datetime.fromisoformat(job["finished_at"])
    return f"{(end - start).total_seconds():.1f} s"


def moment(iso: str | None) -> str:
    """Return an ISO timestamp as ``2026-12-04 18:13:31 UTC`` (``-`` when unset)."""
    if not iso:
        return "-"
    return f"{dt.datetime.fromisoformat(iso).astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


def summary(job: dict[str, Any]) -> str:
    """Return a few lines that sum a job up."""
    pipelines = sum(1 for batch in job["batches"] if batch["mode"] == "pipeline")
    groups = len(job["batches"]) - pipelines
    lines = [
        f"Job {job['id']} ({job['project_name']}): {job['status']}, wall time {_wall_time(job)}",
        f"  started: {moment(job['created_at'])}, finished: {moment(job['finished_at'])}",
        f"  batches: {job['completed_batches']}/{job['total_batches']} done"
        f" ({groups} groups, {pipelines} pipelines); {job['strategy']} scheduling,"
        f" at most {job['max_in_flight']} in flight",
        f"  tasks:   {job['succeeded_tasks']} succeeded, {job['failed_tasks']} failed,"
        f" {job['skipped_tasks']} skipped, {job['cancelled_tasks']} cancelled"
        f" of {job['total_tasks']}",
        f"  AI:      {ai_spend(job)}",
    ]
    for batch in job["batches"]:
        for run in batch["runs"]:
            if run["status"] in {"failed", "skipped"}:
                lines.append(f"  - {run['key']}: {run['status']}: {run['error']}")
    return "\n".join(lines)


def ai_spend(job: dict[str, Any]) -> str:
    """Return a job's AI tokens and cost as one phrase."""
    tokens = job["prompt_tokens"] + job["completion_tokens"]
    return (
        f"{tokens:,} tokens ({job['prompt_tokens']:,} prompt + {job['completion_tokens']:,}"
        f" completion), cost {job['cost']:.4f}"
    )


#: Keys listed at most per line of :func:`flow_lines` (the rest are counted).
_LISTED_KEYS = 12


def _keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED_KEYS])
    more = len(keys) - _LISTED_KEYS
    return f"{shown} and {more} more" if more > 0 else shown


def flow_lines(job: dict[str, Any]) -> list[str]:
    """Return what a running job does now: what runs, what is ready, what waits on what."""
    released = [run for batch in job["batches"] for run in batch["runs"]]
    lines = []
    for state in ("running", "queued"):
        keys = [run["key"] for run in released if run["status"] == state]
        if keys:
            lines.append(f"  {state + ':':<9}{_keys(keys)}")
    waiting = [run for run in job["unreleased"] if run["status"] == "waiting"]
    ready = [run["key"] for run in waiting if run["ready"]]
    if ready:
        lines.append(f"  ready:   {_keys(ready)} (for a free slot)")
    blocked = [run for run in waiting if not run["ready"]]
    for run in blocked[:_LISTED_KEYS]:
        on = ", ".join(run["waits_for"]) or "the batch before"
        lines.append(f"  waiting: {run['key']} (on {on})")
    if len(blocked) > _LISTED_KEYS:
        lines.append(f"  waiting: {len(blocked) - _LISTED_KEYS} more")
    return lines
