"""One app-wide error handler: JSON for API clients, an HTML page for browsers.

Every error a client sees has the same shape, ``{"error": {"code", "message", "field"}}``
for JSON; no stack trace ever leaves the server (500s are logged, then answered with a
generic message).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

import errors
from db.pool import PoolExhaustedError

logger = logging.getLogger(__name__)

bp = Blueprint("errors", __name__)

#: Seconds a client is asked to wait (``Retry-After``) when the database is busy.
DATABASE_BUSY_RETRY_S = 5


class ApiError(errors.HandsonError):
    """Raised by views to answer with a JSON (or HTML) error of a given status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _default_code(status)
        self.field = field
        #: More members of the JSON error object (``{"job_id": 7}`` on a 409).
        self.extra = extra or {}


def _default_code(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "too_large",
        415: "unsupported_media_type",
        422: "invalid",
        500: "internal_error",
        503: "unavailable",
    }.get(status, "error")


def wants_json_response() -> bool:
    """Return True when the client should get JSON: API paths or a JSON-preferring client."""
    if request.path.startswith("/api/") or request.path == "/healthz":
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    field: str | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[Any, int]:
    """Return the error as JSON or as the HTML error page, with ``status``."""
    code = code or _default_code(status)
    if wants_json_response():
        body = {"error": {**(extra or {}), "code": code, "message": message, "field": field}}
        return jsonify(body), status
    return render_template("error.html", status=status, message=message, code=code), status


@bp.app_errorhandler(ApiError)
def _api_error(error: ApiError) -> tuple[Any, int]:
    return error_response(
        error.status, error.message, code=error.code, field=error.field, extra=error.extra
    )


#: HTTP status of each family of the project's errors (the first that matches).
STATUS_OF_FAMILY = (
    (errors.NotFoundError, 404),
    (errors.ConflictError, 409),
    (errors.InvalidInputError, 422),
)


@bp.app_errorhandler(errors.HandsonError)
def _project_error(error: errors.HandsonError) -> tuple[Any, int]:
    """Answer any of the project's errors that no view turned into an answer itself."""
    status = next((s for family, s in STATUS_OF_FAMILY if isinstance(error, family)), None)
    if status is None:
        return _unexpected_error(error)
    return error_response(status, str(error), code=error.code, field=error.field)


@bp.app_errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Any:
    status = error.code or 500
    body, status = error_response(status, error.description or error.name)
    response = body if isinstance(body, Response) else Response(body, mimetype="text/html")
    response.status_code = status
    # Keep the headers the exception carries (Allow on 405, WWW-Authenticate on 401).
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


@bp.app_errorhandler(PoolExhaustedError)
def _database_busy(error: PoolExhaustedError) -> tuple[Any, int, dict[str, str]]:
    # Every pooled connection stayed busy: a load to wait out, not a bug; the log says
    # what to change if it persists.
    logger.warning("Answered 503 to %s %s: %s", request.method, request.path, error)
    body, status = error_response(503, "The database is busy; retry in a moment.")
    return body, status, {"Retry-After": str(DATABASE_BUSY_RETRY_S)}


@bp.app_errorhandler(Exception)
def _unexpected_error(error: Exception) -> tuple[Any, int]:
    # session_scope() already rolled back the failed transaction; log, then answer plainly.
    logger.exception("Unhandled error on %s %s.", request.method, request.path)
    return error_response(500, "Something went wrong on our side; it was logged.")
