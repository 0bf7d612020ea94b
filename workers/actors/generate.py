"""The generation actor: write one task's hands-on guide."""

from __future__ import annotations

import contextlib
import dataclasses

import dramatiq
from dramatiq.middleware import CurrentMessage
from sqlalchemy import orm

from db import guides, progress, session_scope
from settings import Settings, get_settings
from workers import broker, streaming
from workers.generators import get_generator
from workers.generators.base import GuideRequest, PermanentGeneratorError, Usage, Written
from workers.generators.metering import estimate_tokens, priced
from workers.middleware.progress import prepared, spend_with_outcome, write_with_outcome

_settings = get_settings()


@dramatiq.actor(
    queue_name=_settings.QUEUE_NAME,
    max_retries=_settings.MAX_RETRIES,
    min_backoff=_settings.MIN_BACKOFF_MS,
    max_backoff=_settings.MAX_BACKOFF_MS,
    time_limit=_settings.TASK_TIME_LIMIT_MS,
    throws=(PermanentGeneratorError, guides.RunNotFoundError),
    progress=True,
    ai_limited=True,
    prepare_run=guides.read_request,
)
def generate_hands_on(task_run_id: int, previous_guide: str | None = None) -> str | None:
    """Generate and store the guide of one task run.

    In a pipeline, ``previous_guide`` is the guide the previous step returned, and the
    guide written here is returned for the next step; elsewhere nothing is returned.
    """
    settings = broker.current_settings()
    generator = get_generator(settings)
    request = prepared()
    in_worker = isinstance(request, GuideRequest)
    if not in_worker:  # called directly
        with session_scope() as session:
            request = guides.read_request(session, task_run_id)
    request = dataclasses.replace(request, previous_guide=previous_guide)
    with streaming.guide_stream(request.job_id, task_run_id, settings) as on_text:
        written = _written(generator.generate(request, on_text=on_text), generator.name)
    markdown = written.markdown[: settings.MAX_GUIDE_CHARS]
    usage = _priced(written.usage, settings)
    message = CurrentMessage.get_current_message()
    next_step = message is not None and message.options.get("pipe_target")
    if in_worker and not next_step:
        # Stored with the outcome. A pipeline's next step instead needs it stored now:
        # that step is sent before this outcome is recorded, and reads it.
        write_with_outcome(_storing(task_run_id, markdown, generator.name, usage))
    else:
        guides.save_guide(task_run_id, markdown, generator.name, usage)
    if in_worker:
        spend_with_outcome(usage)  # the job's totals move with the outcome, once
    return markdown if next_step else None


def _written(result: Written | str, name: str) -> Written:
    """Return a generator's result as :class:`Written` (a custom generator may return text)."""
    if isinstance(result, Written):
        return result
    return Written(
        result, Usage(model=name, completion_tokens=estimate_tokens(len(result)), estimated=True)
    )


def _priced(usage: Usage, settings: Settings) -> Usage:
    return priced(
        usage,
        input_per_mtok=settings.AI_PRICE_INPUT_PER_MTOK,
        output_per_mtok=settings.AI_PRICE_OUTPUT_PER_MTOK,
    )


def _storing(run_id: int, markdown: str, generator_name: str, usage: Usage) -> progress.Write:
    """Return the write that stores the guide in the transaction recording the outcome."""

    def store(session: orm.Session) -> None:
        # A run that is gone has no outcome to record either: nothing to store then.
        with contextlib.suppress(guides.RunNotFoundError):
            guides.store_guide(session.connection(), run_id, markdown, generator_name, usage)

    return store
