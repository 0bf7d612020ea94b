"""``handson db ...``: database maintenance."""

from __future__ import annotations

import click

from cli.context import pass_settings
from settings import Settings


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@pass_settings
def upgrade_command(settings: Settings, revision: str) -> None:
    """Apply database migrations (the Procfile's release phase)."""
    from db import migrate

    migrate.upgrade(settings.DATABASE_URL, revision)
    click.echo(f"Database at revision {migrate.current(settings.DATABASE_URL)}.")
