"""AI spend for ``handson budget``: tokens and cost of recent jobs, by model, this month.

Totals come from the jobs' own totals (moved with each outcome, never replaced), by the
time each job was created; the split by model comes from the guides written in the
window, as stored now (a guide written again later counts only its latest call).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

import errors
from db.engine import session_scope
from db.models import HandsOn, Job, utcnow

#: Days a month is projected to, as for the Redis commands.
MONTH_DAYS = 30
#: Tokens a guide is assumed to take before any guide has been metered (a typical
#: hands-on guide's prompt, with dependency guides, and its answer).
DEFAULT_GUIDE_PROMPT_TOKENS = 1_500
DEFAULT_GUIDE_COMPLETION_TOKENS = 800
#: Latest metered guides whose average cost estimates a new job's guides.
RECENT_GUIDES = 200


class BudgetExceededError(errors.ConflictError):
    """Raised when a job's estimated AI cost would pass what is left of the monthly budget."""

    code = "budget_exceeded"


@dataclasses.dataclass(frozen=True)
class Cap:
    """The monthly AI budget and the prices that estimate a guide before any is metered."""

    monthly_budget: float
    input_per_mtok: float
    output_per_mtok: float

    @property
    def default_guide_cost(self) -> float:
        """The assumed cost of a guide when none has been metered yet."""
        return (
            DEFAULT_GUIDE_PROMPT_TOKENS * self.input_per_mtok
            + DEFAULT_GUIDE_COMPLETION_TOKENS * self.output_per_mtok
        ) / 1e6


def cap_of(settings: Any) -> Cap | None:
    """Return the cap of ``settings`` (``AI_MONTHLY_BUDGET``, ``AI_PRICE_*``); None: no cap."""
    if settings.AI_MONTHLY_BUDGET is None:
        return None
    return Cap(
        settings.AI_MONTHLY_BUDGET,
        settings.AI_PRICE_INPUT_PER_MTOK,
        settings.AI_PRICE_OUTPUT_PER_MTOK,
    )


_recent = (
    sa.select(HandsOn.cost)
    .where(HandsOn.model.is_not(None))
    .order_by(HandsOn.updated_at.desc())
    .limit(RECENT_GUIDES)
    .subquery()
)
_spent = orm.aliased(Job)  # aliased: it also rides in an UPDATE of jobs (db.release)
#: The cost of the jobs created since ``month_start`` (a bound parameter): this month's
#: spend, as the cap at submit and the release of a running job read it.
MONTH_SPEND = (
    sa.select(sa.func.coalesce(sa.func.sum(_spent.cost), 0.0))
    .where(_spent.created_at >= sa.bindparam("month_start", type_=Job.created_at.type))
    .scalar_subquery()
)
#: The error a task never released gets when its job stops at the budget.
BUDGET_REACHED = "cancelled: monthly AI budget reached"
#: The recent average cost of a guide, and this month's spend: one query.
_SPEND_AND_AVERAGE = sa.select(
    sa.select(sa.func.avg(_recent.c.cost)).scalar_subquery().label("per_guide"),
    MONTH_SPEND.label("spent"),
)


def check_submit(connection: sa.Connection, tasks: int, cap: Cap | None) -> None:
    """Refuse a job of ``tasks`` guides whose estimated cost would pass the budget left.

    The estimate is ``tasks`` x the average cost of the latest metered guides (before
    any: :attr:`Cap.default_guide_cost`). One query; none without a cap.

    Raises:
      BudgetExceededError: with the figures, when the estimate is more than what is left.
    """
    if cap is None:
        return
    row = connection.execute(_SPEND_AND_AVERAGE, {"month_start": month_start(utcnow())}).one()
    per_guide = cap.default_guide_cost if row.per_guide is None else float(row.per_guide)
    spent, estimate = float(row.spent), tasks * per_guide
    left = cap.monthly_budget - spent
    if estimate > left:
        raise BudgetExceededError(
            f"the job's estimated AI cost {estimate:.4f} ({tasks} tasks x {per_guide:.6f}"
            f" a guide) is more than the {max(0.0, left):.4f} left of the monthly AI budget"
            f" ({spent:.4f} of {cap.monthly_budget:g} spent this month): raise"
            " AI_MONTHLY_BUDGET or wait for next month"
        )


@dataclasses.dataclass(frozen=True)
class ModelSpend:
    """The guides one model wrote in the window, and what they took."""

    guides: int
    tokens: int
    cost: float
    #: Guides whose tokens were estimated from characters.
    estimated: int


@dataclasses.dataclass(frozen=True)
class AISpend:
    """AI spend over a recent window and this calendar month, against the monthly budget."""

    hours: float
    prompt_tokens: int
    completion_tokens: int
    cost: float
    by_model: dict[str, ModelSpend]
    #: First moment of the calendar month (UTC) and the cost of the jobs since.
    month_start: dt.datetime
    month_cost: float
    #: ``AI_MONTHLY_BUDGET``; None: no cap.
    monthly_budget: float | None

    @property
    def per_month(self) -> float:
        """The window's cost projected to 30 days."""
        return self.cost * (MONTH_DAYS * 24) / self.hours

    def share(self, cost: float) -> float | None:
        """``cost`` as a fraction of the monthly budget (None without a budget)."""
        if not self.monthly_budget:
            return None
        return cost / self.monthly_budget


def month_start(now: dt.datetime) -> dt.datetime:
    """Return the first moment of ``now``'s calendar month, in UTC."""
    return now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def spend(*, hours: float = 24, monthly_budget: float | None = None) -> AISpend:
    """Sum the AI spend of the last ``hours`` (by model too) and of this month. Three queries."""
    now = utcnow()
    since, start = now - dt.timedelta(hours=hours), month_start(now)
    with session_scope() as session:
        window = session.execute(_job_totals(Job.created_at >= since)).one()
        month = session.execute(_job_totals(Job.created_at >= start)).one()
        by_model = _by_model(session, HandsOn.updated_at >= since)
    return AISpend(
        hours=hours,
        prompt_tokens=int(window.prompt_tokens),
        completion_tokens=int(window.completion_tokens),
        cost=float(window.cost),
        by_model=by_model,
        month_start=start,
        month_cost=float(month.cost),
        monthly_budget=monthly_budget,
    )


def _job_totals(where: Any) -> sa.Select[Any]:
    def total(column: Any, name: str) -> Any:
        return sa.func.coalesce(sa.func.sum(column), 0).label(name)

    return sa.select(
        total(Job.prompt_tokens, "prompt_tokens"),
        total(Job.completion_tokens, "completion_tokens"),
        total(Job.cost, "cost"),
    ).where(where)


def _by_model(session: Any, where: Any) -> dict[str, ModelSpend]:
    """Return ``{model: spend}`` of the guides matching ``where``, costliest first."""
    model = sa.func.coalesce(HandsOn.model, "(not metered)")
    rows = session.execute(
        sa.select(
            model.label("model"),
            sa.func.count(HandsOn.id),
            sa.func.sum(HandsOn.prompt_tokens + HandsOn.completion_tokens),
            sa.func.sum(HandsOn.cost),
            sa.func.sum(sa.case((HandsOn.tokens_estimated, 1), else_=0)),
        )
        .where(where)
        .group_by(model)
    ).all()
    spends = {
        name: ModelSpend(int(guides), int(tokens or 0), float(cost or 0), int(estimated or 0))
        for name, guides, tokens, cost, estimated in rows
    }
    return dict(sorted(spends.items(), key=lambda item: (-item[1].cost, item[0])))
