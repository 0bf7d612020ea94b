"""The Flask app factory."""

from __future__ import annotations

import atexit
import dataclasses
import datetime as dt
import functools
import logging
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
    app.config.update(
        SECRET_KEY=security.secret_key(
            configured=settings.SECRET_KEY, embedded=settings.embedded, relaxed=relaxed
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
    from web import api, errors, events, health, security, views

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


def _start_embedded_worker(broker: Any, settings: Settings) -> None:
    """Run worker threads and the scheduler's duties (reconciler...) in this process.

    In the embedded mode no other process shares the in-memory broker, so the jobs of
    this app are run, and repaired, here.
    """
    from workers.embedded import EmbeddedWorker
    from workers.scheduler import start_background

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
