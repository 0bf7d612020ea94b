"""PostgreSQL connections as a budget: pools sized from what a process runs, bounded waits,
idle connections closed, one LISTEN connection per process."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from redis_kit import wait_until
from workerkit import make_project

import db
from db import engine as engine_module
from db import jobs, listen, notify, pool
from settings import Settings


@pytest.fixture(autouse=True)
def no_claims() -> Iterator[None]:
    """Each test starts, and leaves, the process with no claim (claims are per process)."""
    saved = dict(pool._claims)
    pool._claims.clear()
    yield
    pool._claims.clear()
    pool._claims.update(saved)


def connections_to(url: str, application_name: str | None = None) -> int:
    """Count the connections to the database of ``url`` in ``pg_stat_activity``."""
    libpq = sa.make_url(url).set(drivername="postgresql")
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    params: list[str] = [str(libpq.database)]
    if application_name is not None:
        query += " AND application_name = %s"
        params.append(application_name)
    server = libpq.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(server, autocommit=True) as connection:
        row = connection.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def test_the_default_options_are_the_settings_defaults():
    # A process configured from settings keeps the engine a plain configure() made.
    assert db.PoolOptions.of(Settings()) == db.PoolOptions()


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"size": 0}, "DATABASE_POOL_SIZE"),
        ({"timeout_s": 0}, "DATABASE_POOL_TIMEOUT_S"),
        ({"idle_timeout_s": -1}, "DATABASE_IDLE_TIMEOUT_S"),
    ],
)
def test_pool_options_out_of_range_name_the_setting_to_fix(values, setting):
    with pytest.raises(ValueError, match=setting):
        db.PoolOptions(**values)


def test_a_pool_holds_what_its_process_claims(postgres_url):
    # Given a process that claims nothing yet (a scheduler, the CLI)
    engine = db.configure(postgres_url)
    assert engine.pool.size() == pool.UNCLAIMED_SIZE

    # When a worker of 3 threads boots, then the web part claims its connections
    db.warm_up(3)
    assert engine.pool.size() == 3 and engine.pool.checkedin() == 3
    db.claim("web", 4)

    # Then the pool holds their sum, and its connections say who opened them
    assert engine.pool.size() == 7
    db.warm_up(3)
    assert connections_to(postgres_url, "handson/web/worker") == 3


def test_a_fixed_pool_size_wins_over_claims(postgres_url):
    engine = db.configure(postgres_url, db.PoolOptions(size=5))
    db.warm_up(8)
    assert engine.pool.size() == 5
    assert connections_to(postgres_url) == 5


def test_an_exhausted_pool_fails_clearly_within_its_timeout(postgres_url):
    # Given a pool of 2 connections, both held
    engine = db.configure(postgres_url, db.PoolOptions(size=2, timeout_s=0.5))
    with contextlib.ExitStack() as held:
        for _ in range(2):
            held.enter_context(engine.connect())

        # When a third caller needs one, on a thread we can wait for with a bound
        outcome: list[BaseException] = []

        def third() -> None:
            try:
                with db.session_scope() as session:
                    session.execute(sa.text("SELECT 1"))
            except BaseException as error:
                outcome.append(error)

        caller = threading.Thread(target=third)
        started = time.monotonic()
        caller.start()
        caller.join(timeout=10)

    # Then it got a clear error after the timeout, not a hang, and no third connection
    assert not caller.is_alive()
    assert 0.5 <= time.monotonic() - started < 10
    assert len(outcome) == 1 and isinstance(outcome[0], db.PoolExhaustedError)
    assert "DATABASE_POOL_SIZE" in str(outcome[0]) and "2 database connections" in str(outcome[0])
    assert connections_to(postgres_url) == 2  # the held ones, returned and kept; none more


def test_idle_connections_are_closed_and_reopened_on_the_next_use(postgres_url):
    # Given a worker's pool of 3 open connections, with a short idle timeout
    db.configure(postgres_url, db.PoolOptions(idle_timeout_s=0.5))
    db.warm_up(3)
    assert connections_to(postgres_url, "handson/worker") == 3

    # When the process does not use the database for the idle timeout
    # Then it closes every pooled connection
    wait_until(lambda: connections_to(postgres_url) == 0, 10, "the idle connections to close")
    assert db.get_engine().pool.checkedin() == 0

    # And the next use opens one again, which closes again once idle
    with db.session_scope() as session:
        assert session.scalar(sa.text("SELECT 1")) == 1
    assert connections_to(postgres_url, "handson/worker") == 1
    wait_until(lambda: connections_to(postgres_url) == 0, 10, "the reopened one to close")


def test_a_connection_in_use_is_not_closed_however_long(postgres_url):
    # Given a short idle timeout and a connection held longer than it
    db.configure(postgres_url, db.PoolOptions(idle_timeout_s=0.2))
    closer = engine_module.idle_closer()
    assert closer is not None
    with db.get_engine().connect() as connection:
        connection.execute(sa.text("SELECT 1"))
        with db.session_scope() as session:  # a second one, used and returned
            session.execute(sa.text("SELECT 1"))
        # When the idle timeout passes while the first is still checked out
        wait_until(lambda: closer.quiet_periods >= 1, 10, "a quiet period")
        # Then both stay open: the returned one waits for the held one's end
        assert connections_to(postgres_url) == 2 and closer.closed == 0
        connection.execute(sa.text("SELECT 1"))
    wait_until(lambda: connections_to(postgres_url) == 0, 10, "both to close once idle")
    assert closer.closed == 2


def test_one_listen_connection_serves_every_watcher_of_a_process(postgres_url):
    # Given 50 watchers of 5 jobs in this process
    db.configure(postgres_url)
    job_ids = [
        jobs.create_job(
            make_project("a", "b", name=f"p{i}"), batch_size=5, max_batch_size=50, max_tasks=100
        ).job_id
        for i in range(5)
    ]
    hub = listen.get_hub()
    queues = [(job_id, hub.subscribe(job_id)) for job_id in job_ids for _ in range(10)]
    try:
        # Then one connection listens, and no pooled connection is held while they wait
        assert connections_to(postgres_url, listen.LISTENER_NAME) == 1
        assert db.get_engine().pool.checkedout() == 0
    finally:
        for job_id, wakeups in queues:
            hub.unsubscribe(job_id, wakeups)


def test_an_unwatched_listener_closes_and_the_next_watcher_opens_it(postgres_url):
    # Given a process with a short idle timeout whose hub listened for one watcher
    db.configure(postgres_url, db.PoolOptions(idle_timeout_s=0.3))
    job_id = jobs.create_job(
        make_project("a", "b"), batch_size=5, max_batch_size=50, max_tasks=100
    ).job_id
    hub = listen.get_hub()
    hub.unsubscribe(job_id, hub.subscribe(job_id))
    assert connections_to(postgres_url, listen.LISTENER_NAME) == 1

    # When nobody watches for the idle timeout, then its connection is closed
    wait_until(
        lambda: connections_to(postgres_url, listen.LISTENER_NAME) == 0, 10, "the listener to close"
    )

    # And a new watcher opens it again and is told of a commit in another process's way
    wakeups = hub.subscribe(job_id)
    assert connections_to(postgres_url, listen.LISTENER_NAME) == 1
    with psycopg.connect(_libpq(postgres_url), autocommit=True) as other:
        other.execute(f"NOTIFY {notify.CHANNEL}, '{job_id}:42'")
    assert wakeups.get(timeout=10) == 42
    hub.unsubscribe(job_id, wakeups)


def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
