"""Web fixtures: the app on a test database, its client, and a real HTTP server in a thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from webkit import LiveServer, ci, make_app, serve
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


#: Debian's Chromium; Playwright's own browser downloads are not used.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium, or a skip (a failure in CI) when it or Playwright is missing."""
    try:
        from playwright import sync_api as playwright_api
    except ImportError:  # pragma: no cover - installed by `make test`
        if ci():
            raise
        pytest.skip("playwright is not installed")
    if not CHROMIUM.exists():
        if ci():
            pytest.fail(f"{CHROMIUM} is missing (CI is set)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser page that collects console errors in ``page.console_errors``."""
    context = browser.new_context(viewport={"width": 1100, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.console_errors = errors
    yield page
    context.close()
