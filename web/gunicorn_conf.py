"""Gunicorn settings for the Procfile's web process (``--config python:web.gunicorn_conf``).

Every open event stream holds one thread, so the gthread worker runs many threads: a
stream costs a thread's stack and one queue, and no work while idle. On SIGTERM the
worker first ends every open stream (clients reconnect elsewhere with ``Last-Event-ID``),
then gunicorn finishes the other requests and exits within ``graceful_timeout``.

Threads are not database connections: an idle stream holds none (the process's one
LISTEN connection wakes them all), and a request holds one only while it reads or
writes. Each gunicorn worker pools ``DATABASE_WEB_POOL_SIZE`` connections, however many
threads it runs; a request that finds them all busy waits, then gets a 503.
"""

from __future__ import annotations

import signal
from typing import Any

#: One thread per concurrent request; ≥ 200 event streams plus page and API requests.
worker_class = "gthread"
threads = 256
#: Threads kept for pages and API calls: a worker refuses event streams beyond the rest.
reserved_threads = 32
#: Open connections per worker (streams + keep-alive) before it stops accepting.
worker_connections = 1000
#: Seconds a stopping worker lets ordinary requests finish.
graceful_timeout = 20
#: Seconds of keep-alive between requests on one connection.
keepalive = 5
#: Logs to stdout/stderr (12-factor).
accesslog = "-"
errorlog = "-"


def post_worker_init(worker: Any) -> None:
    """Size the worker's database pool and cap its event streams; end them on SIGTERM."""
    app = getattr(worker, "wsgi", None)
    if hasattr(app, "config"):
        app.config["MAX_STREAMS"] = max(1, worker.cfg.threads - reserved_threads)
        _claim_connections(app.config.get("HANDSON"))
    previous = signal.getsignal(signal.SIGTERM)

    def _on_sigterm(signum: int, frame: Any) -> None:
        from web.events import close_all_streams

        close_all_streams()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, _on_sigterm)


def _claim_connections(settings: Any) -> None:
    """Pool what the requests need (``DATABASE_WEB_POOL_SIZE``), not one per thread."""
    if settings is not None:
        from db import claim

        claim("web", settings.DATABASE_WEB_POOL_SIZE)
