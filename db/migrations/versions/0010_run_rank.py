"""task_runs.rank: each run's longest chain of tasks left, sent with its message

A priority-aware broker fetches higher-ranked messages first, so the long chains of
many jobs start early. Runs stored before get 0 (unranked: the lowest).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 02:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Not in batch mode: on SQLite that copies the table, and dropping the old task_runs
    # table would cascade to every row that refers to it.
    op.add_column(
        "task_runs", sa.Column("rank", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )


def downgrade() -> None:
    op.drop_column("task_runs", "rank")
