"""Migration 0005 gives guides and jobs their AI usage columns, matching the models, both ways."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from db import migrate
from db.models import Base

GUIDE_USAGE = {
    "model",
    "prompt_tokens",
    "completion_tokens",
    "tokens_estimated",
    "latency_ms",
    "cost",
    "prompt_version",
}
JOB_USAGE = {"prompt_tokens", "completion_tokens", "cost"}


def _columns(url: str, table: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return {column["name"] for column in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def _column_differences(url: str) -> list[object]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    return [diff for diff in diffs if isinstance(diff, tuple) and "column" in diff[0]]


def test_0005_adds_the_usage_columns_the_models_declare_and_removes_them_on_downgrade(
    database_url: str,
):
    # Given a database migrated to head
    assert (migrate.current(database_url) or "") >= "0005"
    assert _columns(database_url, "hands_on") >= GUIDE_USAGE
    assert _columns(database_url, "jobs") >= JOB_USAGE
    # Then no column of the models is missing or extra
    assert _column_differences(database_url) == []

    # When it is downgraded to 0004, then upgraded again
    command.downgrade(migrate.alembic_config(database_url), "0004")
    assert not GUIDE_USAGE & _columns(database_url, "hands_on")
    assert not JOB_USAGE & _columns(database_url, "jobs")
    migrate.upgrade(database_url)
    assert _columns(database_url, "hands_on") >= GUIDE_USAGE
