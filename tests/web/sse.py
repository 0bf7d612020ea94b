"""A small server-sent-events client for tests, over a raw HTTP connection."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Frame:
    """One received event (``comment`` set for a ``: ...`` comment line instead)."""

    event: str = "message"
    id: int | None = None
    data: str = ""
    comment: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Stream:
    """An open event stream: its HTTP status, headers and frames."""

    connection: http.client.HTTPConnection
    response: http.client.HTTPResponse
    frames: list[Frame] = field(default_factory=list)

    @property
    def status(self) -> int:
        return self.response.status

    def __iter__(self) -> Iterator[Frame]:
        """Yield frames as they arrive, until the server ends the stream."""
        current = Frame()
        lines: list[str] = []
        while True:
            raw = self.response.readline()
            if not raw:
                return
            line = raw.decode("utf-8").rstrip("\r\n")
            if line:
                lines.append(line)
                continue
            current = _parse(lines)
            lines = []
            if current is not None:
                self.frames.append(current)
                yield current

    def events(self, *, texts: bool = False) -> Iterator[Frame]:
        """Yield only real events (no comments, no bare ``retry:``).

        A running guide's ``guide_text`` events (no id, not stored) come only with
        ``texts``: whether a guide streams depends on how long it takes to write.
        """
        return (
            f for f in self if f.comment is None and f.data and (texts or f.event != "guide_text")
        )

    def close(self) -> None:
        self.connection.close()


def _parse(lines: list[str]) -> Frame | None:
    if not lines:
        return None
    frame = Frame()
    data: list[str] = []
    for line in lines:
        if line.startswith(":"):
            frame.comment = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            frame.event = value
        elif name == "id":
            frame.id = int(value)
        elif name == "data":
            data.append(value)
        elif name == "retry":
            frame.retry = int(value)
    frame.data = "\n".join(data)
    return frame


def open_stream(
    host: str, port: int, job_id: int, *, last_event_id: int | None = None, timeout: float = 60
) -> Stream:
    """Open ``GET /api/jobs/<job_id>/events``; return the stream once headers arrived."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    connection.request("GET", f"/api/jobs/{job_id}/events", headers=headers)
    return Stream(connection, connection.getresponse())
