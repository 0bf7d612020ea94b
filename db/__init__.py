"""Database: models, engine/session, migrations and the guarded state changes of a job."""

from db.engine import Session, configure, get_engine, session_scope, warm_up

__all__ = ["Session", "configure", "get_engine", "session_scope", "warm_up"]
