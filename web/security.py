"""CSRF tokens for forms, the optional API bearer token, security headers, the secret key."""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request, session

import errors
from web.errors import ApiError

logger = logging.getLogger(__name__)

#: Session key and form field holding the CSRF token.
CSRF_FIELD = "csrf_token"
#: Methods that change state and therefore need a CSRF token (forms) or the API token.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Only our own scripts, styles and images; no framing, no plugins, forms post to us only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
#: Why a deployed app without ``API_TOKEN`` refuses API writes, and what to do.
API_CLOSED = (
    "API writes are refused: this deployed app has no API_TOKEN. Set API_TOKEN (then send"
    " `Authorization: Bearer <API_TOKEN>`), or API_OPEN=1 to let anyone write."
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class SecretKeyMissingError(errors.HandsonError, RuntimeError):
    """Raised when SECRET_KEY is unset outside debug, testing and embedded mode; set it."""


def secret_key(*, configured: str | None, embedded: bool, relaxed: bool) -> str:
    """Return the Flask secret key: the configured one, or a per-process one where allowed.

    Parameters:
      configured: the ``SECRET_KEY`` setting.
      embedded: True in the embedded (single-process) mode.
      relaxed: True in debug or testing.

    Raises:
      SecretKeyMissingError: when it is unset in a deployed (non-embedded) app.
    """
    if configured:
        return configured
    if embedded or relaxed:
        # One process only, so a random key per process is enough (and unguessable).
        return secrets.token_hex(32)
    raise SecretKeyMissingError(
        "SECRET_KEY is not set: set it to a long random string (for example the output of"
        " `python -c 'import secrets; print(secrets.token_hex(32))'`); it is required"
        " when REDIS_URL is set, outside debug and testing"
    )


def csrf_token() -> str:
    """Return this session's CSRF token, creating it on first use (a Jinja global)."""
    token = session.get(CSRF_FIELD)
    if not token:
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return str(token)


def check_csrf() -> None:
    """Reject a form write whose CSRF token does not match the session's (400).

    Raises:
      ApiError: when the token is missing or wrong.
    """
    if request.method not in WRITE_METHODS:
        return
    expected = session.get(CSRF_FIELD)
    sent = request.form.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(str(expected), sent):
        raise ApiError(
            400,
            "The form expired or was not sent by this site; reload the page and try again.",
            code="csrf_failed",
        )


def check_api_token() -> None:
    """Let an API write through only when it may (reads always may).

    With ``API_TOKEN`` set, a write needs ``Authorization: Bearer <token>``; without,
    a deployed app takes writes only when ``API_OPEN`` says so (the embedded mode is
    open). A write a browser sends from another origin is refused in every case.

    Raises:
      ApiError: 401 when the token is missing or wrong, 403 when the API is closed or
        the request comes from another origin.
    """
    if request.method not in WRITE_METHODS:
        return
    check_origin()
    settings = current_app.config["HANDSON"]
    if not settings.API_TOKEN:
        if settings.embedded or settings.API_OPEN:
            return
        raise ApiError(403, API_CLOSED, code="api_closed")
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip(), settings.API_TOKEN):
        raise ApiError(401, "This API needs `Authorization: Bearer <API_TOKEN>` for writes.")


def check_origin() -> None:
    """Refuse a request whose ``Origin`` (or, without one, ``Referer``) is another site.

    A request that names neither (curl, scripts) passes; browsers name one on every
    cross-site ``POST``. Hosts are compared (scheme aside, so that a proxy that ends
    TLS in front of the app does not make its own pages look foreign).

    Raises:
      ApiError: 403 naming the origin that was refused.
    """
    sent = request.headers.get("Origin") or request.headers.get("Referer")
    if not sent:
        return
    host = urlsplit(sent).netloc.lower() if sent != "null" else ""
    if host != request.host.lower():
        raise ApiError(
            403,
            f"This API does not take writes from pages of {sent[:100]!r}, only from its own.",
            code="cross_origin",
        )


def add_security_headers(response: Response) -> Response:
    """Set the security headers on every response."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    """Install the CSRF helper, the security headers and the 401 challenge header."""
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.after_request(add_security_headers)

    @app.after_request
    def _challenge(response: Response) -> Response:
        if response.status_code == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="handson"'
        return response

    # Flask defines these keys (as False/None), so setdefault would never apply.
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    settings = app.config["HANDSON"]
    app.config["SESSION_COOKIE_SECURE"] = settings.SESSION_COOKIE_SECURE
    _warn_about_api_access(settings)


def _warn_about_api_access(settings: Any) -> None:
    """Say at start who may write through the API of a deployed app, when not only a token."""
    if settings.embedded or settings.API_TOKEN:
        return
    if settings.API_OPEN:
        logger.warning(
            "API_OPEN is set and API_TOKEN is not: anyone who reaches this app can write"
            " through its API (create projects, start and cancel jobs)."
        )
    else:
        logger.warning("%s", API_CLOSED)
