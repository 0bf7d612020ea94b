"""flow scheduling: units released when ready, at most max_in_flight at once

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 18:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_READY = sa.text("status = 'waiting' AND step = 0 AND waiting_on <= 0")


def upgrade() -> None:
    # Jobs written before flow scheduling ran as barriers: they keep that strategy.
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("strategy", sa.String(length=16), nullable=False, server_default="batches")
        )
        batch_op.add_column(
            sa.Column("max_in_flight", sa.Integer(), nullable=False, server_default="5")
        )
        batch_op.add_column(
            sa.Column("in_flight", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute("UPDATE jobs SET max_in_flight = batch_size")

    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.alter_column("batch_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("unit", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("step", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("unit_mode", sa.String(length=16), nullable=False, server_default="group")
        )
        batch_op.add_column(
            sa.Column("waiting_on", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("frees_slot", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.create_index("ix_task_runs_job_unit", ["job_id", "unit", "step"], unique=False)
        batch_op.create_index(
            "ix_task_runs_ready",
            ["job_id", "unit"],
            unique=False,
            postgresql_where=_READY,
            sqlite_where=_READY,
        )

    op.create_table(
        "run_links",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("next_run_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["task_runs.id"],
            name=op.f("fk_run_links_run_id_task_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["next_run_id"],
            ["task_runs.id"],
            name=op.f("fk_run_links_next_run_id_task_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "next_run_id", name=op.f("pk_run_links")),
    )

    _release_pending_batches_as_units()


#: Jobs running when this migration runs were planned as barriers: each pending batch
#: becomes a unit of the engine, linked to every run of the batch before it (what the
#: batches strategy writes for a new job), and its rows are released by the engine.
_UNITS_OF_RUNNING_JOBS = (
    """
    UPDATE task_runs SET
      unit = (SELECT b."index" FROM batches b WHERE b.id = task_runs.batch_id),
      step = position,
      unit_mode = (SELECT b.mode FROM batches b WHERE b.id = task_runs.batch_id),
      frees_slot = (SELECT b.mode = 'group' OR task_runs.position = b.total - 1
                    FROM batches b WHERE b.id = task_runs.batch_id)
    WHERE job_id IN (SELECT id FROM jobs WHERE status = 'running')
    """,
    """
    INSERT INTO run_links (run_id, next_run_id)
    SELECT earlier.id, head.id
    FROM task_runs head
    JOIN batches pending ON pending.id = head.batch_id AND pending.status = 'pending'
    JOIN task_runs earlier ON earlier.job_id = head.job_id AND earlier.unit = head.unit - 1
    WHERE head.step = 0
    """,
    """
    UPDATE task_runs SET
      status = 'waiting',
      waiting_on = (SELECT count(*) FROM run_links l JOIN task_runs e ON e.id = l.run_id
                    WHERE l.next_run_id = task_runs.id AND e.status IN ('queued', 'running')),
      batch_id = NULL
    WHERE batch_id IN (SELECT id FROM batches WHERE status = 'pending')
    """,
    "DELETE FROM batches WHERE status = 'pending'",
    """
    UPDATE jobs SET
      total_batches = (SELECT count(*) FROM batches b WHERE b.job_id = jobs.id),
      in_flight = (
        SELECT count(*) FROM task_runs r JOIN batches b ON b.id = r.batch_id
        WHERE r.job_id = jobs.id AND b.mode = 'group' AND r.status IN ('queued', 'running')
      ) + (
        SELECT count(*) FROM batches b WHERE b.job_id = jobs.id AND b.mode = 'pipeline'
          AND b.status = 'running' AND b.done < b.total
      )
    WHERE status = 'running'
    """,
)


def _release_pending_batches_as_units() -> None:
    for statement in _UNITS_OF_RUNNING_JOBS:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("run_links")
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_task_runs_ready")
        batch_op.drop_index("ix_task_runs_job_unit")
        for column in ("frees_slot", "waiting_on", "unit_mode", "step", "unit"):
            batch_op.drop_column(column)
        batch_op.alter_column("batch_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for column in ("in_flight", "max_in_flight", "strategy"):
            batch_op.drop_column(column)
