"""provider limits across worker processes: a shared pause, call slots, per-minute slots

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 19:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ai_limits",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_ai_limits")),
    )
    op.create_table(
        "ai_slots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_slots")),
        sa.UniqueConstraint("name", "kind", "n", name=op.f("uq_ai_slots_name")),
    )
    op.create_index("ix_ai_slots_free", "ai_slots", ["name", "kind", "until"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ai_slots_free", table_name="ai_slots")
    op.drop_table("ai_slots")
    op.drop_table("ai_limits")
