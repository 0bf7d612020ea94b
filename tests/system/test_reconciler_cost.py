"""An idle reconciler pass costs a handful of SQL statements and no Redis command."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import event
from workerkit import default_strategy, fast_settings, make_project

import db
from workers import broker as worker_setup
from workers import dispatch


def redis_calls(client: redis.Redis) -> int:
    """Commands the server has processed, the INFO calls that read it excluded."""
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


@pytest.mark.both_strategies
def test_idle_reconciler_passes_send_no_redis_command(redis_url, postgres_url):
    # Given a running job with nothing stalled, on Redis and PostgreSQL
    worker_setup.configure(fast_settings(postgres_url, REDIS_URL=redis_url))
    dispatch.submit(
        make_project("a", "b"),
        batch_size=5,
        max_batch_size=50,
        max_tasks=10,
        strategy=default_strategy(),
    )
    statements: list[str] = []
    event.listen(db.get_engine(), "before_cursor_execute", lambda *a: statements.append(a[2]))
    client = redis.Redis.from_url(redis_url)
    before = redis_calls(client)

    # When the reconciler makes 10 passes
    for _ in range(10):
        assert dispatch.repair(stall_timeout_s=600) == []

    # Then Redis saw nothing, and each pass cost three SELECTs (psycopg's implicit
    # BEGIN and the COMMIT are not cursor statements)
    assert redis_calls(client) == before
    assert len(statements) == 10 * 3
    assert all(statement.startswith("SELECT") for statement in statements)
