"""Importing the worker side never reconfigures a process that configured itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Run in a fresh interpreter: the process configures its database, then imports modules
#: of ``workers`` for the first time, with ``DATABASE_URL`` naming another database.
PROBE = """
import db
db.configure({url!r})
import workers.generators.base, workers.actors.generate, workers.dispatch
import dramatiq
print(db.get_engine().url.render_as_string(hide_password=False))
print(type(dramatiq.get_broker()).__name__)
"""


def test_importing_workers_modules_keeps_a_configured_database(tmp_path):
    # Given a process that configured its own database while DATABASE_URL names another
    mine = f"sqlite:///{tmp_path / 'mine.db'}"
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}", "PATH": "/usr/bin:/bin"}

    # When it imports modules of the worker side for the first time
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(url=mine)],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    # Then its engine still points at its own database (and a broker was set up)
    assert result.returncode == 0, result.stderr
    engine_url, broker = result.stdout.split()
    assert engine_url == mine
    assert broker == "StubBroker"
    assert not (tmp_path / "other.db").exists()
