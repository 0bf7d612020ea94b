"""jobs.ready_waiting: whether a ready unit may wait for a free slot

An outcome that frees a slot and makes nothing ready reads this flag on the job's row
(which it locks anyway) instead of querying for ready units.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Not in batch mode: on SQLite that copies the table, and dropping the old jobs table
    # would cascade to every row that refers to it.
    op.add_column(
        "jobs", sa.Column("ready_waiting", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    # A running job may have ready units waiting: its next outcome looks (once).
    op.execute("UPDATE jobs SET ready_waiting = TRUE WHERE status = 'running'")


def downgrade() -> None:
    op.drop_column("jobs", "ready_waiting")
