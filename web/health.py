"""``GET /healthz``: is the database reachable, is the broker reachable?"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
import sqlalchemy as sa
from flask import Blueprint, jsonify

from db.engine import session_scope

logger = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


def _database() -> str:
    try:
        with session_scope() as session:
            session.execute(sa.text("SELECT 1"))
    except Exception:
        logger.warning("Health check: the database is unreachable.", exc_info=True)
        return "unreachable"
    return "ok"


def _broker() -> str:
    client = getattr(dramatiq.get_broker(), "client", None)
    if client is None:
        return "ok"  # the in-memory broker of the embedded mode
    try:
        client.ping()  # one Redis command per health check
    except Exception:
        logger.warning("Health check: the broker is unreachable.", exc_info=True)
        return "unreachable"
    return "ok"


@bp.get("/healthz")
def healthz() -> tuple[Any, int]:
    """200 with ``{"database": "ok", "broker": "ok"}``, or 503 naming what is unreachable."""
    checks = {"database": _database(), "broker": _broker()}
    ok = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ok" if ok else "unavailable", **checks}), 200 if ok else 503
