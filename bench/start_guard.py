"""What starting a project's job once costs: statements and time of the start guard.

Run on SQLite, or on PostgreSQL next to a throwaway server::

    .venv/bin/python bench/start_guard.py
    scripts/with-services.sh .venv/bin/python bench/start_guard.py --postgres

Measures ``db.idempotency.starting`` around a start that writes nothing (the guard
alone), without and with an ``Idempotency-Key``, and a refused start (a job of the
project runs): SQL statements sent (counted with an engine event) and median wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import sqlalchemy as sa  # noqa: E402

import db  # noqa: E402
from db import idempotency, jobs  # noqa: E402
from db.migrate import upgrade  # noqa: E402

ROUNDS = 200


def _database(postgres: bool) -> str:
    if not postgres:
        url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    else:
        server = os.environ["TEST_DATABASE_URL"]
        name = f"bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


def _measure(label: str, run: Callable[[int], None]) -> None:
    statements = 0

    def count(*_: object) -> None:
        nonlocal statements
        statements += 1

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    times = []
    for i in range(ROUNDS):
        begin = time.perf_counter()
        run(i)
        times.append(time.perf_counter() - begin)
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    print(
        f"{label:<38} {statements / ROUNDS:5.1f} statements"
        f"  {statistics.median(times) * 1000:6.2f} ms median"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", action="store_true", help="use TEST_DATABASE_URL")
    args = parser.parse_args()
    db.configure(_database(args.postgres))
    from workerkit import make_project

    free, busy = make_project("a"), make_project("b")
    jobs.create_job(busy, batch_size=5, max_batch_size=50, max_tasks=10)

    def plain(_: int) -> None:
        with idempotency.starting(free, key=None, force=False):
            pass

    def keyed(i: int) -> None:
        with idempotency.starting(free, key=f"key-{i}", force=False):
            pass

    def refused(_: int) -> None:
        try:
            with idempotency.starting(busy, key=None, force=False):
                pass
        except idempotency.JobRunningError:
            return

    print(f"{'PostgreSQL' if args.postgres else 'SQLite'}, {ROUNDS} rounds each:")
    _measure("guarded start, no key", plain)
    _measure("guarded start, new Idempotency-Key", keyed)
    _measure("refused start (a job runs)", refused)


if __name__ == "__main__":
    main()
