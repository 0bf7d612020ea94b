"""``handson budget``: the Redis commands this deployment used, and what a month costs."""

from __future__ import annotations

import click

from cli.context import open_database, pass_settings
from settings import Settings


@click.command("budget")
@click.option("--hours", default=24.0, show_default=True, help="Window to sum, in hours.")
@click.option(
    "--cap",
    type=int,
    default=None,
    help="Monthly command cap of the Redis plan [default: REDIS_MONTHLY_CAP, 500,000].",
)
@pass_settings
def budget_command(settings: Settings, hours: float, cap: int | None) -> None:
    """Print Redis commands of the last hours by process kind and by command.

    Counts are what each process sent (its redis-py connections); a host that bills
    the calls made inside Lua scripts too bills a few more per script call.
    """
    if hours <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--hours")
    cap = settings.REDIS_MONTHLY_CAP if cap is None else cap
    if cap <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--cap")
    from db import usage

    open_database(settings)
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
