"""The API fuzzed from its own description (docs/openapi.yaml), on SQLite and PostgreSQL.

Schemathesis generates requests for every operation, valid ones and invalid ones, and
sends them to the real app (in process, through WSGI) on a real database holding a
project, a finished job and a guide. Every response must be a 2xx-4xx (never a 5xx)
and match the description: a documented status, its content type, its headers and
its body schema. The number of examples is bounded so the suite stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from webkit import make_app
from workerkit import make_project

from db import control, guides, jobs

SPEC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
#: Examples per operation (and per database): enough to find a class of bug, quick.
MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

schema = schemathesis.openapi.from_path(SPEC)


@pytest.fixture
def fuzzed_app(database_url: str) -> Any:
    """The app on a database with a project, a finished (cancelled) job and one guide.

    No job is left running: a stream of a running job would never end in a WSGI call.
    """
    app = make_app(database_url, PROPAGATE_EXCEPTIONS=False)
    project_id = make_project("repo", {"key": "api", "title": "API", "depends_on": ["repo"]})
    job_id = jobs.create_job(project_id, batch_size=2, max_batch_size=50, max_tasks=10).job_id
    control.cancel_job(job_id)
    run_id = jobs.snapshot(job_id)["batches"][0]["runs"][0]["id"]
    guides.save_guide(run_id, "# Repo\n\nDone, with `code`.", "test")
    return app


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_api_answers_as_it_is_described(case: Any, fuzzed_app: Any) -> None:
    case.call_and_validate(app=fuzzed_app, checks=CHECKS)
