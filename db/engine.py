"""Engine and session factory: created unbound, bound by ``configure(url)``.

Web, workers, CLI and tests all call :func:`configure` once with the URL from their
settings; everything else opens short transactions with :func:`session_scope`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, orm

#: The session factory; unbound until :func:`configure` is called.
Session = orm.sessionmaker(expire_on_commit=False)

_engine: sa.Engine | None = None
#: Serializes this process's SQLite transactions (see :func:`session_scope`).
_sqlite_turns = threading.RLock()


class NotConfiguredError(RuntimeError):
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


def create_engine(url: str) -> sa.Engine:
    """Create an engine for ``url`` with the settings this project relies on."""
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _prepare_sqlite(engine)
        return engine
    # pre_ping: a connection dropped by a database restart is replaced, not reused.
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def configure(url: str) -> sa.Engine:
    """Bind the session factory to a new engine for ``url`` and return the engine."""
    global _engine
    if _engine is not None:
        if _engine.url.render_as_string(hide_password=False) == url:
            return _engine
        _engine.dispose()
    _engine = create_engine(url)
    Session.configure(bind=_engine)
    return _engine


def get_engine() -> sa.Engine:
    """Return the configured engine.

    Raises:
      NotConfiguredError: when :func:`configure` has not been called.
    """
    if _engine is None:
        raise NotConfiguredError(NotConfiguredError.__doc__)
    return _engine


def warm_up(connections: int) -> None:
    """Open up to ``connections`` pooled connections now, so first tasks do not wait.

    A worker calls it at boot with its thread count: the first batch's tasks then find
    their connections open instead of each opening one at the same moment.
    """
    engine = get_engine()
    if engine.dialect.name == "sqlite":  # in-process: nothing to open ahead
        return
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
