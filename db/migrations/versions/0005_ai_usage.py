"""AI usage: tokens, latency, cost and prompt version per guide; token and cost totals per job

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 19:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_GUIDE_COLUMNS = (
    "prompt_version",
    "cost",
    "latency_ms",
    "tokens_estimated",
    "completion_tokens",
    "prompt_tokens",
    "model",
)
_JOB_COLUMNS = ("cost", "completion_tokens", "prompt_tokens")


def upgrade() -> None:
    with op.batch_alter_table("hands_on", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model", sa.String(length=100), nullable=True))
        batch_op.add_column(_counter("prompt_tokens"))
        batch_op.add_column(_counter("completion_tokens"))
        batch_op.add_column(
            sa.Column("tokens_estimated", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("latency_ms", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("cost", sa.Float(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("prompt_version", sa.String(length=40), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(_counter("prompt_tokens"))
        batch_op.add_column(_counter("completion_tokens"))
        batch_op.add_column(sa.Column("cost", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for column in _JOB_COLUMNS:
            batch_op.drop_column(column)
    with op.batch_alter_table("hands_on", schema=None) as batch_op:
        for column in _GUIDE_COLUMNS:
            batch_op.drop_column(column)


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), nullable=False, server_default="0")
