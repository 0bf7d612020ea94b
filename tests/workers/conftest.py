"""Worker-side fixtures: a real in-process worker on a fresh in-memory broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from workerkit import Embedded, start_embedded


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
