"""Service fixtures: real Redis and PostgreSQL (started by scripts/with-services.sh), SQLite.

Run through ``make test``; without the ``TEST_*`` variables service tests skip locally
and fail in CI (``CI`` set), so a broken CI setup never passes silently.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString, NoReturn
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
import sqlalchemy as sa
from psycopg import sql

#: Prefixes of project variables that would leak a developer's setup into tests.
SCRUBBED_PREFIXES = (
    "DATABASE_URL",
    "REDIS_URL",
    "GENERATOR",
    "OPENAI_",
    "API_TOKEN",
    "API_OPEN",
    "SECRET_KEY",
    "SESSION_COOKIE_",
    "JOB_STRATEGY",
)
#: Redis database number reserved for tests; flushed before and after each test.
REDIS_TEST_DB = 15
#: Migrated database every PostgreSQL test database is copied from.
TEMPLATE_DB = "handson_template"
#: Drops a database even while tests still hold connections to it.
DROP_DB: LiteralString = "DROP DATABASE IF EXISTS {} WITH (FORCE)"
#: ``database_url`` parameter (the test id) -> fixture giving that backend's URL.
BACKEND_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "postgres_url"}
#: How long a restarted Redis may take to answer, in seconds.
REDIS_START_TIMEOUT_S = 10.0


def pytest_configure(config: pytest.Config) -> None:
    """Scrub project variables so tests see only the settings they pass themselves."""
    for name in list(os.environ):
        if name.startswith(SCRUBBED_PREFIXES):
            del os.environ[name]


def _unavailable(reason: str) -> NoReturn:
    """Skip the test locally; fail it in CI, where every service must be there."""
    if os.environ.get("CI", "").lower() not in {"", "0", "false"}:
        pytest.fail(f"{reason} (CI is set, so this is an error)", pytrace=False)
    pytest.skip(f"{reason}; run the tests with `make test`")


def _redis_ping(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False


@dataclass(frozen=True, kw_only=True)
class RedisServer:
    """The test Redis server: ``url`` points at the dedicated test database."""

    url: str

    def client(self) -> redis.Redis:
        """Return a new client on the test database (close it, or use it in ``with``)."""
        return redis.Redis.from_url(self.url)

    def flushdb(self) -> None:
        """Delete every key of the test database."""
        with self.client() as client:
            client.flushdb()

    def restart(self) -> None:
        """Shut Redis down without saving and start it again on the same port; data is lost."""
        server, conf = os.environ.get("TEST_REDIS_SERVER"), os.environ.get("TEST_REDIS_CONF")
        if not (server and conf):
            pytest.skip("restarting Redis needs TEST_REDIS_SERVER and TEST_REDIS_CONF")
        with self.client() as client:
            client.shutdown(nosave=True)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        # The old process closes its listener before exiting; start anew once it did.
        while _redis_ping(self.url) and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run([server, conf], check=True, stdout=subprocess.DEVNULL)
        while not _redis_ping(self.url):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis at {self.url} did not come back")
            time.sleep(0.05)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """The test Redis server, its test database flushed before and after the test."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        _unavailable("TEST_REDIS_URL is not set")
    server = RedisServer(url=urlsplit(url)._replace(path=f"/{REDIS_TEST_DB}").geturl())
    if not _redis_ping(server.url):
        _unavailable(f"Redis at {url} is unreachable")
    server.flushdb()
    yield server
    server.flushdb()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of an empty Redis database (``TEST_REDIS_URL`` on database 15)."""
    return redis_server.url


def _pg_url(url: str, **parts: str) -> str:
    """Return ``url`` with ``parts`` replaced; ``drivername="postgresql"`` gives a libpq URL."""
    return sa.make_url(url).set(**parts).render_as_string(hide_password=False)


def _admin(server_url: str, statement: LiteralString, *names: str) -> None:
    """Run ``statement`` with quoted ``names`` as superuser, outside a transaction."""
    query = sql.SQL(statement).format(*map(sql.Identifier, names))
    libpq_url = _pg_url(server_url, drivername="postgresql")
    with psycopg.connect(libpq_url, autocommit=True) as connection:
        connection.execute(query)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """Superuser SQLAlchemy URL of the test PostgreSQL server (``TEST_DATABASE_URL``)."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        _unavailable("TEST_DATABASE_URL is not set")
    try:
        psycopg.connect(_pg_url(url, drivername="postgresql"), connect_timeout=3).close()
    except psycopg.OperationalError as error:
        _unavailable(f"PostgreSQL at {url} is unreachable: {error}")
    return url


@pytest.fixture(scope="session")
def postgres_template(postgres_server_url: str) -> Iterator[str]:
    """Name of a database migrated once per session, copied by every ``postgres_url``."""
    from db.migrate import upgrade

    _admin(postgres_server_url, DROP_DB, TEMPLATE_DB)
    _admin(postgres_server_url, "CREATE DATABASE {}", TEMPLATE_DB)
    upgrade(_pg_url(postgres_server_url, database=TEMPLATE_DB))
    yield TEMPLATE_DB
    _admin(postgres_server_url, DROP_DB, TEMPLATE_DB)


@pytest.fixture
def postgres_url(postgres_server_url: str, postgres_template: str) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, migrated PostgreSQL database, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:8]}"
    _admin(postgres_server_url, "CREATE DATABASE {} TEMPLATE {}", name, postgres_template)
    yield _pg_url(postgres_server_url, database=name)
    from db import listen

    listen.close_hub()  # its listener would log the dropped database as lost
    _admin(postgres_server_url, DROP_DB, name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """SQLAlchemy URL of a migrated SQLite file under the test's ``tmp_path``."""
    from db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'handson.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=list(BACKEND_FIXTURES))
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated database URL; tests using it run once per backend."""
    return request.getfixturevalue(BACKEND_FIXTURES[request.param])


@pytest.fixture(params=["flow", "batches"])
def strategy(request: pytest.FixtureRequest) -> str:
    """A scheduling strategy; tests using it run once with each."""
    return request.param


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the tests marked ``both_strategies`` once with each default scheduling strategy.

    Tests that name their strategy (the :func:`strategy` fixture) run once with each already.
    """
    marked = metafunc.definition.get_closest_marker("both_strategies")
    if marked and "strategy" not in metafunc.fixturenames:
        metafunc.parametrize("job_strategy", ["flow", "batches"], indirect=True)


@pytest.fixture(autouse=True)
def job_strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``JOB_STRATEGY``, the scheduling of jobs that name none: flow, or each in turn.

    Exported to the environment, so the processes a test starts and the settings the test
    kits build (``workerkit.fast_settings``) schedule the test's jobs with it.
    """
    value = getattr(request, "param", "flow")
    monkeypatch.setenv("JOB_STRATEGY", value)
    return value


@pytest.fixture
def processes(redis_url: str, postgres_url: str, tmp_path: Path) -> Iterator[Any]:
    """A :class:`processkit.Cluster`: our processes on the test servers, stopped after."""
    from processkit import Cluster

    cluster = Cluster(redis_url=redis_url, database_url=postgres_url, log_dir=tmp_path)
    yield cluster
    cluster.stop_all()
