"""The generator interface: turn one task (and what it builds on) into a Markdown guide."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import errors
from db.guides import Dependency, GuideRequest, Usage

__all__ = [
    "Dependency",
    "Generator",
    "GeneratorError",
    "GuideRequest",
    "OnText",
    "PermanentGeneratorError",
    "RateLimitedError",
    "Usage",
    "Written",
]

#: Called with each piece of a guide as it is written (the pieces add up to the guide).
OnText = Callable[[str], None]


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


@dataclasses.dataclass(frozen=True)
class Written:
    """A guide as a generator wrote it, with what writing it took (cost not priced yet)."""

    markdown: str
    usage: Usage


class Generator(Protocol):
    """Writes hands-on guides; implementations must be safe to call from many threads."""

    #: Short name stored with each guide (``offline``, ``openai:<model>``).
    name: str

    def generate(self, request: GuideRequest, *, on_text: OnText | None = None) -> Written:
        """Return the Markdown guide for ``request`` and its usage.

        Parameters:
          request: the task and what it builds on.
          on_text: called with each piece of text as it is written, in order (a
            generator that cannot stream calls it once, with the whole guide).

        Raises:
          GeneratorError: on a failure worth retrying.
          PermanentGeneratorError: on a failure that retrying cannot fix.
        """
        ...
