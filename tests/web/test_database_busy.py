"""A web process whose pooled connections all stay busy answers 503, never hangs or 500s."""

from __future__ import annotations

from webkit import make_app
from workerkit import make_project

import db
from db import jobs


def test_a_request_that_finds_the_pool_exhausted_gets_a_503_with_retry_after(postgres_url):
    # Given the app with a pool of one connection, held by someone else
    app = make_app(postgres_url, DATABASE_POOL_SIZE=1, DATABASE_POOL_TIMEOUT_S=0.3)
    job_id = jobs.create_job(
        make_project("a"), batch_size=5, max_batch_size=50, max_tasks=100
    ).job_id
    client = app.test_client()
    with db.get_engine().connect():
        # When a client asks for a job and for its event stream
        answer = client.get(f"/api/jobs/{job_id}")
        stream = client.get(f"/api/jobs/{job_id}/events")

    # Then both are told to retry in a moment, in the API's error shape
    for response in (answer, stream):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.get_json()["error"]["code"] == "unavailable"
        assert "retry" in response.get_json()["error"]["message"]

    # And once the connection is free again, the same request works
    assert client.get(f"/api/jobs/{job_id}").status_code == 200
