"""task messages waiting for an AI call slot, woken when one frees

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 21:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ai_waiters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["task_runs.id"],
            name=op.f("fk_ai_waiters_run_id_task_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_waiters")),
        sa.UniqueConstraint("run_id", name=op.f("uq_ai_waiters_run_id")),
    )
    op.create_index("ix_ai_waiters_name", "ai_waiters", ["name", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ai_waiters_name", table_name="ai_waiters")
    op.drop_table("ai_waiters")
