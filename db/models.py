"""SQLAlchemy 2.0 typed models: projects, tasks, guides, jobs, batches, task runs, events."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.orm import Mapped, mapped_column


def utcnow() -> dt.datetime:
    """Return the current time in UTC (timezone-aware)."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops zones)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class Base(orm.DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints stably."""

    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {dt.datetime: UTCDateTime()}


class JobStatus(enum.StrEnum):
    """Life cycle of a generation job."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BatchMode(enum.StrEnum):
    """How a batch's tasks run: independently (group) or each fed the previous (pipeline)."""

    GROUP = "group"
    PIPELINE = "pipeline"


class BatchStatus(enum.StrEnum):
    """Life cycle of a batch."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class RunStatus(enum.StrEnum):
    """Life cycle of one task's run within a job."""

    #: Not released yet: waits for what its unit is linked to, or for a free slot.
    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


#: Run states of released work that still awaits an outcome.
UNFINISHED_RUN_STATES = (RunStatus.QUEUED, RunStatus.RUNNING)
#: Run states that still await an outcome, released or not.
OPEN_RUN_STATES = (RunStatus.WAITING, RunStatus.QUEUED, RunStatus.RUNNING)

task_dependencies = sa.Table(
    "task_dependencies",
    Base.metadata,
    sa.Column("task_id", sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("depends_on_id", sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
)


class Project(Base):
    """A project: a named list of tasks."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    tasks: Mapped[list[Task]] = orm.relationship(
        back_populates="project", order_by="Task.position", cascade="all, delete-orphan"
    )


class Task(Base):
    """One task of a project; may depend on other tasks of the same project."""

    __tablename__ = "tasks"
    __table_args__ = (sa.UniqueConstraint("project_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(sa.String(100))
    position: Mapped[int]
    title: Mapped[str] = mapped_column(sa.String(300))
    description: Mapped[str] = mapped_column(sa.Text, default="")

    project: Mapped[Project] = orm.relationship(back_populates="tasks")
    depends_on: Mapped[list[Task]] = orm.relationship(
        secondary=task_dependencies,
        primaryjoin=lambda: Task.id == task_dependencies.c.task_id,
        secondaryjoin=lambda: Task.id == task_dependencies.c.depends_on_id,
        order_by=lambda: Task.position,
    )
    hands_on: Mapped[HandsOn | None] = orm.relationship(
        back_populates="task", cascade="all, delete-orphan"
    )


class HandsOn(Base):
    """The generated hands-on guide of a task (one per task, replaced on regeneration)."""

    __tablename__ = "hands_on"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"), unique=True)
    job_id: Mapped[int | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    markdown: Mapped[str] = mapped_column(sa.Text)
    generator: Mapped[str] = mapped_column(sa.String(100))
    #: The model that wrote it (None: written before usage was metered).
    model: Mapped[str | None] = mapped_column(sa.String(100))
    #: Tokens of the prompt and of the answer (estimated from characters when
    #: ``tokens_estimated``: the provider gave no ``usage``, or the offline generator).
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    tokens_estimated: Mapped[bool] = mapped_column(default=False)
    #: Time the generator took, in milliseconds.
    latency_ms: Mapped[int | None]
    #: What the call cost, in the currency of the ``AI_PRICE_*`` settings.
    cost: Mapped[float] = mapped_column(sa.Float, default=0.0)
    #: Version of the prompt it was written from (see ``workers.generators.prompt``).
    prompt_version: Mapped[str | None] = mapped_column(sa.String(40))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    task: Mapped[Task] = orm.relationship(back_populates="hands_on")


class Job(Base):
    """A generation job: one guide per task of a project, released as dispatch units."""

    __tablename__ = "jobs"
    __table_args__ = (sa.Index("ix_jobs_project_id", "project_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(sa.String(16), default=JobStatus.RUNNING)
    batch_size: Mapped[int]
    #: ``flow`` (tasks go when their dependencies succeeded) or ``batches`` (barriers).
    strategy: Mapped[str] = mapped_column(sa.String(16), default="flow")
    #: Most units (a task, or a pipeline) queued or running at once: the AI load.
    max_in_flight: Mapped[int]
    #: Units queued or running now; moved under the job's row lock.
    in_flight: Mapped[int] = mapped_column(default=0)
    #: True when a ready unit may be waiting for a free slot: an outcome that frees a
    #: slot but makes nothing ready looks for ready units only then (under the row's lock).
    ready_waiting: Mapped[bool] = mapped_column(default=False)
    max_retries: Mapped[int | None]
    total_tasks: Mapped[int]
    #: Batches released so far (a batch is made when its work is released).
    total_batches: Mapped[int]
    done_tasks: Mapped[int] = mapped_column(default=0)
    succeeded_tasks: Mapped[int] = mapped_column(default=0)
    failed_tasks: Mapped[int] = mapped_column(default=0)
    skipped_tasks: Mapped[int] = mapped_column(default=0)
    cancelled_tasks: Mapped[int] = mapped_column(default=0)
    completed_batches: Mapped[int] = mapped_column(default=0)
    #: AI usage of its guides, totals moved with each outcome (cost: ``AI_PRICE_*``'s currency).
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    cost: Mapped[float] = mapped_column(sa.Float, default=0.0)
    #: ``AI_MONTHLY_BUDGET`` when it was submitted: at it, the job stops releasing work.
    ai_budget: Mapped[float | None] = mapped_column(sa.Float)
    #: Index of the batch running now (the origin's ``current_processing``).
    current_batch: Mapped[int | None]
    #: Sequence number of the job's last event; bumped under the job's row lock.
    event_seq: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]

    project: Mapped[Project] = orm.relationship()
    batches: Mapped[list[Batch]] = orm.relationship(
        back_populates="job", order_by="Batch.index", cascade="all, delete-orphan"
    )


class Batch(Base):
    """One batch of a job, dispatched as a Dramatiq group or pipeline."""

    __tablename__ = "batches"
    __table_args__ = (sa.UniqueConstraint("job_id", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int]
    mode: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16), default=BatchStatus.PENDING)
    total: Mapped[int]
    done: Mapped[int] = mapped_column(default=0)
    succeeded: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    skipped: Mapped[int] = mapped_column(default=0)
    cancelled: Mapped[int] = mapped_column(default=0)
    #: How many times the batch's messages were sent (1 unless repaired).
    dispatches: Mapped[int] = mapped_column(default=0)
    #: When the batch's messages were last sent (the reconciler's sign of life).
    dispatched_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    job: Mapped[Job] = orm.relationship(back_populates="batches")
    runs: Mapped[list[TaskRun]] = orm.relationship(
        back_populates="batch", order_by="TaskRun.position"
    )


#: A released-when-ready unit's first run: the engine's index finds ready ones at once.
_READY = sa.text("status = 'waiting' AND step = 0 AND waiting_on <= 0")


class TaskRun(Base):
    """One task's run within a job: its state, attempts, error and timings."""

    __tablename__ = "task_runs"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "task_id"),
        sa.Index("ix_task_runs_batch_position", "batch_id", "position"),
        sa.Index("ix_task_runs_task_id", "task_id"),
        sa.Index("ix_task_runs_job_unit", "job_id", "unit", "step"),
        sa.Index(
            "ix_task_runs_ready", "job_id", "unit", postgresql_where=_READY, sqlite_where=_READY
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    #: The batch it was released in; None while it waits.
    batch_id: Mapped[int | None] = mapped_column(sa.ForeignKey("batches.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"))
    #: Place within the batch (a pipeline's step number).
    position: Mapped[int]
    #: The planned unit it belongs to (release order) and its step there (0: the first).
    unit: Mapped[int] = mapped_column(default=0)
    step: Mapped[int] = mapped_column(default=0)
    #: ``group`` or ``pipeline``: how its unit goes out.
    unit_mode: Mapped[str] = mapped_column(sa.String(16), default="group")
    #: Links into its unit not done yet (first step only); 0 and waiting: ready.
    waiting_on: Mapped[int] = mapped_column(default=0)
    #: Whether its end frees its unit's slot (a group's every task, a pipeline's last).
    frees_slot: Mapped[bool] = mapped_column(default=True)
    #: Its longest chain of tasks left, itself included (``pipelines.remaining_paths``),
    #: sent with its message so a priority-aware broker runs long chains first; 0: unranked.
    rank: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    status: Mapped[str] = mapped_column(sa.String(16), default=RunStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    #: Last state change (start, retry, outcome): the reconciler's sign of life.
    updated_at: Mapped[dt.datetime | None]

    job: Mapped[Job] = orm.relationship()
    batch: Mapped[Batch] = orm.relationship(back_populates="runs")
    task: Mapped[Task] = orm.relationship()


class RunLink(Base):
    """When ``run_id`` ends, the unit that starts with ``next_run_id`` waits for one less."""

    __tablename__ = "run_links"

    run_id: Mapped[int] = mapped_column(
        sa.ForeignKey("task_runs.id", ondelete="CASCADE"), primary_key=True
    )
    next_run_id: Mapped[int] = mapped_column(
        sa.ForeignKey("task_runs.id", ondelete="CASCADE"), primary_key=True
    )


class Event(Base):
    """A state change of a job, numbered per job in commit order (``seq``)."""

    __tablename__ = "events"
    __table_args__ = (sa.UniqueConstraint("job_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int]
    type: Mapped[str] = mapped_column(sa.String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Schedule(Base):
    """A recurring job: a project generated on a cron schedule."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id", ondelete="CASCADE"))
    #: Five-field crontab expression, in UTC.
    cron: Mapped[str] = mapped_column(sa.String(100))
    batch_size: Mapped[int]
    #: The next due time; claimed by a guarded update so it fires once.
    next_run_at: Mapped[dt.datetime]
    last_run_at: Mapped[dt.datetime | None]
    last_job_id: Mapped[int | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Lease(Base):
    """A named lease: the one holder whose lease has not expired is the active one."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(200))
    expires_at: Mapped[dt.datetime]


class AILimit(Base):
    """A provider's shared state across worker processes: a pause asked for by a 429."""

    __tablename__ = "ai_limits"

    #: The provider (the generator's name up to its first colon: ``openai``).
    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    #: No call to the provider starts before this (its ``Retry-After``); None: no pause.
    paused_until: Mapped[dt.datetime | None]


class AISlot(Base):
    """One slot of a provider limit, taken by a guarded update: free when ``until`` passed.

    ``kind`` ``call``: a call in flight, held until released or its lease ends (a killed
    worker's slot comes back). ``kind`` ``minute``: one request of the per-minute rate,
    free again 60 s after the request started (an exact sliding window).
    """

    __tablename__ = "ai_slots"
    __table_args__ = (
        sa.UniqueConstraint("name", "kind", "n"),
        sa.Index("ix_ai_slots_free", "name", "kind", "until"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(8))
    #: Its number among the provider's slots of this kind (0 .. limit - 1).
    n: Mapped[int]
    until: Mapped[dt.datetime]


class AIWaiter(Base):
    """A task message parked until a call slot of its provider frees (``db.limit_waits``).

    The slot's holder hands it over when it gives the slot back, oldest waiter first:
    nothing re-checks on a timer. ``message`` is the encoded Dramatiq message, sent
    again as it was (a pipeline step keeps its next steps and its retry count).
    """

    __tablename__ = "ai_waiters"
    __table_args__ = (sa.Index("ix_ai_waiters_name", "name", "id"),)

    #: Increasing: the oldest waiter is the lowest.
    id: Mapped[int] = mapped_column(primary_key=True)
    #: The provider whose call slot it waits for.
    name: Mapped[str] = mapped_column(sa.String(64))
    #: The task run its message carries; one waiter per run (a duplicate is dropped).
    run_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("task_runs.id", ondelete="CASCADE"), unique=True
    )
    message: Mapped[str] = mapped_column(sa.Text)
    since: Mapped[dt.datetime]
