"""The Flask app factory."""

from __future__ import annotations

import atexit
import dataclasses
import datetime as dt
import functools
import logging
import os
import secrets
import tempfile
from typing import Any

from flask import Flask

from settings import Settings, get_settings

logger = logging.getLogger(__name__)


def create_app(
    overrides: dict[str, Any] | None = None, *, settings: Settings | None = None
) -> Flask:
    """Create the web app: pages, JSON API, event streams, health check.

    Parameters:
      overrides: settings fields (``DATABASE_URL``...) and Flask config keys to override.
      settings: the settings to start from (default: read from the environment).

    Raises:
      web.security.SecretKeyMissingError: when ``SECRET_KEY`` is unset outside debug,
        testing and the embedded mode.
    """
    from web import security

    overrides = dict(overrides or {})
    settings = settings or get_settings()
    known = {field.name for field in dataclasses.fields(Settings)}
    settings = settings.replace(**{k: v for k, v in overrides.items() if k in known})

    app = Flask(__name__)
    app.config.update({k: v for k, v in overrides.items() if k not in known})
    relaxed = bool(app.debug or app.testing)
    configured = settings.SECRET_KEY
    if not configured and settings.embedded and not app.testing:
        configured = _stored_secret_key(settings.DATABASE_URL)
    app.config.update(
        SECRET_KEY=security.secret_key(
            configured=configured, embedded=settings.embedded, relaxed=relaxed
        ),
        MAX_CONTENT_LENGTH=settings.MAX_CONTENT_LENGTH,
        HANDSON=settings,
    )

    from workers import broker as worker_setup

    broker = worker_setup.configure(settings)
    if settings.LOAD_SAMPLE:
        _load_sample_once(settings)
    if settings.embedded and not app.testing:
        _start_embedded_worker(broker, settings)
    elif not app.testing:
        _start_usage_flusher("web")

    _register(app)
    return app


def _register(app: Flask) -> None:
    from web import api, errors, events, health, inputs, security, views

    app.url_map.converters["id"] = inputs.IdConverter
    security.init_app(app)
    app.jinja_env.filters["when"] = when
    for blueprint in (errors.bp, views.bp, api.bp, events.bp, health.bp):
        app.register_blueprint(blueprint)


def when(iso: str | None) -> str:
    """Return an ISO timestamp as ``2026-12-04 18:13:31 UTC`` (a template filter)."""
    if not iso:
        return ""
    moment = dt.datetime.fromisoformat(iso).astimezone(dt.UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _load_sample_once(settings: Settings) -> None:
    from db import projects
    from samples import load_sample

    if projects.count_projects() == 0:
        project_id = projects.create_project(
            projects.parse_project(load_sample(), max_tasks=settings.MAX_TASKS)
        )
        logger.info("Loaded the sample project as project %d.", project_id)


def _stored_secret_key(database_url: str) -> str | None:
    """Return the embedded mode's secret key, made once and kept next to its database.

    Kept in a file readable by its owner only (mode 0600), so that sessions and the
    forms open in browsers survive a restart of ``make run``. None for an in-memory
    database (a key per process then).
    """
    from workers.embedded_lock import state_path

    path = state_path(database_url, ".secret_key")
    if path is None:
        return None
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret_key")  # mode 0600
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32))
    try:
        os.link(temporary, path)  # atomic, and refuses to replace a key made meanwhile
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    return path.read_text().strip()


def _start_embedded_worker(broker: Any, settings: Settings) -> None:
    """Run worker threads and the scheduler's duties (reconciler...) in this process.

    In the embedded mode no other process shares the in-memory broker, so the jobs of
    this app are run, and repaired, here.
    """
    from workers import embedded
    from workers.embedded import EmbeddedWorker
    from workers.scheduler import start_background

    # Before the threads start: the work it resumes waits in the in-memory queue.
    claim = embedded.boot(settings, role="the web app")
    atexit.register(claim.release)
    worker = EmbeddedWorker(broker, threads=settings.EMBEDDED_WORKER_THREADS).start()
    scheduler = start_background(settings)
    atexit.register(worker.stop)
    atexit.register(scheduler.shutdown, wait=False)


@functools.cache
def _start_usage_flusher(process_kind: str) -> None:
    """Store the Redis commands this process sends (job dispatches), once a minute.

    Once per process, however many apps it creates: the meter is the process's.
    """
    from workers.middleware.metering import UsageFlusher

    atexit.register(UsageFlusher(process_kind).start().stop)
