"""Build the broker from settings and set up the worker side of a process.

Importing this module configures the process from the environment (what ``dramatiq
workers`` needs); tests and embedding apps call :func:`configure` with their own
settings or broker.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Pipelines

import db
from settings import Settings, get_settings
from workers.middleware import GracefulTermination, Metering, Progress
from workers.redis_broker import FrugalRedisBroker

_current: Settings = get_settings()


def build_broker(settings: Settings) -> dramatiq.Broker:
    """Return the Redis broker when ``REDIS_URL`` is set, else an in-memory broker."""
    if settings.REDIS_URL:
        broker: dramatiq.Broker = FrugalRedisBroker(
            url=settings.REDIS_URL,
            wait_timeout=settings.REDIS_WAIT_TIMEOUT_MS,
            safety_interval=settings.REDIS_SAFETY_INTERVAL_S,
            maintenance_interval=settings.REDIS_MAINTENANCE_INTERVAL_MS,
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
    return broker


def configure(
    settings: Settings | None = None, *, broker: dramatiq.Broker | None = None
) -> dramatiq.Broker:
    """Configure this process's worker side: database, global broker and actor options.

    Actors are declared on the broker that was global when they were imported; this
    re-declares them on ``broker`` so that they follow it.
    """
    global _current
    if broker is None:
        # Without new settings, keep the broker this module built at import.
        broker = dramatiq.get_broker() if settings is None else build_broker(settings)
    _current = settings or get_settings()
    db.configure(_current.DATABASE_URL, db.PoolOptions.of(_current))
    dramatiq.set_broker(broker)
    from workers.actors.generate import generate_hands_on

    for actor in (generate_hands_on,):
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


def current_settings() -> Settings:
    """Return the settings this process's worker side was configured with."""
    return _current


dramatiq.set_broker(build_broker(_current))
