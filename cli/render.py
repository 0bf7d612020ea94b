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
        self.batch = job["current_batch"] or job["completed_batches"]
        self.mode = job["batches"][self.batch - 1]["mode"] if self.batch else ""
        self.started = time.monotonic()
        self.tty = sys.stdout.isatty() if tty is None else tty

    def line(self) -> str:
        """Return the progress line for the current state."""
        filled = BAR_WIDTH * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return (
            f"[{bar}] {self.done}/{self.total} tasks  batch {self.batch}/{self.batches}"
            f" {self.mode:<8}  failed {self.failed}  skipped {self.skipped}"
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
        if event["type"] == "batch_started":
            self.batch, self.mode = payload["batch"], payload["mode"]
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
        f" ({groups} groups, {pipelines} pipelines, batch size {job['batch_size']})",
        f"  tasks:   {job['succeeded_tasks']} succeeded, {job['failed_tasks']} failed,"
        f" {job['skipped_tasks']} skipped, {job['cancelled_tasks']} cancelled"
        f" of {job['total_tasks']}",
    ]
    for batch in job["batches"]:
        for run in batch["runs"]:
            if run["status"] in {"failed", "skipped"}:
                lines.append(f"  - {run['key']}: {run['status']}: {run['error']}")
    return "\n".join(lines)
