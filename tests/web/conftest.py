"""Web fixtures: the app on a test database, its client, and a real HTTP server in a thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from webkit import LiveServer, make_app, serve
from workerkit import start_embedded


@pytest.fixture
def app(sqlite_url: str) -> Flask:
    """The app on a fresh SQLite database, without workers (jobs stay queued)."""
    return make_app(sqlite_url)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of :func:`app`."""
    return app.test_client()


@pytest.fixture
def live_factory() -> Iterator[Callable[..., LiveServer]]:
    """Return ``start(database_url, worker=True, **settings)`` serving the app over HTTP.

    With ``worker``, an embedded worker (in-memory broker, threads of this process) runs
    the jobs; ``settings`` go to the worker's settings (``GENERATOR_LATENCY_MS``...).
    """
    started: list[LiveServer] = []

    def start(database_url: str, *, worker: bool = True, **settings: Any) -> LiveServer:
        app = make_app(database_url, **settings)
        # After create_app, which configures its own broker: the worker's broker wins.
        embedded = start_embedded(database_url, **settings) if worker else None
        started.append(serve(app, embedded))
        return started[-1]

    yield start
    for live in started:
        live.stop()
