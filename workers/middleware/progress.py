"""Record the final outcome of every task message in the database, exactly once."""

from __future__ import annotations

import contextvars
import logging
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware, MiddlewareError, SkipMessage

import db
import errors
from db import precompile, progress, starts
from db.guides import Usage
from db.models import RunStatus
from workers import dispatch

#: Longest error text stored on a task run, in characters.
MAX_ERROR_CHARS = 2_000

_prepared: contextvars.ContextVar[Any] = contextvars.ContextVar("handson_prepared", default=None)


_with_outcome: contextvars.ContextVar[progress.Write | None] = contextvars.ContextVar(
    "handson_with_outcome", default=None
)


_spent: contextvars.ContextVar[Usage | None] = contextvars.ContextVar("handson_spent", default=None)


def prepared() -> Any:
    """Return what the current message's ``prepare_run`` read when its run started.

    None outside a worker's handling of a message of an actor with that option.
    """
    return _prepared.get()


def write_with_outcome(write: progress.Write) -> None:
    """Have ``write(session)`` run in the transaction that records the message's success.

    For an actor's own last write: one transaction (and round trips) less per task. Only
    while a worker handles a message of an actor with ``progress=True``.
    """
    _with_outcome.set(write)


def spend_with_outcome(usage: Usage) -> None:
    """Have the AI usage of the message's guide added to its job's totals with its success.

    Counted once, in the outcome's transaction (a message that runs twice is counted
    once). Only while a worker handles a message of an actor with ``progress=True``.
    """
    _spent.set(usage)


def _forget_message() -> tuple[progress.Write | None, Usage | None]:
    """Drop what the finished message left for this thread; return its outcome's extras."""
    write, spent = _with_outcome.get(), _spent.get()
    _prepared.set(None)
    _with_outcome.set(None)
    _spent.set(None)
    return write, spent


def describe(exception: BaseException) -> str:
    """Return a one-line description of a task failure for users to read."""
    text = str(exception).strip()
    name = type(exception).__name__
    return (f"{name}: {text}" if text else name)[:MAX_ERROR_CHARS]


class StartFailedError(errors.HandsonError, MiddlewareError):
    """Raised when a run could not be marked started (database down, a bug).

    A ``MiddlewareError`` stops the message before its actor runs; ``Retries`` then
    retries it like any failure, and its outcome is recorded once.
    """


class Progress(Middleware):
    """Turns task messages' fates into guarded database updates and releases what is ready.

    Must sit before ``Pipelines`` (which sits before ``Retries``) in the broker's
    middleware list: ``after_*`` hooks run in reverse order, so Retries has decided
    whether a failure is final (``message.failed``) by the time this middleware records
    it, and a pipeline's next step is already on its way while the outcome is written
    (off the critical path; a crash in between redelivers this step, counted once).

    Actors opt in with ``progress=True``; their first argument is the task run id. An
    actor may also give ``prepare_run=f``: ``f(session, run_id)`` runs when the run is
    marked started (in the start's own statement on PostgreSQL when ``f`` is a
    :class:`db.run_reads.RunRead`), and the actor reads its result with
    :func:`prepared`. Its last write may go with the outcome: :func:`write_with_outcome`.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")

    @property
    def actor_options(self) -> set[str]:
        return {"progress", "prepare_run"}

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        """Open a database connection per worker thread and compile the per-task SQL."""
        try:
            db.warm_up(worker.worker_threads)
            precompile.compile_ahead()
        except Exception as error:  # the database may be down: tasks will retry
            self.logger.warning("Could not prepare the database at boot: %s", error)

    def _run_id(self, broker: dramatiq.Broker, message: Any) -> int | None:
        return message.args[0] if self._options(broker, message).get("progress") else None

    @staticmethod
    def _options(broker: dramatiq.Broker, message: Any) -> dict[str, Any]:
        return broker.get_actor(message.actor_name).options

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        options = self._options(broker, message)
        if not options.get("progress"):
            return
        run_id = message.args[0]
        try:
            started = starts.start_run(run_id, options.get("prepare_run"))
        except Exception as error:
            # Anything but a MiddlewareError is logged by Dramatiq and the actor runs
            # anyway: an AI call paid for a run that was never marked started.
            raise StartFailedError(f"task run {run_id} could not start: {error}") from error
        dispatch.follow_up(started.outcome)
        if started.decision is not starts.Start.RUN:
            raise SkipMessage(f"task run {run_id}: {started.decision}")
        _prepared.set(started.prepared)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        _forget_message()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        write, spent = _forget_message()
        run_id = self._run_id(broker, message)
        if run_id is None:
            return
        if exception is None:
            outcome = progress.record_outcome(run_id, RunStatus.SUCCEEDED, along=write, spent=spent)
        elif message.failed:
            outcome = progress.record_outcome(run_id, RunStatus.FAILED, describe(exception))
        else:
            progress.record_retry(run_id, describe(exception))
            return
        dispatch.follow_up(outcome)
