"""What commands share: the settings in ``ctx.obj`` and setting up database and workers."""

from __future__ import annotations

import click
import dramatiq

from settings import Settings

pass_settings = click.make_pass_decorator(Settings)


def open_database(settings: Settings) -> None:
    """Bind the database; migrate it first in the embedded SQLite mode (zero setup)."""
    import db
    from db import migrate

    if settings.DATABASE_URL.startswith("sqlite"):
        migrate.upgrade(settings.DATABASE_URL)
    db.configure(settings.DATABASE_URL, db.PoolOptions.of(settings))


def open_workers(settings: Settings) -> dramatiq.Broker:
    """Configure database and broker for sending (and, embedded, running) messages."""
    open_database(settings)
    from workers import broker

    return broker.configure(settings)
