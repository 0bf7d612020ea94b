"""A transaction that PostgreSQL aborts to break a deadlock runs again, whole."""

from __future__ import annotations

import threading

import psycopg
import sqlalchemy as sa
from sqlalchemy import orm

import db
from db.engine import in_transaction
from db.models import Project


def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_a_transaction_aborted_by_a_deadlock_runs_again(postgres_url: str):
    # Given two projects, and another client that locks them in the opposite order
    db.configure(postgres_url)
    with db.session_scope() as session:
        first, second = Project(name="first"), Project(name="second")
        session.add_all([first, second])
        session.flush()
        ids = (first.id, second.id)
    both_locked_one = threading.Barrier(2, timeout=10)
    tries: list[int] = []

    def other_client() -> None:
        with psycopg.connect(_libpq(postgres_url)) as connection:
            connection.execute("SET deadlock_timeout = '10s'")  # so ours is the one aborted
            connection.execute("UPDATE projects SET name = 'other' WHERE id = %s", (ids[1],))
            both_locked_one.wait()
            connection.execute("UPDATE projects SET name = 'other' WHERE id = %s", (ids[0],))

    def work(session: orm.Session) -> str:
        tries.append(1)
        session.execute(sa.text("SET LOCAL deadlock_timeout = '50ms'"))
        rename = sa.update(Project).values(name="ours")
        session.execute(rename.where(Project.id == ids[0]))
        if len(tries) == 1:
            both_locked_one.wait()
        session.execute(rename.where(Project.id == ids[1]))
        return "done"

    # When our transaction meets it
    other = threading.Thread(target=other_client)
    other.start()
    result = in_transaction(work)
    other.join(10)

    # Then PostgreSQL aborted ours once, it ran again after the other committed, and won
    assert (result, len(tries)) == ("done", 2)
    with db.session_scope() as session:
        assert session.scalars(sa.select(Project.name).order_by(Project.id)).all() == [
            "ours",
            "ours",
        ]
