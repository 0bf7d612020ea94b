"""What `handson demo` writes on a real terminal: no log line inside the progress bar."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The start of a log record (``LOG_FORMAT``).
LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")


def run_on_a_terminal(database_url: str, *args: str) -> str:
    """Run ``python -m cli ARGS`` with a pseudo-terminal as stdout and stderr; return all."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env={**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    os.close(secondary)
    output = bytearray()
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed: the process and its output are done
            break
        if not chunk:
            break
        output += chunk
    os.close(primary)
    assert process.wait(timeout=120) == 0, output.decode(errors="replace")[-2000:]
    return output.decode()


def test_demo_is_quiet_by_default(sqlite_url):
    output = run_on_a_terminal(sqlite_url, "demo", "--latency-ms", "10")
    assert "62/62 tasks" in output and ": succeeded" in output
    assert not LOG_RECORD.search(output), output[-2000:]


def test_verbose_log_lines_go_above_the_progress_bar_never_into_it(sqlite_url):
    # When the demo runs with INFO log lines on a terminal
    output = run_on_a_terminal(sqlite_url, "--verbose", "demo", "--latency-ms", "10")

    # Then there are log lines, and each starts a line of its own: the progress line
    # is cleared before it (and drawn again after), never continued by it
    starts = [match.start() for match in LOG_RECORD.finditer(output)]
    assert starts, output[-2000:]
    for start in starts:
        before = output[max(0, start - 3) : start]
        assert start == 0 or before.endswith(("\n", "\x1b[K")), repr(
            output[start - 80 : start + 40]
        )
    assert "62/62 tasks" in output and ": succeeded" in output
