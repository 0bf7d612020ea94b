"""The root of the project's own errors, and the families the edges map once.

Every error a user can cause or meet derives from :class:`HandsonError`; the web app
maps the families to HTTP statuses in one handler (``web.errors``) and the CLI to exit
codes in one helper (``cli.context``). Nothing here imports the project.
"""

from __future__ import annotations


class HandsonError(Exception):
    """Raised for any of this project's errors; the message says what to fix."""

    #: Snake-case code that clients see (``{"error": {"code": ...}}``).
    code: str = "error"

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())
        #: The input field at fault, when one is (``tasks[3].depends_on``).
        self.field = field


class InvalidInputError(HandsonError, ValueError):
    """Raised when input cannot be used as given; the message names what to fix."""

    code = "invalid"


class NotFoundError(HandsonError, LookupError):
    """Raised when a project, job or schedule id does not exist; check the id."""

    code = "not_found"


class ConflictError(HandsonError):
    """Raised when the request does not fit the current state (a job not retryable)."""

    code = "conflict"
