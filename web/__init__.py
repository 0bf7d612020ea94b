"""The Flask app factory."""

from __future__ import annotations

import atexit
import dataclasses
import logging
from typing import Any

from flask import Flask

from settings import Settings, get_settings

logger = logging.getLogger(__name__)


def create_app(
    overrides: dict[str, Any] | None = None, *, settings: Settings | None = None
) -> Flask:
    """Create the web app.

    Parameters:
      overrides: settings fields (``DATABASE_URL``...) and Flask config keys to override.
      settings: the settings to start from (default: read from the environment).
    """
    overrides = dict(overrides or {})
    settings = settings or get_settings()
    known = {field.name for field in dataclasses.fields(Settings)}
    settings = settings.replace(**{k: v for k, v in overrides.items() if k in known})

    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=settings.SECRET_KEY or "embedded-dev-only",
        MAX_CONTENT_LENGTH=settings.MAX_CONTENT_LENGTH,
        HANDSON=settings,
    )
    app.config.update({k: v for k, v in overrides.items() if k not in known})

    from workers import broker as worker_setup

    broker = worker_setup.configure(settings)
    if settings.LOAD_SAMPLE:
        _load_sample_once(settings)
    if settings.embedded and not app.config.get("TESTING"):
        _start_embedded_worker(broker, settings)

    from web import views

    app.register_blueprint(views.bp)
    return app


def _load_sample_once(settings: Settings) -> None:
    from db import projects
    from samples import load_sample

    if projects.count_projects() == 0:
        project_id = projects.create_project(
            projects.parse_project(load_sample(), max_tasks=settings.MAX_TASKS)
        )
        logger.info("Loaded the sample project as project %d.", project_id)


def _start_embedded_worker(broker: Any, settings: Settings) -> None:
    from workers.embedded import EmbeddedWorker

    worker = EmbeddedWorker(broker, threads=settings.EMBEDDED_WORKER_THREADS).start()
    atexit.register(worker.stop)
