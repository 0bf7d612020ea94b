"""The dispatch service: every "one transaction decides, then send" goes through here.

Each entry point runs one database transaction (in ``db/``) that changes state and
returns what to send, then sends it after the commit. A crash between the two leaves
work unsent, never half-recorded: the reconciler (:func:`repair`) sends it again, and
outcomes are counted once. The web app, the CLI, the scheduler and the ``Progress``
middleware call these functions; none of them sends messages itself.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable

import dramatiq

import pipelines
from db import ai_spend, control, jobs, limit_waits, progress, reconcile, schedules
from pipelines import DispatchSpec

logger = logging.getLogger(__name__)

#: Message option carrying the AI turn booked for a message (``db.limits.Ticket``).
AI_TURN_OPTION = "ai_turn"


def send_all(specs: Iterable[DispatchSpec]) -> int:
    """Send each spec (see :func:`send`); return the messages sent now."""
    return sum(send(spec) for spec in specs)


def send(spec: DispatchSpec) -> int:
    """Send what ``spec`` says as a group or pipeline; return the messages sent now.

    A pipeline counts as one: its later steps are sent as the earlier ones succeed.
    """
    broker = dramatiq.get_broker()
    composed = pipelines.compose(spec, broker)
    if composed is None:
        return 0
    if isinstance(composed, dramatiq.pipeline):
        composed.run()
        return 1
    # Our Redis broker sends a whole group in 2 commands instead of 2 per message.
    batched = getattr(broker, "batched_enqueues", contextlib.nullcontext)
    with batched():
        composed.run()
    return len(spec.run_ids)


def submit(
    project_id: int,
    *,
    batch_size: int,
    max_batch_size: int,
    max_tasks: int,
    strategy: str = pipelines.FLOW,
    max_in_flight: int | None = None,
    max_retries: int | None = None,
    ai_cap: ai_spend.Cap | None = None,
) -> int:
    """Validate, plan and write a job for a project, then send what is ready at once.

    Returns the job id. With ``ai_cap`` (``ai_spend.cap_of(settings)``), a job whose
    estimated AI cost would pass what is left of the monthly budget is refused.

    Raises:
      db.jobs.NotFoundError: when the project does not exist.
      pipelines.PlanError: when the batch size or the project's dependency graph is invalid.
      db.ai_spend.BudgetExceededError: when the job would pass the monthly AI budget.
    """
    created = jobs.create_job(
        project_id,
        batch_size=batch_size,
        max_batch_size=max_batch_size,
        max_tasks=max_tasks,
        strategy=strategy,
        max_in_flight=max_in_flight,
        max_retries=max_retries,
        ai_cap=ai_cap,
    )
    send_all(created.dispatches)
    return created.job_id


def retry(job_id: int) -> control.Retried:
    """Plan a finished job's failed and skipped tasks again, then send what is ready.

    Raises:
      db.jobs.NotFoundError: when the job does not exist.
      db.control.NotRetryableError: when the job has nothing to retry.
    """
    retried = control.retry_job(job_id)
    send_all(retried.dispatches)
    return retried


def cancel(job_id: int) -> bool:
    """Cancel a running job; False when it had already ended (nothing is sent either way).

    Raises:
      db.jobs.NotFoundError: when the job does not exist.
    """
    return control.cancel_job(job_id)


def repair(stall_timeout_s: float) -> list[reconcile.Repair]:
    """Find stalled work, claim its repairs in one transaction, then send what they need."""
    repairs = reconcile.find_repairs(stall_timeout_s)
    for done in repairs:
        logger.warning("Job %d: %s.", done.job_id, done.description, extra={"action": "reconcile"})
        send_all(done.dispatches)
    return repairs


def fire_schedules(
    *,
    max_tasks: int,
    max_batch_size: int,
    strategy: str = pipelines.FLOW,
    ai_cap: ai_spend.Cap | None = None,
) -> list[schedules.Fired]:
    """Write the jobs of due schedules (within the monthly AI budget), then send them."""
    fired = schedules.fire_due(
        max_tasks=max_tasks, max_batch_size=max_batch_size, strategy=strategy, ai_cap=ai_cap
    )
    for started in fired:
        if started.job_id is not None:
            logger.info("Schedule %d started job %s.", started.schedule_id, started.job_id)
            send_all(started.dispatches)
    return fired


def follow_up(outcome: progress.Outcome) -> None:
    """Act on a committed outcome: send the work it released, log a job it finished."""
    send_all(outcome.dispatches)
    if outcome.job_status is not None:
        logger.info(
            "A job finished with status %s.", outcome.job_status, extra={"action": "finish_job"}
        )


def wake(wakes: Iterable[limit_waits.Wake]) -> int:
    """Send the parked messages handed an AI call slot, each with its booked turn.

    After the commit that handed the slots (``db.limit_waits``). Returns the messages sent.
    """
    broker = dramatiq.get_broker()
    sent = 0
    for woken in wakes:
        message = dramatiq.Message.decode(woken.message.encode())
        message = message.copy(options={AI_TURN_OPTION: woken.ticket.to_option()})
        broker.enqueue(message, delay=math.ceil(1000 * woken.delay_s) or None)
        sent += 1
    return sent
