"""The generator interface: turn one task (and what it builds on) into a Markdown guide."""

from __future__ import annotations

import dataclasses
from typing import Protocol


class GeneratorError(RuntimeError):
    """Raised when a guide could not be generated this time; the message is retried."""


class PermanentGeneratorError(GeneratorError):
    """Raised when retrying cannot help (bad request, bad credentials); fix the configuration."""


@dataclasses.dataclass(frozen=True)
class Dependency:
    """A task the requested task depends on, with its guide when one exists."""

    title: str
    guide: str | None = None


@dataclasses.dataclass(frozen=True)
class GuideRequest:
    """Everything a generator may use to write one task's hands-on guide."""

    project_name: str
    task_key: str
    task_title: str
    task_description: str = ""
    dependencies: tuple[Dependency, ...] = ()
    #: In a pipeline, the guide written by the previous step.
    previous_guide: str | None = None


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
