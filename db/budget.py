"""The monthly AI budget while a job runs: what stops it, and why its tasks ended.

Submitting checks the estimate (``db.ai_spend.check_submit``); a job keeps the budget in
force when it was submitted (``jobs.ai_budget``), and stops releasing work once this
month's spend reaches it. The spend is read in the statement that locks the job's row to
release work (:data:`MONTH_SPEND` in ``db.release.FREE_SLOTS``): no statement more.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import orm

from db.ai_spend import month_start
from db.models import Job

__all__ = ["BUDGET_REACHED", "MONTH_SPEND", "month_start"]

#: The error a task never released gets when its job stops at the budget.
BUDGET_REACHED = "cancelled: monthly AI budget reached"

_spent = orm.aliased(Job)
#: The cost of the jobs created since ``month_start`` (a bound parameter).
MONTH_SPEND = (
    sa.select(sa.func.coalesce(sa.func.sum(_spent.cost), 0.0))
    .where(_spent.created_at >= sa.bindparam("month_start", type_=Job.created_at.type))
    .scalar_subquery()
)
