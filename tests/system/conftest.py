"""System-test fixtures: a cluster of real processes on real Redis and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from processkit import Cluster
from workerkit import fast_settings

from db import listen, projects
from samples import load_sample
from workers import broker as worker_setup


@pytest.fixture
def cluster(processes: Cluster, redis_url: str, postgres_url: str) -> Iterator[Cluster]:
    """Processes of ours on the test servers; this process sends and listens as a client."""
    worker_setup.configure(fast_settings(postgres_url, REDIS_URL=redis_url))
    yield processes
    processes.stop_all()
    listen.close_hub()


@pytest.fixture
def sample_project_id(cluster: Cluster) -> int:
    """The 62-task sample project, stored."""
    return projects.create_project(projects.parse_project(load_sample(), max_tasks=1000))
