"""Hold AI calls to the provider's limits across every worker process (``db.limits``).

Actors opt in with ``ai_limited=True``. Before such a message starts its run, this
middleware takes a turn: a call slot (``AI_MAX_CONCURRENT``) and a minute slot
(``AI_REQUESTS_PER_MINUTE``), unless a 429 paused the provider. Without a turn the
message goes back to the queue, delayed until a slot should be free, the minute window
rolls or the pause ends, and is skipped: its run never started, so no attempt, retry or
failure is counted, and no worker thread waits. The call slot is given back when the
message ends. A :class:`RateLimitedError` with a ``Retry-After`` pauses the provider for
every process; the message itself is retried as usual.
"""

from __future__ import annotations

import contextvars
import logging
import math
import random
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware, MiddlewareError, SkipMessage

import errors
from db import limits
from settings import Settings
from workers.generators import get_generator
from workers.generators.base import RateLimitedError

#: Longest pause a ``Retry-After`` may ask for, in seconds.
MAX_PAUSE_S = 600.0
#: Extra delay of a waiting message, as a share of its wait (spreads the waiters out).
JITTER = 0.2

_slot: contextvars.ContextVar[int | None] = contextvars.ContextVar("ai_slot", default=None)


def limits_of(settings: Settings) -> limits.Limits:
    """Return the provider limits ``settings`` ask for."""
    return limits.Limits(
        max_calls=max(0, settings.AI_MAX_CONCURRENT),
        per_minute=max(0, settings.AI_REQUESTS_PER_MINUTE),
        lease_s=settings.TASK_TIME_LIMIT_MS / 1000 + 30,
        recheck_s=settings.AI_LIMIT_RECHECK_MS / 1000,
    )


class LimitsUnavailableError(errors.HandsonError, MiddlewareError):
    """Raised when the provider limits could not be read (database down): retried later.

    A ``MiddlewareError`` stops the message before its AI call, which would otherwise run
    unlimited; ``Retries`` retries it like any failure.
    """


class AILimits(Middleware):
    """Takes a provider turn before an ``ai_limited`` message runs; see the module.

    Must sit before ``Progress`` in the broker's middleware list, so a message without
    a turn is skipped before its run is marked started.

    Parameters:
      settings: the worker's settings (limits and generator).
    """

    def __init__(self, settings: Settings) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.limits = limits_of(settings)
        self.settings = settings

    @property
    def actor_options(self) -> set[str]:
        return {"ai_limited"}

    def provider(self) -> str | None:
        """The provider whose limits apply, or None: offline and no limit set."""
        name = get_generator(self.settings).name.split(":", 1)[0]
        if name == "offline" and not (self.limits.max_calls or self.limits.per_minute):
            return None
        return name

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        _slot.set(None)
        actor = broker.get_actor(message.actor_name)
        provider = self.provider() if actor.options.get("ai_limited") else None
        if provider is None or message.failed:
            return
        try:
            turn = limits.take_turn(provider, self.limits)
        except Exception as error:
            raise LimitsUnavailableError(f"AI limits of {provider}: {error}") from error
        if turn.granted:
            _slot.set(turn.slot_id)
            return
        delay_ms = math.ceil(1000 * turn.wait_s * (1 + random.uniform(0, JITTER))) + 1
        self.logger.info(
            "AI limit (%s) of %s reached: message %s waits %d ms.",
            turn.reason,
            provider,
            message.message_id,
            delay_ms,
        )
        if actor.options.get("progress"):
            limits.note_waiting(message.args[0])
        broker.enqueue(message, delay=delay_ms)
        raise SkipMessage(f"waiting for the AI provider ({turn.reason})")

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        try:
            if isinstance(exception, RateLimitedError) and exception.retry_after_s:
                # Paused before the slot is given back: no one takes it to call meanwhile.
                provider = self.provider() or "offline"
                seconds = min(MAX_PAUSE_S, exception.retry_after_s)
                until = limits.pause(provider, seconds)
                self.logger.warning("%s answered 429: every call waits until %s.", provider, until)
        finally:
            self._end_turn()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._end_turn()

    def _end_turn(self) -> None:
        slot_id = _slot.get()
        _slot.set(None)
        if slot_id is not None:
            try:
                limits.end_turn(slot_id)
            except Exception as error:  # the database may be down: the lease frees it
                self.logger.warning("Could not give back AI call slot %s: %s", slot_id, error)
