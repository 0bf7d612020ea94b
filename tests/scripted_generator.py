"""A generator for tests: the offline generator, except for tasks scripted to fail.

Selected with ``GENERATOR=scripted_generator:factory`` (``tests/`` is on the path), so
a separate worker process can use it too. A task whose title contains ``[fail]`` fails
at every attempt.
"""

from __future__ import annotations

from settings import Settings
from workers.generators import GeneratorError, GuideRequest, OfflineGenerator

FAIL_MARK = "[fail]"


class ScriptedGenerator(OfflineGenerator):
    """Fails, with a retryable error, every task whose title carries :data:`FAIL_MARK`."""

    def generate(self, request: GuideRequest) -> str:
        if FAIL_MARK in request.task_title:
            raise GeneratorError(f"scripted failure for {request.task_key}")
        return super().generate(request)


def factory(settings: Settings) -> ScriptedGenerator:
    """Build the scripted generator with the configured latency."""
    return ScriptedGenerator(latency_ms=settings.GENERATOR_LATENCY_MS)
