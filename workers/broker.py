"""Build the broker from settings and set up the worker side of a process.

Importing this module changes nothing. The ``workers`` package calls
:func:`configure_from_environment` when first imported (what ``dramatiq workers``
needs), which does nothing in a process that configured itself already; tests and
embedding apps call :func:`configure` with their own settings or broker.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Pipelines

import db
from settings import Settings, get_settings
from workers.middleware import AILimits, GracefulTermination, Metering, Progress
from workers.redis_broker import FrugalRedisBroker

_current: Settings | None = None


def build_broker(settings: Settings) -> dramatiq.Broker:
    """Return the Redis broker when ``REDIS_URL`` is set, else an in-memory broker."""
    if settings.REDIS_URL:
        broker: dramatiq.Broker = FrugalRedisBroker(
            url=settings.REDIS_URL,
            wait_timeout=settings.REDIS_WAIT_TIMEOUT_MS,
            safety_interval=settings.REDIS_SAFETY_INTERVAL_S,
            maintenance_interval=settings.REDIS_MAINTENANCE_INTERVAL_MS,
            fetch_margin=settings.REDIS_FETCH_MARGIN,
            ack_window=settings.REDIS_ACK_WINDOW_MS,
            rank_window=settings.REDIS_RANK_WINDOW,
            local_handoff=settings.REDIS_LOCAL_HANDOFF,
        )
    else:
        broker = StubBroker()
        # Fail-fast re-raises actor errors in broker.join(): that is for unit tests; here
        # the embedded worker runs real jobs, whose failures the Progress middleware records.
        broker.fail_fast_default = False
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(GracefulTermination())
    # After-hooks run in reverse order: Retries decides whether a failure is final, then
    # Pipelines sends a pipeline's next step, then Progress records the outcome.
    broker.add_middleware(Progress(), before=Pipelines)
    if settings.REDIS_URL:
        # Attributes each Redis command to the job it serves, for `handson budget`.
        broker.add_middleware(Metering(), before=Progress)
    # Before Progress: a message waiting for the AI provider's limits never starts its run.
    broker.add_middleware(AILimits(settings), before=Progress)
    return broker


def configure(
    settings: Settings | None = None, *, broker: dramatiq.Broker | None = None
) -> dramatiq.Broker:
    """Configure this process's worker side: database, global broker and actor options.

    Actors are declared on the broker that was global when they were imported; this
    re-declares every actor of the previous global broker on ``broker`` (found by name,
    so this module imports no actor), with options from ``settings``.
    """
    global _current
    previous = _global_broker()
    if broker is None:
        # Without new settings, keep the broker already set (or build one).
        if settings is None and previous is not None:
            broker = previous
        else:
            broker = build_broker(settings or get_settings())
    _current = settings or get_settings()
    db.configure(_current.DATABASE_URL, db.PoolOptions.of(_current))
    dramatiq.set_broker(broker)
    for name in [] if previous is None else sorted(previous.get_declared_actors()):
        actor = previous.get_actor(name)
        actor.broker = broker
        actor.queue_name = _current.QUEUE_NAME
        actor.options.update(
            max_retries=_current.MAX_RETRIES,
            min_backoff=_current.MIN_BACKOFF_MS,
            max_backoff=_current.MAX_BACKOFF_MS,
            time_limit=_current.TASK_TIME_LIMIT_MS,
        )
        broker.declare_actor(actor)
    return broker


def configure_from_environment() -> None:
    """Configure the worker side from the environment, unless this process already did.

    Called when the ``workers`` package is first imported, before any actor is declared.
    A process that configured itself (an app, a test, the CLI) keeps its configuration,
    its database included: importing a module of ``workers`` never rebinds the engine.
    """
    global _current
    if _current is not None:
        return
    if db.is_configured():
        _current = get_settings()
        dramatiq.set_broker(build_broker(_current))
        return
    configure(get_settings())


def _global_broker() -> dramatiq.Broker | None:
    """Return the broker set for this process, or None (without making a default one)."""
    return getattr(dramatiq.broker, "global_broker", None)


def current_settings() -> Settings:
    """Return the settings this process's worker side was configured with."""
    return _current or get_settings()
