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
]


class GeneratorError(errors.HandsonError, RuntimeError):
    """Raised when a guide could not be generated this time; the message is retried."""


class PermanentGeneratorError(GeneratorError):
    """Raised when retrying cannot help (bad request, bad credentials); fix the configuration."""


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
