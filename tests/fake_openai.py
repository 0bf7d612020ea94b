"""A real local HTTP server speaking enough of the OpenAI chat-completions protocol.

Scripted: each request takes the next :class:`FakeResponse` from the script; every
request is recorded.  Use it as ``with FakeOpenAI() as api: api.script([...])`` or from
a yield fixture with ``start()``/``stop()``; starting and stopping costs up to half a
second (``serve_forever``'s shutdown poll), so share one server and ``reset()`` it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass
class FakeResponse:
    """One scripted answer: status, body (dict → JSON), headers, delay before answering."""

    status: int = 200
    body: dict[str, Any] | str = ""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay_s: float = 0.0


@dataclasses.dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: When it arrived (``time.time()``).
    at: float = dataclasses.field(default_factory=time.time)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def completion(content: str, *, model: str = "fake-model") -> FakeResponse:
    """Return a successful chat-completions answer carrying ``content``."""
    return FakeResponse(
        200,
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
        },
    )


def error(status: int, message: str, **headers: str) -> FakeResponse:
    """Return an OpenAI-style error answer (``{"error": {"message": ...}}``)."""
    body = {"error": {"message": message, "type": "fake_error", "code": None}}
    return FakeResponse(status, body, {k.replace("_", "-"): v for k, v in headers.items()})


class FakeOpenAI:
    """Scripted chat-completions server on 127.0.0.1, an ephemeral port, in a thread."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        #: Requests received and not answered yet, and the most there ever were at once.
        self.in_flight = 0
        self.peak_in_flight = 0
        self._script: collections.deque[FakeResponse] = collections.deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the API, ending in ``/v1``."""
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, responses: list[FakeResponse]) -> None:
        """Queue ``responses``; once they are used up the server answers 500."""
        with self._lock:
            self._script.extend(responses)

    def reset(self) -> None:
        """Forget recorded requests and unused scripted responses (reuse across tests)."""
        with self._lock:
            self.requests.clear()
            self._script.clear()
            self.in_flight = self.peak_in_flight = 0

    def start(self) -> FakeOpenAI:
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        # Wakes handlers still delaying a "slow" answer, so shutdown is immediate.
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _answer(self, recorded: RecordedRequest) -> FakeResponse:
        with self._lock:
            self.requests.append(recorded)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            if self._script:
                return self._script.popleft()
        return error(500, "the fake server has no scripted response left")

    def _answering(self) -> None:
        with self._lock:
            self.in_flight -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out hangs up before a slow answer: expected, stay quiet.
        pass


def _handler_for(api: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            recorded = RecordedRequest("POST", self.path, dict(self.headers.items()), body)
            answer = api._answer(recorded)
            if answer.delay_s and api._stopping.wait(answer.delay_s):
                return
            if self.path != "/v1/chat/completions":
                answer = error(404, f"unknown path {self.path}")
            payload = answer.body if isinstance(answer.body, str) else json.dumps(answer.body)
            data = payload.encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def send_response(self, code: int, message: str | None = None) -> None:
            api._answering()  # its delay is over: no longer in flight at the server
            super().send_response(code, message)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler
