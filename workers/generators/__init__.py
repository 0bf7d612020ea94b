"""Guide generators and :func:`get_generator`, which picks one from the settings."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

from workers.generators.base import (
    Dependency,
    Generator,
    GeneratorError,
    GuideRequest,
    OnText,
    PermanentGeneratorError,
    Usage,
    Written,
)
from workers.generators.offline import OfflineGenerator
from workers.generators.openai import OpenAIGenerator

if TYPE_CHECKING:
    from settings import Settings

__all__ = [
    "Dependency",
    "Generator",
    "GeneratorError",
    "GuideRequest",
    "OfflineGenerator",
    "OnText",
    "OpenAIGenerator",
    "PermanentGeneratorError",
    "Usage",
    "Written",
    "get_generator",
]

#: What ``GENERATOR`` may hold, for error messages.
CHOICES = '"offline", "openai" or "package.module:factory"'


@lru_cache(maxsize=8)
def get_generator(settings: Settings) -> Generator:
    """Return the generator named by ``settings.GENERATOR``, one instance per settings.

    Parameters:
      settings: the process settings; ``package.module:factory`` is called with them.

    Raises:
      ValueError: when ``GENERATOR`` names no known generator or no importable factory.
    """
    choice = settings.GENERATOR.strip()
    if choice == "offline":
        return OfflineGenerator(
            latency_ms=settings.GENERATOR_LATENCY_MS, jitter=settings.GENERATOR_LATENCY_JITTER
        )
    if choice == "openai":
        return OpenAIGenerator(
            base_url=settings.OPENAI_BASE_URL,
            api_key=settings.OPENAI_API_KEY,
            model=settings.OPENAI_MODEL,
            timeout_s=settings.OPENAI_TIMEOUT_S,
            max_attempts=settings.OPENAI_MAX_ATTEMPTS,
            max_chars=settings.MAX_GUIDE_CHARS,
            stream=settings.OPENAI_STREAM,
        )
    if ":" in choice:
        return _load_factory(choice)(settings)
    raise ValueError(f"GENERATOR={choice!r} is not a generator; use {CHOICES}")


def _load_factory(path: str) -> Callable[[Settings], Generator]:
    """Import ``package.module:factory`` and return the factory."""
    module_name, _, attribute = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(
            f"GENERATOR={path!r}: cannot load the factory ({exc}); use {CHOICES}"
        ) from exc
    if not callable(factory):
        raise ValueError(f"GENERATOR={path!r} is not callable; use {CHOICES}")
    return factory
