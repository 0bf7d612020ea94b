"""The one place that reads the environment (12-factor) into a typed settings object.

Every other module receives a :class:`Settings` (or plain values taken from one);
nothing else in the project touches ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import errors

#: Scheduling strategies a job may use (``pipelines.STRATEGIES``; settings import nothing).
JOB_STRATEGIES = ("flow", "batches")
#: Folder for the embedded SQLite database and other local state.
INSTANCE_DIR = Path(__file__).resolve().parent / "instance"


class SettingsError(errors.InvalidInputError):
    """Raised when an environment variable holds a value of the wrong kind; fix the variable."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Typed, documented settings; defaults give the embedded, zero-server mode."""

    #: SQLAlchemy URL; default: a SQLite file under ``instance/`` (embedded mode).
    DATABASE_URL: str = f"sqlite:///{INSTANCE_DIR / 'handson.db'}"
    #: PostgreSQL connections every process may pool (a fixed size, in connections); unset:
    #: sized from what the process runs: a worker one per thread, the web process
    #: DATABASE_WEB_POOL_SIZE, others (scheduler, CLI) 2. See ``handson budget``.
    DATABASE_POOL_SIZE: int | None = None
    #: PostgreSQL connections a web process pools for its requests, in connections (an
    #: idle event stream holds none; one more connection per web process LISTENs).
    DATABASE_WEB_POOL_SIZE: int = 4
    #: Longest wait for a free pooled connection before a clear error, in seconds.
    DATABASE_POOL_TIMEOUT_S: float = 10.0
    #: A process closes its pooled connections after this long without a database use,
    #: in seconds; 0: keep them open.
    DATABASE_IDLE_TIMEOUT_S: float = 300.0
    #: Threads of the Procfile's worker process (``--threads``), for ``handson budget``.
    WORKER_THREADS: int = 8
    #: Gunicorn worker processes of the web process (gunicorn reads it too), for the budget.
    WEB_CONCURRENCY: int = 1
    #: Redis URL for the Dramatiq broker; unset: in-memory broker, worker threads in-process.
    REDIS_URL: str | None = None
    #: Dramatiq queue that generation messages go to.
    QUEUE_NAME: str = "handson"
    #: Default number of tasks per batch.
    BATCH_SIZE: int = 5
    #: Scheduling of a job that does not name one (API, form, CLI, recurring jobs): ``flow``
    #: (each task as soon as its dependencies are done; the shortest jobs) or ``batches``
    #: (each batch waits for the one before; fewest Redis commands per task).
    JOB_STRATEGY: str = "flow"
    #: Largest batch size a job may ask for.
    MAX_BATCH_SIZE: int = 50
    #: Largest number of tasks in one project.
    MAX_TASKS: int = 1000
    #: Retries of a failing task message before it fails for good.
    MAX_RETRIES: int = 3
    #: Smallest retry back-off, in milliseconds (doubles at each retry).
    MIN_BACKOFF_MS: int = 1_000
    #: Largest retry back-off, in milliseconds.
    MAX_BACKOFF_MS: int = 60_000
    #: Time limit for one generation attempt, in milliseconds.
    TASK_TIME_LIMIT_MS: int = 300_000
    #: Worker threads of the embedded worker (web app, CLI) in embedded mode.
    EMBEDDED_WORKER_THREADS: int = 8
    #: Generator: ``offline``, ``openai``, or ``package.module:factory``.
    GENERATOR: str = "offline"
    #: Simulated AI latency of the offline generator, in milliseconds (``make run``: 400).
    GENERATOR_LATENCY_MS: int = 0
    #: Spread of that latency: the sigma of a lognormal around it (0: constant; about 0.5
    #: looks like real AI calls). Each task's draw is seeded by its key and job id, so a
    #: run is reproducible.
    GENERATOR_LATENCY_JITTER: float = 0.0
    #: Base URL of an OpenAI-compatible API (``.../v1``).
    OPENAI_BASE_URL: str = "https://api.openai.com/v1"
    #: API key for the OpenAI-compatible API; never logged.
    OPENAI_API_KEY: str | None = dataclasses.field(default=None, repr=False)
    #: Chat model name.
    OPENAI_MODEL: str = "gpt-4o-mini"
    #: Timeout of one chat-completions request, in seconds.
    OPENAI_TIMEOUT_S: float = 60.0
    #: HTTP attempts per generation on 429/5xx/connection errors.
    OPENAI_MAX_ATTEMPTS: int = 4
    #: AI calls in flight at once across every worker process, in calls; 0: no limit.
    #: A task waiting for a slot is parked in the database and woken when one is given
    #: back (no thread waits, no attempt counted, nothing re-checks on a timer).
    AI_MAX_CONCURRENT: int = 0
    #: AI requests started in any 60 s window across every worker process; 0: no limit.
    AI_REQUESTS_PER_MINUTE: int = 0
    #: Ask for the guide as a stream of chunks (``stream_options.include_usage``); turn
    #: off for a compatible server that cannot stream.
    OPENAI_STREAM: bool = True
    #: Price of a million prompt tokens, in your currency (default: gpt-4o-mini, USD 0.15).
    AI_PRICE_INPUT_PER_MTOK: float = 0.15
    #: Price of a million completion tokens, in the same currency (gpt-4o-mini: USD 0.60).
    AI_PRICE_OUTPUT_PER_MTOK: float = 0.60
    #: AI spend allowed per calendar month, in the currency of the prices; unset: no cap.
    AI_MONTHLY_BUDGET: float | None = None
    #: Least time between two flushes of a running guide's new text to watchers (the job
    #: and guide pages), per task, in milliseconds; 0: guides are not streamed.
    GUIDE_STREAM_INTERVAL_MS: int = 300
    #: Most text streamed per task run, in characters (the stored guide is not cut).
    GUIDE_STREAM_MAX_CHARS: int = 20_000
    #: Largest generated guide kept, in characters (longer output is cut).
    MAX_GUIDE_CHARS: int = 60_000
    #: Largest import file or request body, in bytes.
    MAX_CONTENT_LENGTH: int = 1_000_000
    #: Flask secret key; required outside debug and embedded mode.
    SECRET_KEY: str | None = dataclasses.field(default=None, repr=False)
    #: When set, API writes need ``Authorization: Bearer <token>``.
    API_TOKEN: str | None = dataclasses.field(default=None, repr=False)
    #: Let anyone write through the API of a deployed app without ``API_TOKEN`` (otherwise
    #: such an app refuses API writes; the embedded mode is always open).
    API_OPEN: bool = False
    #: Mark the session cookie ``Secure`` (sent over HTTPS only): set it behind HTTPS.
    SESSION_COOKIE_SECURE: bool = False
    #: TCP port ``handson serve`` binds (the Procfile's gunicorn binds ``$PORT`` too).
    PORT: int = 5000
    #: Load the built-in sample project when the database has no project.
    LOAD_SAMPLE: bool = False
    #: Logging level of every process.
    LOG_LEVEL: str = "INFO"
    #: Longest time a silently dead Redis connection of an idle consumer can go unnoticed,
    #: in seconds: enforced with TCP keepalive probes, which cost no Redis command.
    REDIS_SAFETY_INTERVAL_S: int = 120
    #: Longest blocking wait of an idle consumer before it re-arms, in milliseconds (one
    #: billed command each time): the backstop for a proxy that keeps answering TCP
    #: probes after losing the server side of a wait.
    REDIS_WAIT_TIMEOUT_MS: int = 1_800_000
    #: How often an idle worker requeues dead workers' unacked messages, in milliseconds
    #: (a busy one: every heartbeat timeout).
    REDIS_MAINTENANCE_INTERVAL_MS: int = 3_600_000
    #: Messages a worker process may hold beyond one per worker thread (fetched ahead).
    REDIS_FETCH_MARGIN: int = 3
    #: How long an ack waits to be sent with others finishing about then, in milliseconds.
    REDIS_ACK_WINDOW_MS: int = 100
    #: Ids at the head of a queue a fetch looks at to take the highest-ranked task first
    #: (the longest chain of tasks left); 0: first in, first out. At most 1000.
    REDIS_RANK_WINDOW: int = 64
    #: Let messages a worker thread sends as it finishes a task (released tasks, a
    #: pipeline's next step) go straight to its own process's free threads (on/off).
    REDIS_LOCAL_HANDOFF: bool = True
    #: Monthly command cap of the Redis plan, for ``handson budget``.
    REDIS_MONTHLY_CAP: int = 500_000
    #: How often the scheduler's reconciler looks for stalled work, in seconds.
    RECONCILE_INTERVAL_S: float = 30.0
    #: Re-dispatch runs silent for this long, in seconds; unset: the time limit + 2 minutes.
    STALL_TIMEOUT_S: float | None = None
    #: Delete events and finished jobs older than this, in days.
    RETENTION_DAYS: float = 30.0
    #: How long the active scheduler's lease lasts unless renewed, in seconds.
    SCHEDULER_LEASE_S: float = 30.0
    #: How often schedulers renew or try to take the lease, and fire due schedules, in seconds.
    SCHEDULER_TICK_S: float = 10.0

    def __post_init__(self) -> None:
        if self.JOB_STRATEGY not in JOB_STRATEGIES:
            choices = ", ".join(JOB_STRATEGIES)
            raise SettingsError(f"JOB_STRATEGY must be one of {choices}, got {self.JOB_STRATEGY!r}")

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured: in-memory broker, worker threads in-process."""
        return not self.REDIS_URL

    @property
    def stall_timeout_s(self) -> float:
        """Seconds without a sign of life after which a run is re-dispatched."""
        if self.STALL_TIMEOUT_S is not None:
            return self.STALL_TIMEOUT_S
        return self.TASK_TIME_LIMIT_MS / 1000 + 120

    def replace(self, **overrides: Any) -> Settings:
        """Return a copy with ``overrides`` applied (used by tests and factories)."""
        return dataclasses.replace(self, **overrides)


def _convert(field: dataclasses.Field[Any], raw: str) -> Any:
    kind = str(field.type)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise SettingsError(f"{field.name} must be a number, got {raw!r}") from None
    if kind.startswith("bool"):
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off", ""}:
            return False
        raise SettingsError(f"{field.name} must be true or false, got {raw!r}")
    return raw or None if "None" in kind else raw


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (default: the process environment).

    Raises:
      SettingsError: when a variable cannot be converted to its type.
    """
    environ = os.environ if environ is None else environ
    values = {
        field.name: _convert(field, environ[field.name])
        for field in dataclasses.fields(Settings)
        if field.name in environ
    }
    # Heroku-style platforms hand out postgres:// URLs; SQLAlchemy wants a driver name.
    url = values.get("DATABASE_URL")
    if url and url.startswith(("postgres://", "postgresql://")):
        values["DATABASE_URL"] = "postgresql+psycopg://" + url.split("://", 1)[1]
    return Settings(**values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment once."""
    return from_env()
