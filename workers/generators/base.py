"""The generator interface: turn one task (and what it builds on) into a Markdown guide."""

from __future__ import annotations

from typing import Protocol

import errors
from db.guides import Dependency, GuideRequest

__all__ = [
    "Dependency",
    "Generator",
    "GeneratorError",
    "GuideRequest",
    "PermanentGeneratorError",
    "RateLimitedError",
]


class GeneratorError(errors.HandsonError, RuntimeError):
    """Raised when a guide could not be generated this time; the message is retried."""


class PermanentGeneratorError(GeneratorError):
    """Raised when retrying cannot help (bad request, bad credentials); fix the configuration."""


class RateLimitedError(GeneratorError):
    """Raised when the provider answered 429 (too many requests); it is retried.

    ``retry_after_s`` is the provider's ``Retry-After`` in seconds (None when it sent
    none): the limiter pauses every call to the provider that long, in every process.
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        #: How long the provider asked to wait, in seconds; None when it did not say.
        self.retry_after_s = retry_after_s


class Generator(Protocol):
    """Writes hands-on guides; implementations must be safe to call from many threads."""

    #: Short name stored with each guide (``offline``, ``openai:<model>``).
    name: str

    def generate(self, request: GuideRequest) -> str:
        """Return the Markdown guide for ``request``.

        Raises:
          GeneratorError: on a failure worth retrying.
          PermanentGeneratorError: on a failure that retrying cannot fix.
        """
        ...
