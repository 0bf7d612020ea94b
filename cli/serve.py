"""``handson serve``: the web app with its embedded worker, for local use (``make run``)."""

from __future__ import annotations

import click

from cli.context import pass_settings
from settings import Settings


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=5000, show_default=True, help="Port to bind.")
@pass_settings
def serve_command(settings: Settings, host: str, port: int) -> None:
    """Serve the web app (development server; production uses the Procfile's gunicorn).

    In the embedded mode (no REDIS_URL) jobs run on worker threads of this process.
    """
    from cli.context import open_database
    from web import create_app

    open_database(settings)
    app = create_app(settings=settings)
    click.echo(f"Serving on http://{host}:{port}/ (Ctrl+C to stop)")
    app.run(host=host, port=port, threaded=True, use_reloader=False)
