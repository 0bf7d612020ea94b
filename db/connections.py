"""The PostgreSQL connections a deployment uses: planned from settings, and open now.

The plan is each process kind's peak (see :mod:`db.pool`): a web process pools
``DATABASE_WEB_POOL_SIZE`` per gunicorn worker plus its one LISTEN connection, a worker
one per thread, the scheduler :data:`db.pool.UNCLAIMED_SIZE`; ``DATABASE_POOL_SIZE``
replaces each pool's size. What is open now comes from ``pg_stat_activity``, by the
``application_name`` our connections carry.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import sqlalchemy as sa

from db import listen, pool
from db.engine import get_engine

if TYPE_CHECKING:
    from settings import Settings

#: Connections a one-off command (release, ``handson enqueue --wait``) may add while it runs.
ONE_OFF_PEAK = pool.UNCLAIMED_SIZE + 1
#: What each ``application_name`` of ours is.
NAMES = {
    f"{pool.APPLICATION}/web": "web pools",
    f"{pool.APPLICATION}/worker": "worker pools",
    listen.LISTENER_NAME: "event listeners",
    pool.APPLICATION: "schedulers, CLI",
}


@dataclasses.dataclass(frozen=True)
class Planned:
    """One process kind's share of the plan."""

    kind: str
    #: Processes of this kind (gunicorn workers count as web processes).
    processes: int
    #: Connections one process holds at most.
    each: int
    #: How ``each`` is made up, for people.
    detail: str

    @property
    def total(self) -> int:
        return self.processes * self.each


@dataclasses.dataclass(frozen=True)
class Open:
    """The connections open now on our database."""

    #: ``application_name`` -> connections, largest first.
    by_name: dict[str, int]
    #: Connections the server allows to ordinary roles.
    allowed: int

    @property
    def total(self) -> int:
        return sum(self.by_name.values())


def plan(
    settings: Settings, *, web: int = 1, workers: int = 1, schedulers: int = 1
) -> list[Planned]:
    """Return each process kind's peak connections for a deployment of the Procfile.

    Parameters:
      settings: the deployment's settings.
      web, workers, schedulers: processes (dynos) of each kind.
    """
    fixed = settings.DATABASE_POOL_SIZE
    web_pool = fixed or settings.DATABASE_WEB_POOL_SIZE
    threads = settings.WORKER_THREADS
    worker_pool = fixed or threads
    scheduler_pool = fixed or pool.UNCLAIMED_SIZE
    worker_detail = f"{worker_pool} pooled" if fixed else "one per thread"
    return [
        Planned(
            "web", web * settings.WEB_CONCURRENCY, web_pool + 1, f"{web_pool} pooled + 1 LISTEN"
        ),
        Planned("worker", workers, worker_pool, worker_detail),
        Planned("scheduler", schedulers, scheduler_pool, f"{scheduler_pool} pooled"),
    ]


def open_now() -> Open:
    """Count the connections open on the configured PostgreSQL database, but this one.

    Raises:
      ValueError: when the database is not PostgreSQL.
    """
    engine = get_engine()
    if engine.dialect.name != "postgresql":
        raise ValueError("only a PostgreSQL server has connections to count")
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT coalesce(application_name, ''), count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " GROUP BY 1 ORDER BY 2 DESC, 1"
            )
        ).all()
        allowed = connection.scalar(
            sa.text(
                "SELECT current_setting('max_connections')::int"
                " - current_setting('superuser_reserved_connections')::int"
            )
        )
    return Open(by_name={name: int(count) for name, count in rows}, allowed=int(allowed or 0))
