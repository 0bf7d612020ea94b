"""Database: models, engine/session, migrations and the guarded state changes of a job."""

from db.engine import (
    Session,
    claim,
    configure,
    get_engine,
    is_configured,
    session_scope,
    warm_up,
)
from db.pool import PoolExhaustedError, PoolOptions

__all__ = [
    "PoolExhaustedError",
    "PoolOptions",
    "Session",
    "claim",
    "configure",
    "get_engine",
    "is_configured",
    "session_scope",
    "warm_up",
]
