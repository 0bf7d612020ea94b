"""A generator for tests: the offline generator, except for tasks scripted to fail.

Selected with ``GENERATOR=scripted_generator:factory`` (``tests/`` is on the path), so
a separate worker process can use it too. A task whose title contains ``[fail]`` fails
at every attempt; one whose title contains ``[flaky]`` fails at its first attempt only,
remembered across processes by a file per task under ``$SCRIPTED_STATE_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

from settings import Settings
from workers.generators import GeneratorError, GuideRequest, OfflineGenerator, OnText, Written

FAIL_MARK = "[fail]"
FLAKY_MARK = "[flaky]"


class ScriptedGenerator(OfflineGenerator):
    """Fails the tasks marked in their titles, with a retryable error."""

    def generate(self, request: GuideRequest, *, on_text: OnText | None = None) -> Written:
        if FAIL_MARK in request.task_title:
            raise GeneratorError(f"scripted failure for {request.task_key}")
        if FLAKY_MARK in request.task_title and self._first_attempt(request.task_key):
            raise GeneratorError(f"scripted first-attempt failure for {request.task_key}")
        return super().generate(request, on_text=on_text)

    @staticmethod
    def _first_attempt(key: str) -> bool:
        state = Path(os.environ["SCRIPTED_STATE_DIR"]) / key
        try:
            state.touch(exist_ok=False)
        except FileExistsError:
            return False
        return True


def factory(settings: Settings) -> ScriptedGenerator:
    """Build the scripted generator with the configured latency."""
    return ScriptedGenerator(latency_ms=settings.GENERATOR_LATENCY_MS)
