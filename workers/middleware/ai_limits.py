"""Hold AI calls to the provider's limits across every worker process (``db.limits``).

Actors opt in with ``ai_limited=True``. Before such a message starts its run, this
middleware takes a turn: a call slot (``AI_MAX_CONCURRENT``) and a minute slot
(``AI_REQUESTS_PER_MINUTE``), unless a 429 paused the provider. Without a free call
slot the message is parked in the database (``db.limit_waits``) and skipped; the
holder that gives a slot back hands it to the oldest waiter and sends that message
again (``workers.dispatch.wake``): a wake-up, not a re-check on a timer. When the turn
can only start at a known time (the minute window rolls, a pause ends), it is booked
for then and the message goes back to the queue delayed to that moment, with the
booking (a ticket, claimed when it comes back). A waiting message never starts its run:
no attempt, retry or failure is counted, and no worker thread waits. A
:class:`RateLimitedError` with a ``Retry-After`` pauses the provider for every process;
the message itself is retried as usual.
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
from db import limit_slots, limit_waits, limits
from settings import Settings
from workers import dispatch
from workers.generators import get_generator
from workers.generators.base import RateLimitedError

#: Longest pause a ``Retry-After`` may ask for, in seconds.
MAX_PAUSE_S = 600.0
#: Extra delay of a message re-checking a pause, as a share of its wait (spreads them).
JITTER = 0.2

#: The provider and call slot the current message holds.
_slot: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "ai_slot", default=None
)


def limits_of(settings: Settings) -> limit_slots.Limits:
    """Return the provider limits ``settings`` ask for."""
    return limit_slots.Limits(
        max_calls=max(0, settings.AI_MAX_CONCURRENT),
        per_minute=max(0, settings.AI_REQUESTS_PER_MINUTE),
        lease_s=settings.TASK_TIME_LIMIT_MS / 1000 + 30,
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
        ticket = message.options.pop(dispatch.AI_TURN_OPTION, None)
        actor = broker.get_actor(message.actor_name)
        provider = self.provider() if actor.options.get("ai_limited") else None
        if provider is None or message.failed:
            return
        run_id = message.args[0] if actor.options.get("progress") else None
        try:
            turn = self._turn(provider, message, run_id, ticket)
        except Exception as error:
            raise LimitsUnavailableError(f"AI limits of {provider}: {error}") from error
        if turn.granted:
            if turn.slot_id is not None:
                _slot.set((provider, turn.slot_id))
            return
        self._wait(broker, message, provider, turn, run_id)

    def _turn(
        self, provider: str, message: Any, run_id: int | None, ticket: dict[str, Any] | None
    ) -> limits.Turn:
        """Claim the turn booked for this message, or take one (or park the message)."""
        if ticket is not None:
            return limits.claim(provider, self.limits, limits.Ticket.from_option(ticket))
        park = limit_waits.parker(provider, self.limits, run_id, lambda: message.encode().decode())
        return limits.take_turn(provider, self.limits, run_id=run_id, park=park)

    def _wait(
        self,
        broker: dramatiq.Broker,
        message: Any,
        provider: str,
        turn: limits.Turn,
        run_id: int | None,
    ) -> None:
        """Leave the message parked (or drop a second copy), or send it again when due."""
        if turn.reason in ("calls", "duplicate"):
            self.logger.info(
                "AI limit (%s) of %s: message %s %s.",
                turn.reason,
                provider,
                message.message_id,
                "waits for a call slot" if turn.reason == "calls" else "is a copy, dropped",
            )
            raise SkipMessage(f"waiting for the AI provider ({turn.reason})")
        jitter = 1.0 if turn.ticket else 1 + random.uniform(0, JITTER)
        delay_ms = math.ceil(1000 * turn.wait_s * jitter) + 1
        self.logger.info(
            "AI limit (%s) of %s reached: message %s waits %d ms.",
            turn.reason,
            provider,
            message.message_id,
            delay_ms,
        )
        if run_id is not None:
            limit_slots.note_waiting(run_id)
        if turn.ticket is not None:
            message = message.copy(options={dispatch.AI_TURN_OPTION: turn.ticket.to_option()})
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
                until = limit_slots.pause(provider, seconds)
                self.logger.warning("%s answered 429: every call waits until %s.", provider, until)
        finally:
            self._end_turn()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._end_turn()

    def _end_turn(self) -> None:
        held = _slot.get()
        _slot.set(None)
        if held is None:
            return
        provider, slot_id = held
        try:
            wakes = limit_waits.end_turn(slot_id, provider, self.limits)
        except Exception as error:  # the database may be down: the lease frees it
            self.logger.warning("Could not give back AI call slot %s: %s", slot_id, error)
            return
        dispatch.wake(wakes)
