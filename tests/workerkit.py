"""Test kit for the worker side: fast settings, an embedded worker that records enqueues."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker

from db import projects
from settings import Settings
from workers import broker as worker_setup
from workers.embedded import EmbeddedWorker


def fast_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for tests: the given database, scripted generator, quick retries."""
    values: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "GENERATOR": "scripted_generator:factory",
        "MAX_RETRIES": 1,
        "MIN_BACKOFF_MS": 10,
        "MAX_BACKOFF_MS": 50,
        "QUEUE_NAME": "handson-test",
        # The test's default scheduling (conftest's ``job_strategy``), as a deployment sets it.
        "JOB_STRATEGY": default_strategy(),
    }
    values.update(overrides)
    return Settings(**values)


@dataclasses.dataclass
class Embedded:
    """A configured in-memory broker, its worker threads, and what was enqueued on it."""

    settings: Settings
    broker: StubBroker
    worker: EmbeddedWorker
    enqueued: list[dramatiq.Message[Any]]


class _RecordEnqueues(dramatiq.Middleware):
    """Keeps every message the broker enqueues, so tests can count dispatches."""

    def __init__(self, sink: list[dramatiq.Message[Any]]) -> None:
        self.sink = sink

    def before_enqueue(self, broker: dramatiq.Broker, message: Any, delay: Any) -> None:
        self.sink.append(message)


def start_embedded(database_url: str, threads: int = 4, **overrides: Any) -> Embedded:
    """Configure the worker side on a fresh in-memory broker and start worker threads."""
    settings = fast_settings(database_url, **overrides)
    broker = worker_setup.build_broker(settings)
    enqueued: list[dramatiq.Message[Any]] = []
    broker.add_middleware(_RecordEnqueues(enqueued))
    worker_setup.configure(settings, broker=broker)
    embedded = Embedded(
        settings, broker, EmbeddedWorker(broker, threads=threads, timeout_ms=100), enqueued
    )
    embedded.worker.start()
    return embedded


def default_strategy() -> str:
    """The scheduling of the test's jobs (conftest's ``job_strategy``, as ``JOB_STRATEGY``)."""
    return os.environ.get("JOB_STRATEGY", "flow")


def submit(project_id: int, batch_size: int = 5, **options: Any) -> int:
    """Submit a job through the dispatch service, scheduled with the test's strategy."""
    from workers import dispatch

    options.setdefault("strategy", default_strategy())
    return dispatch.submit(
        project_id, batch_size=batch_size, max_batch_size=50, max_tasks=1000, **options
    )


def make_project(*tasks: dict[str, Any] | str, name: str = "Test project") -> int:
    """Store a project; a task is a dict in the import format or just a key."""
    data = {
        "name": name,
        "tasks": [{"key": t, "title": t.title()} if isinstance(t, str) else t for t in tasks],
    }
    return projects.create_project(projects.parse_project(data, max_tasks=10_000))
