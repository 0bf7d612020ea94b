"""``handson budget``: the Redis commands this deployment used, and what a month costs;
its AI spend (recent, by model, this month, against AI_MONTHLY_BUDGET); the PostgreSQL
connections it uses at peak, and those open now."""

from __future__ import annotations

import click

from cli.context import open_database, pass_settings
from settings import Settings

#: Longest window ``--hours`` sums (ten years), in hours.
MAX_HOURS = 87_600


def _count(name: str, what: str) -> click.Option:
    return click.option(
        f"--{name}",
        type=click.IntRange(min=0),
        default=1,
        show_default=True,
        help=f"{what} processes (dynos) to plan PostgreSQL connections for.",
    )


@click.command("budget")
@click.option("--hours", default=24.0, show_default=True, help="Window to sum, in hours.")
@click.option(
    "--cap",
    type=int,
    default=None,
    help="Monthly command cap of the Redis plan [default: REDIS_MONTHLY_CAP, 500,000].",
)
@_count("web", "Web")
@_count("workers", "Worker")
@_count("schedulers", "Scheduler")
@pass_settings
def budget_command(
    settings: Settings, hours: float, cap: int | None, web: int, workers: int, schedulers: int
) -> None:
    """Print Redis commands and AI spend of the last hours, and PostgreSQL connections.

    Redis: by process kind and by command. Counts are what each process sent (its
    redis-py connections); a host that bills the calls made inside Lua scripts too
    bills a few more per script call.

    AI: tokens and cost of the jobs started in the window, by model (the guides written
    in it), this calendar month's cost and the window's rate projected to 30 days, each
    as a share of AI_MONTHLY_BUDGET when set (costs in the currency of AI_PRICE_*).

    PostgreSQL: each process kind's peak, from the settings (DATABASE_*_POOL_SIZE,
    WORKER_THREADS, WEB_CONCURRENCY) and the process counts given; then, on PostgreSQL,
    the connections open now on the database, by application_name.
    """
    if not 0 < hours <= MAX_HOURS:  # also refuses nan (and inf, which timedelta cannot take)
        raise click.BadParameter(
            f"must be more than 0 and at most {MAX_HOURS}", param_hint="--hours"
        )
    cap = settings.REDIS_MONTHLY_CAP if cap is None else cap
    if cap <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--cap")
    open_database(settings)
    _print_redis(hours, cap)
    _print_ai(hours, settings.AI_MONTHLY_BUDGET)
    _print_planned(settings, web=web, workers=workers, schedulers=schedulers)
    if settings.DATABASE_URL.startswith("sqlite"):
        click.echo("  (DATABASE_URL is a SQLite file: no server connections to count now.)")
    else:
        _print_open()


def _print_redis(hours: float, cap: int) -> None:
    from db import usage

    result = usage.budget(hours=hours, monthly_cap=cap)
    click.echo(f"Redis commands in the last {hours:g} h: {result.total:,}")
    for title, rows in (("By process kind", result.by_process), ("By command", result.by_command)):
        click.echo(f"\n{title}:")
        for name, count in rows.items():
            click.echo(f"  {name:<24} {count:>12,}")
        if not rows:
            click.echo("  (none recorded)")
    click.echo(
        f"\nProjected for 30 days: {result.per_month:,.0f}"
        f" = {100 * result.share_of_cap:.1f}% of a {cap:,}-command monthly cap."
    )


def _print_ai(hours: float, monthly_budget: float | None) -> None:
    from db import ai_spend

    spent = ai_spend.spend(hours=hours, monthly_budget=monthly_budget)
    tokens = spent.prompt_tokens + spent.completion_tokens
    click.echo(
        f"\nAI spend in the last {hours:g} h: cost {spent.cost:.4f}, {tokens:,} tokens"
        f" ({spent.prompt_tokens:,} prompt + {spent.completion_tokens:,} completion)"
    )
    click.echo("By model (guides written in the window):")
    for model, row in spent.by_model.items():
        estimated = f", {row.estimated} estimated" if row.estimated else ""
        click.echo(
            f"  {model:<24} {row.guides:>6,} guides {row.tokens:>12,} tokens"
            f" {row.cost:>12.4f}{estimated}"
        )
    if not spent.by_model:
        click.echo("  (none written)")
    month = f"This month (since {spent.month_start:%Y-%m-%d}): {spent.month_cost:.4f}"
    projected = f"Projected for 30 days at this rate: {spent.per_month:.4f}"
    if monthly_budget:
        month += f" = {100 * (spent.share(spent.month_cost) or 0):.1f}%"
        projected += f" = {100 * (spent.share(spent.per_month) or 0):.1f}%"
        budget = f" of the {monthly_budget:g} monthly AI budget."
        click.echo(f"{month}{budget}\n{projected}{budget}")
    else:
        click.echo(f"{month}.\n{projected}. (AI_MONTHLY_BUDGET unset: no cap.)")


def _print_planned(settings: Settings, **processes: int) -> None:
    from db import connections

    planned = connections.plan(settings, **processes)
    click.echo("\nPostgreSQL connections at peak (from settings):")
    for row in planned:
        shape = f"{row.processes} x {row.each} ({row.detail})"
        click.echo(f"  {row.kind:<10} {shape:<38} {row.total:>4}")
    click.echo(f"  {'total':<10} {'':<38} {sum(row.total for row in planned):>4}")
    click.echo(
        f"  A release or one-off handson command adds up to {connections.ONE_OFF_PEAK}"
        " while it runs."
    )


def _print_open() -> None:
    from db import connections

    now = connections.open_now()
    click.echo(
        f"\nPostgreSQL connections open now: {now.total} (this command's not counted;"
        f" the server allows {now.allowed})"
    )
    for name, count in now.by_name.items():
        what = connections.NAMES.get(name, "another client")
        click.echo(f"  {name or '(unnamed)':<24} {count:>4}  {what}")
