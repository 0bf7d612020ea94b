"""Worker-side fixtures: a real in-process worker on a fresh in-memory broker, and the
Redis tests' event log and command meter."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_kit import CommandMeter
from workerkit import Embedded, start_embedded

from workers.generators import OfflineGenerator


@pytest.fixture
def embedded_factory(database_url: str) -> Iterator[Callable[..., Embedded]]:
    """Return a function starting an embedded worker with settings overrides."""
    started: list[Embedded] = []

    def start(threads: int = 4, **overrides: Any) -> Embedded:
        started.append(start_embedded(database_url, threads, **overrides))
        return started[-1]

    yield start
    for embedded in started:
        embedded.worker.stop()
        embedded.broker.close()


@pytest.fixture
def embedded(embedded_factory: Callable[..., Embedded]) -> Embedded:
    """An embedded worker with the default test settings."""
    return embedded_factory()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """The file the recording actors of ``redis_kit`` append their events to."""
    return tmp_path / "events.jsonl"


@pytest.fixture
def meter(redis_url: str, tmp_path: Path) -> Iterator[CommandMeter]:
    """Records every command the test Redis receives during the test."""
    recording = CommandMeter(redis_url, tmp_path / "monitor.log")
    yield recording
    recording.stop()


@pytest.fixture
def generated(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Count the generator's calls per task key."""
    calls: collections.Counter[str] = collections.Counter()
    original = OfflineGenerator.generate

    def counting(self: OfflineGenerator, request: Any, **options: Any) -> Any:
        calls[request.task_key] += 1
        return original(self, request, **options)

    monkeypatch.setattr(OfflineGenerator, "generate", counting)
    return calls
