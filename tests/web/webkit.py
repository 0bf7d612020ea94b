"""Web test kit: the app on a test database, served over HTTP by a real server in a thread."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server
from workerkit import Embedded, fast_settings

from web import create_app
from web.events import close_all_streams


def make_app(database_url: str, **overrides: Any) -> Flask:
    """Create the app in testing mode (no embedded worker of its own) on ``database_url``.

    ``overrides`` are settings fields or Flask config keys.
    """
    return create_app({"TESTING": True, **overrides}, settings=fast_settings(database_url))


@dataclass
class LiveServer:
    """The app served over HTTP by a threaded werkzeug server, on ``base_url``."""

    app: Flask
    server: BaseWSGIServer
    thread: threading.Thread
    embedded: Embedded | None

    @property
    def host(self) -> str:
        return str(self.server.host)

    @property
    def port(self) -> int:
        return int(self.server.port)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        close_all_streams()  # open streams end, so the server's threads can finish
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
        if self.embedded is not None:
            self.embedded.worker.stop()
            self.embedded.broker.close()


def serve(app: Flask, embedded: Embedded | None = None) -> LiveServer:
    """Serve ``app`` on a free port of 127.0.0.1 in a daemon thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    server.daemon_threads = True  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    return LiveServer(app, server, thread, embedded)


def ci() -> bool:
    """True when the ``CI`` variable says that every test dependency must be present."""
    return os.environ.get("CI", "").lower() not in {"", "0", "false"}
