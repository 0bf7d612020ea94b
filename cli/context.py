"""What commands share: the settings in ``ctx.obj`` and setting up database and workers."""

from __future__ import annotations

import click
import dramatiq

import errors
from settings import Settings

pass_settings = click.make_pass_decorator(Settings)

#: Exit code of a command refused because of how things stand (like a usage error).
RET_REFUSED = 2


class RefusedError(click.ClickException):
    """Raised when a command cannot run as things stand; the message says what to do."""

    exit_code = RET_REFUSED


#: Exit code of any other failure of the project's (the database is down...).
RET_FAILED = 1
#: The project's error families that mean "fix the input or wait": usage-like, exit 2.
REFUSED_FAMILIES = (errors.InvalidInputError, errors.NotFoundError, errors.ConflictError)


class ProjectGroup(click.Group):
    """A command group that turns the project's errors into a message and an exit code.

    Commands may still raise ``click.BadParameter`` to name the option at fault; any
    :class:`errors.HandsonError` they let through ends here, once for every command.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except errors.HandsonError as error:
            failure = click.ClickException(str(error))
            failure.exit_code = RET_REFUSED if isinstance(error, REFUSED_FAMILIES) else RET_FAILED
            raise failure from None


def open_database(settings: Settings) -> None:
    """Bind the database; migrate it first in the embedded SQLite mode (zero setup)."""
    import db
    from db import migrate

    if settings.DATABASE_URL.startswith("sqlite"):
        migrate.upgrade(settings.DATABASE_URL)
    db.configure(settings.DATABASE_URL, db.PoolOptions.of(settings))


def open_workers(settings: Settings) -> dramatiq.Broker:
    """Configure database and broker for sending (and, embedded, running) messages.

    In the embedded mode this process becomes the embedded worker of the database until
    the command ends (see :func:`workers.embedded.boot`), before anything is written.

    Raises:
      RefusedError: when another process runs the embedded worker of the database.
    """
    open_database(settings)
    from workers import broker

    configured = broker.configure(settings)
    if settings.embedded:
        become_embedded_worker(settings, click.get_current_context().command_path)
    return configured


def become_embedded_worker(
    settings: Settings, role: str, url: str | None = None, *, resume: bool = True
) -> None:
    """Hold the database's embedded lock until the command ends (first of all).

    With ``resume``, also re-dispatch the jobs a stopped process left running, on the
    broker configured now; without, the web app does that on its own broker.

    Raises:
      RefusedError: when another process holds it.
    """
    from workers import embedded, embedded_lock

    try:
        if resume:
            claim = embedded.boot(settings, role=role, url=url)
        else:
            claim = embedded_lock.claim(settings.DATABASE_URL, role=role, url=url)
    except embedded_lock.EmbeddedBusyError as error:
        raise RefusedError(str(error)) from None
    click.get_current_context().call_on_close(claim.release)
