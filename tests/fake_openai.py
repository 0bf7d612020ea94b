"""A real local HTTP server speaking enough of the OpenAI chat-completions protocol.

Scripted: each request takes the next :class:`FakeResponse` from the script; every
request is recorded. A successful answer carries ``usage``; a request with
``"stream": true`` gets it as ``text/event-stream`` chunks (a few words each), with a
last chunk carrying ``usage`` when ``stream_options.include_usage`` asks for it.

Use it as ``with FakeOpenAI() as api: api.script([...])`` or from
a yield fixture with ``start()``/``stop()``; starting and stopping costs up to half a
second (``serve_forever``'s shutdown poll), so share one server and ``reset()`` it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
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
    """One request as the server received it (header names in lower case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: When it arrived (``time.time()``).
    at: float = dataclasses.field(default_factory=time.time)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


#: Prompt tokens the fake server reports by default (it does not tokenize).
PROMPT_TOKENS = 321


def usage_of(content: str, prompt_tokens: int = PROMPT_TOKENS) -> dict[str, int]:
    """Return the ``usage`` the fake server reports for an answer of ``content``."""
    completion_tokens = len(content.split()) + 7  # not a character count: tell them apart
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(
    content: str,
    *,
    model: str = "fake-model",
    usage: dict[str, int] | bool | None = True,
    delay_s: float = 0.0,
) -> FakeResponse:
    """Return a successful chat-completions answer carrying ``content``.

    ``usage``: True for :func:`usage_of` the content, a dict for those figures, None
    for an answer without ``usage`` (as some compatible servers send).
    """
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_764_806_400,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
    }
    if usage is True:
        body["usage"] = usage_of(content)
    elif usage:
        body["usage"] = usage
    return FakeResponse(200, body, delay_s=delay_s)


def stream_chunks(answer: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """Return ``answer`` (a completion) as the chunks a streaming server sends.

    Three words a chunk, then an empty one with ``finish_reason``, then (when asked)
    one with no choices and the ``usage``.
    """
    base = {key: answer.get(key) for key in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"
    choice = answer["choices"][0]
    content = choice["message"]["content"]
    words = re.findall(r"\s*\S+", content) or [""]
    words[-1] += content[len("".join(words)) :]  # trailing whitespace, in the last chunk
    pieces = ["".join(words[i : i + 3]) for i in range(0, len(words), 3)]
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        for piece in pieces
    ]
    chunks[0]["choices"][0]["delta"]["role"] = "assistant"
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage and answer.get("usage"):
        chunks.append({**base, "choices": [], "usage": answer["usage"]})
    return chunks


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
            recorded = RecordedRequest(
                "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
            )
            answer = api._answer(recorded)
            if answer.delay_s and api._stopping.wait(answer.delay_s):
                return
            if self.path != "/v1/chat/completions":
                answer = error(404, f"unknown path {self.path}")
            asked = _json_or_none(body)
            if asked.get("stream") and _streamable(answer):
                include_usage = bool((asked.get("stream_options") or {}).get("include_usage"))
                self._stream(stream_chunks(answer.body, include_usage))
                return
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

        def _stream(self, chunks: list[dict[str, Any]]) -> None:
            """Send ``chunks`` as server-sent events, then ``[DONE]``, and close."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in chunks:
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


def _json_or_none(body: bytes) -> dict[str, Any]:
    """Return the request's JSON object, or {} when it is not one."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _streamable(answer: FakeResponse) -> bool:
    """True for a successful completion with a message (others are sent as they are)."""
    body = answer.body
    return answer.status == 200 and isinstance(body, dict) and bool(body.get("choices"))
