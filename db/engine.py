"""Engine and session factory: created unbound, bound by ``configure(url)``.

Web, workers, CLI and tests all call :func:`configure` once with the URL from their
settings; everything else opens short transactions with :func:`session_scope`. On
PostgreSQL the pool is a budget (:mod:`db.pool`): sized from what the process runs
(:func:`claim`), bounded waits, idle connections closed.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, orm

import errors
from db import pool
from db.pool import PoolOptions

T = TypeVar("T")

#: The session factory; unbound until :func:`configure` is called.
Session = orm.sessionmaker(expire_on_commit=False)

_engine: sa.Engine | None = None
_options = PoolOptions()
_idle_closer: pool.IdleCloser | None = None
#: Serializes this process's SQLite transactions (see :func:`session_scope`).
_sqlite_turns = threading.RLock()


class NotConfiguredError(errors.HandsonError, RuntimeError):
    """Raised when the database is used before ``db.configure(url)`` was called."""


def _prepare_sqlite(engine: sa.Engine) -> None:
    """Make SQLite behave under concurrent worker threads.

    pysqlite's own transaction handling defers BEGIN and then fails with "database is
    locked" when two readers upgrade to writers; we emit ``BEGIN IMMEDIATE`` ourselves
    so writers queue on the busy timeout instead (SQLAlchemy's documented recipe).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str, options: PoolOptions | None = None) -> sa.Engine:
    """Create an engine for ``url`` with the settings this project relies on.

    Parameters:
      url: the SQLAlchemy URL.
      options: how a PostgreSQL engine pools its connections (default: :class:`PoolOptions`).
    """
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _prepare_sqlite(engine)
        return engine
    # pre_ping: a connection dropped by a database restart (or closed by the server or a
    # proxy while idle) is replaced, not reused. LIFO: a light load keeps reusing the
    # same few connections, so the others stay idle where a server-side timeout can end them.
    engine = sa.create_engine(
        url,
        poolclass=pool.pool_class(options or PoolOptions()),
        pool_pre_ping=True,
        pool_use_lifo=True,
    )
    pool.name_connections(engine)
    return engine


def configure(url: str, options: PoolOptions | None = None) -> sa.Engine:
    """Bind the session factory to an engine for ``url`` and return the engine.

    Calling it again with the same URL and options keeps the engine (and its pool).

    Parameters:
      url: the SQLAlchemy URL.
      options: how to pool PostgreSQL connections (default: :class:`PoolOptions`).
    """
    global _engine, _options, _idle_closer
    options = options or PoolOptions()
    if _engine is not None:
        if _engine.url.render_as_string(hide_password=False) == url and options == _options:
            return _engine
        _stop_idle_closer()
        _engine.dispose()
    _engine, _options = create_engine(url, options), options
    if _engine.dialect.name == "postgresql" and options.idle_timeout_s > 0:
        _idle_closer = pool.IdleCloser(_engine, options.idle_timeout_s)
    Session.configure(bind=_engine)
    return _engine


def _stop_idle_closer() -> None:
    global _idle_closer
    if _idle_closer is not None:
        _idle_closer.stop()
        _idle_closer = None


def pool_options() -> PoolOptions:
    """Return how this process pools its connections (the options of :func:`configure`)."""
    return _options


def idle_closer() -> pool.IdleCloser | None:
    """Return what closes this process's idle connections (None: nothing does)."""
    return _idle_closer


def claim(part: str, connections: int) -> None:
    """Size this process's pool for what ``part`` of it runs (see :mod:`db.pool`).

    The pool holds the sum of the parts' claims (unless ``DATABASE_POOL_SIZE`` fixes
    it). Parts claim when they start, before they use the database: a pool whose size
    changes is replaced, and its idle connections are closed.

    Parameters:
      part: what claims (``"worker"``, ``"web"``); a second claim replaces the first.
      connections: the connections it may use at once; 0 withdraws the claim.
    """
    pool.claim(part, connections)
    engine = _engine
    if engine is None or engine.dialect.name != "postgresql":
        return
    if engine.pool.size() != _options.pool_size():  # type: ignore[attr-defined]
        engine.dispose()  # the new pool takes the new size (db.pool.pool_class)


def is_configured() -> bool:
    """Return True once :func:`configure` has bound the session factory to an engine."""
    return _engine is not None


def get_engine() -> sa.Engine:
    """Return the configured engine.

    Raises:
      NotConfiguredError: when :func:`configure` has not been called.
    """
    if _engine is None:
        raise NotConfiguredError(NotConfiguredError.__doc__)
    return _engine


def warm_up(connections: int) -> None:
    """Size the pool for a worker of ``connections`` threads and open them now.

    A worker calls it at boot with its thread count: it claims one connection per
    thread (:func:`claim`), and the first batch's tasks find their connections open
    instead of each opening one at the same moment.
    """
    engine = get_engine()
    if engine.dialect.name == "sqlite":  # in-process: nothing to open ahead
        return
    claim("worker", connections)
    with contextlib.ExitStack() as opened:
        for _ in range(max(0, min(connections, engine.pool.size()))):
            opened.enter_context(engine.connect()).execute(sa.text("SELECT 1"))


def upsert_insert(dialect_name: str, table: Any) -> Any:
    """Return an ``INSERT`` for ``table`` that supports ``ON CONFLICT`` on a dialect."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table)


@contextlib.contextmanager
def session_scope() -> Iterator[orm.Session]:
    """Open a session in a transaction: committed on success, rolled back on error.

    On SQLite, transactions of this process take turns on a lock: SQLite has one writer
    at a time and makes the others retry on a sleeping back-off (up to 100 ms a try),
    while a waiter on this lock is woken the moment the previous transaction ends.
    """
    engine = get_engine()
    turn = _sqlite_turns if engine.dialect.name == "sqlite" else contextlib.nullcontext()
    with turn, Session() as session, session.begin():
        yield session


#: PostgreSQL's code for a transaction it aborted to break a deadlock.
_DEADLOCK_DETECTED = "40P01"
#: Tries of a transaction that PostgreSQL aborts to break a deadlock.
DEADLOCK_TRIES = 6
#: Longest pause before the second try, in seconds (doubled at each further try, the
#: actual pause drawn at random below it): the transactions that queued behind the
#: aborted one's locks commit first, instead of meeting its next try at once.
DEADLOCK_BACKOFF_S = 0.1


def in_transaction(work: Callable[[orm.Session], T]) -> T:
    """Run ``work(session)`` in a transaction (:func:`session_scope`); return its result.

    When PostgreSQL aborts it to break a deadlock (two transactions locking the same
    rows in opposite orders: a cancel against an outcome), the whole transaction runs
    again after a short random back-off, up to :data:`DEADLOCK_TRIES` times; its
    guarded updates make that safe.
    """
    tries = 1
    while True:
        try:
            with session_scope() as session:
                return work(session)
        except sa.exc.OperationalError as error:
            deadlock = getattr(error.orig, "sqlstate", None) == _DEADLOCK_DETECTED
            if not deadlock or tries >= DEADLOCK_TRIES:
                raise
            time.sleep(random.uniform(0, DEADLOCK_BACKOFF_S * 2 ** (tries - 1)))
            tries += 1


@contextlib.contextmanager
def statements_committing_alone() -> Iterator[sa.Connection]:
    """Open a connection on which each statement commits on its own.

    For writes that are one statement: no ``BEGIN`` and ``COMMIT`` round trips around
    it, and its row locks last only while it runs. On SQLite the block is still one
    transaction, taken in turn with this process's others (see :func:`session_scope`).
    """
    engine = get_engine()
    if engine.dialect.name == "sqlite":
        with _sqlite_turns, engine.begin() as connection:
            yield connection
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        yield connection
