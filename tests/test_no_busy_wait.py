"""No busy-waiting anywhere: no loop sleeps, and a watcher costs nothing while idle."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

from sqlalchemy import event
from workerkit import make_project

import db
from db import events, jobs, listen

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("db", "workers", "web", "cli", "pipelines.py", "settings.py")
#: Functions whose loops may sleep, and why: none of them waits for work to finish.
ALLOWED = {
    # The offline generator paces its guide's words over its simulated latency.
    ("workers/generators/offline.py", "_stream"),
    # A transaction aborted by a deadlock backs off before its next try.
    ("db/engine.py", "in_transaction"),
}


def _sleeps_in_loops(path: Path, root: Path = ROOT) -> list[int]:
    """Return the lines of ``sleep(...)`` calls inside loops, but in allowed functions."""
    relative = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
    tree = ast.parse(path.read_text())
    allowed = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef) and (relative, function.name) in ALLOWED
        for node in ast.walk(function)
    }
    lines = []
    for loop in ast.walk(tree):
        if not isinstance(loop, ast.For | ast.While) or id(loop) in allowed:
            continue
        for node in ast.walk(loop):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                if name == "sleep":
                    lines.append(node.lineno)
    return lines


def test_no_loop_sleeps_in_the_product_code():
    # Given every module of the product
    files = [
        p
        for pkg in PACKAGES
        for p in ([ROOT / pkg] if pkg.endswith(".py") else (ROOT / pkg).rglob("*.py"))
    ]
    assert len(files) > 20

    # Then no loop calls sleep, except the offline generator pacing its words and the
    # back-off of a transaction aborted by a deadlock
    offenders = {
        str(path.relative_to(ROOT)): lines for path in files if (lines := _sleeps_in_loops(path))
    }
    assert offenders == {}


def test_the_detector_finds_a_sleep_in_a_loop(tmp_path: Path):
    # A guard for the guard: the detector must catch the origin's busy wait.
    sample = tmp_path / "busy.py"
    sample.write_text(
        "import time\nwhile True:\n    if done():\n        break\n    time.sleep(2)\n"
    )
    assert _sleeps_in_loops(sample) == [5]


def test_a_watcher_issues_no_query_while_nothing_happens(database_url: str):
    # Given a running job with a watcher blocked on its next event
    db.configure(database_url)
    job_id = jobs.create_job(
        make_project("a", "b"), batch_size=5, max_batch_size=50, max_tasks=100
    ).job_id
    statements: list[str] = []
    event.listen(db.get_engine(), "before_cursor_execute", lambda *a: statements.append(a[2]))
    received: list[dict] = []
    replayed, arrived = threading.Event(), threading.Event()

    def consume() -> None:
        for item in listen.watch(job_id):
            received.append(item)
            if len(received) == 2:
                replayed.set()
            if item["type"] == "job_finished":
                arrived.set()

    threading.Thread(target=consume, daemon=True).start()
    # The replay (job_started, batch_started) arrives at once.
    assert replayed.wait(5)
    assert [e["type"] for e in received] == ["job_started", "batch_started"]

    # When nothing happens for a while (an idle window: time has to pass)
    idle_start = len(statements)
    time.sleep(1.5)

    # Then the watcher sent no statement at all
    assert statements[idle_start:] == []

    # And when an event is committed, it arrives without delay
    with db.session_scope() as session:
        events.append(session, job_id, [("job_finished", {"status": "succeeded"})])
    assert arrived.wait(5)
    assert received[-1]["type"] == "job_finished"
