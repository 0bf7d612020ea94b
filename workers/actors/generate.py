"""The generation actor: write one task's hands-on guide."""

from __future__ import annotations

import dataclasses

import dramatiq
from dramatiq.middleware import CurrentMessage
from sqlalchemy import orm

from db import guides, progress, session_scope, text_stream
from db.text_stream import TextDelta
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
    prepare_run=guides.REQUEST,
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
    # In a worker the stream's tail may go with the outcome: no connection of its own.
    tail: list[TextDelta] | None = [] if in_worker else None
    with streaming.guide_stream(request.job_id, task_run_id, settings, tail=tail) as on_text:
        written = _written(generator.generate(request, on_text=on_text), generator.name)
    markdown = written.markdown[: settings.MAX_GUIDE_CHARS]
    usage = _priced(written.usage, settings)
    message = CurrentMessage.get_current_message()
    next_step = message is not None and message.options.get("pipe_target")
    guide = (task_run_id, markdown, generator.name, usage)
    if not in_worker or next_step:
        # A pipeline's next step needs it stored now: that step is sent before this
        # outcome is recorded, and reads it. Elsewhere it is stored with the outcome.
        guides.save_guide(*guide)
    if tail is not None:  # in a worker
        unstored = None if next_step else guide
        if tail or unstored:
            write_with_outcome(_with_outcome(tail, unstored))
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


def _with_outcome(
    tail: list[TextDelta], guide: tuple[int, str, str, Usage] | None
) -> progress.Write:
    """Return the write that rides in the outcome's transaction: the stream's tail, then
    the guide (``(run_id, markdown, generator_name, usage)``) unless it is stored already."""

    def write(session: orm.Session) -> None:
        connection = session.connection()
        if guide is None:
            text_stream.send_on(connection, tail)  # heard at commit, before the event
            return
        # One statement on PostgreSQL. A run that is gone has no outcome to record
        # either: its guide is not stored then (the upsert selects no run).
        store = guides.upsert_guide(connection.dialect.name)
        text_stream.send_on(connection, tail, store, guides.guide_parameters(*guide))

    return write
