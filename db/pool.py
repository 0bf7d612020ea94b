"""PostgreSQL connections as a budget: each process pools what it runs, no more.

Small hosted plans allow 20-25 connections in all, and every process pools its own. So:

- A process's pool is sized from what it runs: its parts *claim* connections (a
  worker one per thread, at boot; the web process ``DATABASE_WEB_POOL_SIZE``), and the
  pool holds their sum; a process that claims nothing (the scheduler, the CLI) pools
  :data:`UNCLAIMED_SIZE`. ``DATABASE_POOL_SIZE`` fixes the size instead.
- The pool never opens more (no overflow). A caller that finds every connection busy
  waits at most ``timeout_s``, then gets :class:`PoolExhaustedError`, which says what
  to change: a clear error instead of a hang.
- SQLAlchemy's ``QueuePool`` keeps connections open forever once opened; an
  :class:`IdleCloser` closes them all once the process has not used the database for
  ``idle_timeout_s`` (the next use opens one again). It is a timer thread that waits
  on events: nothing runs while the pool is closed, no statement is ever sent.
- Every connection names its process's parts in ``application_name`` (``handson/worker``,
  ``handson/web``, ``handson`` for the rest), so ``pg_stat_activity`` shows who holds what.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event

import errors

if TYPE_CHECKING:
    from settings import Settings

logger = logging.getLogger(__name__)

#: Pool size of a process that claims no connections (scheduler, CLI), in connections.
UNCLAIMED_SIZE = 2
#: ``application_name`` prefix of our connections in ``pg_stat_activity``.
APPLICATION = "handson"

# SQLAlchemy logs a pool's life under its class's module: ours would log "Pool
# recreating" and "Pool disposed" at INFO, which SQLAlchemy keeps quiet for its own.
logging.getLogger(f"{__name__}.BudgetPool").setLevel(logging.WARNING)

_claims: dict[str, int] = {}
_claims_lock = threading.Lock()


class PoolExhaustedError(errors.HandsonError):
    """Raised when every pooled database connection of this process stayed busy too long."""

    code = "unavailable"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolOptions:
    """How a process pools its PostgreSQL connections (see the module docstring)."""

    #: Fixed pool size; None: the sum of the process's claims.
    size: int | None = None
    #: Longest wait for a free pooled connection, in seconds.
    timeout_s: float = 10.0
    #: Close the pooled connections after this long without a use, in seconds; 0: never.
    idle_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 1:
            raise ValueError(f"DATABASE_POOL_SIZE must be at least 1, got {self.size}")
        if self.timeout_s <= 0:
            raise ValueError(f"DATABASE_POOL_TIMEOUT_S must be more than 0, got {self.timeout_s}")
        if self.idle_timeout_s < 0:
            raise ValueError(
                f"DATABASE_IDLE_TIMEOUT_S must be 0 (never) or more, got {self.idle_timeout_s}"
            )

    @classmethod
    def of(cls, settings: Settings) -> PoolOptions:
        """Return the options ``settings`` ask for."""
        return cls(
            size=settings.DATABASE_POOL_SIZE,
            timeout_s=settings.DATABASE_POOL_TIMEOUT_S,
            idle_timeout_s=settings.DATABASE_IDLE_TIMEOUT_S,
        )

    def pool_size(self) -> int:
        """Return the size the pool has now: fixed, or what the process claimed."""
        return self.size or claimed() or UNCLAIMED_SIZE


def claim(part: str, connections: int) -> None:
    """Record that ``part`` of this process (``"worker"``, ``"web"``) uses ``connections``.

    A part claiming again replaces its claim. The engine applies it (see
    :func:`db.engine.claim`).
    """
    with _claims_lock:
        if connections > 0:
            _claims[part] = connections
        else:
            _claims.pop(part, None)


def claimed() -> int:
    """Return the connections claimed by the parts of this process (0: none)."""
    with _claims_lock:
        return sum(_claims.values())


def application_name() -> str:
    """Return the ``application_name`` of this process's connections: ``handson/<parts>``."""
    with _claims_lock:
        parts = sorted(_claims)
    return "/".join([APPLICATION, *parts])


def pool_class(options: PoolOptions) -> type[sa.pool.QueuePool]:
    """Return a ``QueuePool`` class sized by ``options`` whenever it is (re)created."""

    class BudgetPool(sa.pool.QueuePool):
        def __init__(self, creator: Any, **kw: Any) -> None:
            # Also when Engine.dispose() recreates it: the size follows the claims.
            kw.update(pool_size=options.pool_size(), max_overflow=0, timeout=options.timeout_s)
            super().__init__(creator, **kw)

        def connect(self) -> Any:
            try:
                return super().connect()
            except PoolExhaustedError:
                raise
            except sa.exc.TimeoutError as error:
                raise PoolExhaustedError(exhausted_message(self.size(), options)) from error

    return BudgetPool


def exhausted_message(size: int, options: PoolOptions) -> str:
    """Return what a caller that found the pool exhausted is told, with what to change."""
    return (
        f"All {size} database connections of this process stayed busy for"
        f" {options.timeout_s:g} s. Retry later; if this persists, raise DATABASE_POOL_SIZE"
        " within the connections the database allows (see `handson budget`) or"
        " DATABASE_POOL_TIMEOUT_S."
    )


def name_connections(engine: sa.Engine) -> None:
    """Have every new connection of ``engine`` say which parts of the process opened it."""

    @event.listens_for(engine, "do_connect")
    def _named(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        params.setdefault("application_name", application_name())


class IdleCloser:
    """Closes an engine's pooled connections once none was used for ``idle_timeout_s``.

    A connection checked in marks a use. The thread waits for a use, then for a quiet
    ``idle_timeout_s`` after the last one; while the pool is closed it waits with no timer.
    """

    def __init__(self, engine: sa.Engine, idle_timeout_s: float) -> None:
        self._engine = engine
        self._idle_s = idle_timeout_s
        self._used = threading.Event()
        self._stop = threading.Event()
        self._last_use = time.monotonic()
        #: Quiet periods seen, and connections closed (for tests and measurements).
        self.quiet_periods = 0
        self.closed = 0
        event.listen(engine, "checkin", self._on_checkin)
        self._thread = threading.Thread(target=self._run, name="db-idle-closer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread (the engine is being replaced)."""
        self._stop.set()
        self._used.set()
        event.remove(self._engine, "checkin", self._on_checkin)

    def _on_checkin(self, _dbapi_connection: Any, _record: Any) -> None:
        self._last_use = time.monotonic()
        self._used.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._used.wait()  # the pool is closed until something uses it
            if self._quiet_for_the_whole_timeout():
                self._close_if_unused()

    def _quiet_for_the_whole_timeout(self) -> bool:
        """Wait until ``idle_timeout_s`` passed since the last use; False when stopped."""
        while True:
            self._used.clear()
            left = self._last_use + self._idle_s - time.monotonic()
            if self._stop.wait(max(0.0, left)):
                return False
            if not self._used.is_set():
                return True

    def _close_if_unused(self) -> None:
        pool = self._engine.pool
        self.quiet_periods += 1
        if pool.checkedout():  # held for longer than the timeout: wait for its check-in
            return
        closing = pool.checkedin()
        pool.dispose()  # closes the connections in the pool; the pool stays usable
        self.closed += closing
        if closing:
            logger.info(
                "Closed %d idle database connections (none used for %g s).",
                closing,
                self._idle_s,
            )
