"""``handson serve``: the web app with its embedded worker, for local use (``make run``)."""

from __future__ import annotations

import errno
import socket

import click
from werkzeug.serving import BaseWSGIServer, make_server, select_address_family

from cli.context import RefusedError, pass_settings
from settings import Settings


def _bind(host: str, port: int) -> BaseWSGIServer:
    """Bind the server's socket (the app is set once it exists).

    Raises:
      RefusedError: when the port is taken or may not be used.
    """
    try:
        # Bound here, not by werkzeug (which would print its own advice and exit 1), and
        # before the app is created: a refused start resumes and writes nothing.
        listener = socket.create_server((host, port), family=select_address_family(host, port))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            reason = f"Port {port} is in use on {host} (another `make run`?)"
        else:
            reason = f"Cannot listen on {host}:{port} ({error.strerror})"
        raise RefusedError(
            f"{reason}: stop the program that uses it, or pick another port:"
            f" `PORT={port + 1} make run` or `handson serve --port {port + 1}`."
        ) from None
    with listener:  # werkzeug serves a duplicate of its descriptor
        return make_server(host, port, None, threaded=True, fd=listener.fileno())  # type: ignore[arg-type]


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port [default: PORT, 5000]."
)
@pass_settings
def serve_command(settings: Settings, host: str, port: int | None) -> None:
    """Serve the web app (development server; production uses the Procfile's gunicorn).

    In the embedded mode (no REDIS_URL) jobs run on worker threads of this process, the
    only one that may run them for its database; it resumes the jobs that a stopped one
    left running. Exits 2, before serving, when the port or the database is taken.
    """
    from cli.context import become_embedded_worker, open_database
    from web import create_app

    port = settings.PORT if port is None else port
    url = f"http://{host}:{port}/"
    open_database(settings)
    if settings.embedded:
        # The app resumes abandoned jobs, once its broker exists.
        become_embedded_worker(settings, "handson serve", url, resume=False)
    server = _bind(host, port)
    server.app = create_app(settings=settings)
    click.echo(f"Serving on {url} (Ctrl+C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("Stopped.")
    finally:
        server.server_close()
