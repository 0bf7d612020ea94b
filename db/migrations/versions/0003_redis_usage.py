"""redis usage

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 17:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "redis_usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("process_kind", sa.String(length=32), nullable=False),
        sa.Column("command", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redis_usage")),
    )
    with op.batch_alter_table("redis_usage", schema=None) as batch_op:
        batch_op.create_index("ix_redis_usage_recorded_at", ["recorded_at"], unique=False)
        batch_op.create_index("ix_redis_usage_job_id", ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("redis_usage", schema=None) as batch_op:
        batch_op.drop_index("ix_redis_usage_job_id")
        batch_op.drop_index("ix_redis_usage_recorded_at")
    op.drop_table("redis_usage")
