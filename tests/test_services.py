"""The service fixtures of ``conftest.py`` give each test its own clean Redis and databases."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

#: Databases seen by earlier tests of this module, in order.
_seen_databases: list[str] = []


def _table_names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_redis_answers_on_the_test_database(redis_server):
    # Given the test Redis server
    with redis_server.client() as client:
        # Then it answers, on database 15, and starts empty
        assert client.ping()
        assert client.connection_pool.connection_kwargs["db"] == 15
        assert client.dbsize() == 0
        # When a test writes a key
        client.set("handson:leftover", "1")


def test_redis_keys_of_an_earlier_test_are_gone(redis_server):
    # Given the previous test left a key behind
    with redis_server.client() as client:
        # Then the fixture flushed it
        assert client.get("handson:leftover") is None
        assert client.dbsize() == 0


def test_redis_restart_brings_back_an_empty_server(redis_server):
    # Given a key in Redis
    with redis_server.client() as client:
        client.set("handson:key", "1")
    # When the server restarts
    redis_server.restart()
    # Then it answers again, without the key (nothing is persisted)
    with redis_server.client() as client:
        assert client.ping()
        assert client.get("handson:key") is None


def test_postgres_url_is_a_migrated_database_of_its_own(postgres_url):
    # Given a fresh test database
    name = sa.make_url(postgres_url).database
    assert name.startswith("test_")
    # Then it holds the migrated schema, copied from the template
    assert "alembic_version" in _table_names(postgres_url)
    # When a test adds a table
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE scratch (id integer)"))
    engine.dispose()
    _seen_databases.append(name)


def test_postgres_url_does_not_see_an_earlier_test_database(postgres_url, postgres_server_url):
    # Given the previous test created a table in its database
    if not _seen_databases:
        pytest.skip("needs test_postgres_url_is_a_migrated_database_of_its_own to run first")
    # Then this test gets another database, without that table
    assert sa.make_url(postgres_url).database != _seen_databases[-1]
    assert "scratch" not in _table_names(postgres_url)
    # And the earlier database was dropped
    engine = sa.create_engine(postgres_server_url)
    with engine.connect() as connection:
        names = connection.execute(sa.text("SELECT datname FROM pg_database")).scalars().all()
    engine.dispose()
    assert _seen_databases[-1] not in names


def test_sqlite_url_is_a_migrated_file(request, tmp_path: Path):
    pytest.importorskip("db.migrate")
    # Given the SQLite URL of this test
    sqlite_url = request.getfixturevalue("sqlite_url")
    path = Path(sa.make_url(sqlite_url).database)
    # Then it is a migrated file under tmp_path
    assert path.parent == tmp_path
    assert path.is_file()
    assert "alembic_version" in _table_names(sqlite_url)


def test_database_url_runs_once_per_backend(database_url, request):
    # Given the database of this parametrization
    backend = request.node.callspec.params["database_url"]
    # Then it is of that backend and migrated
    assert sa.make_url(database_url).get_backend_name() == backend
    assert "alembic_version" in _table_names(database_url)
