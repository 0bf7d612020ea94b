"""Read what a generator needs for one task run, and store the guide it wrote."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import orm

import errors
from db.engine import statements_committing_alone, upsert_insert
from db.models import HandsOn, Project, Task, TaskRun, task_dependencies, utcnow
from db.run_reads import Row, RunRead


class RunNotFoundError(errors.NotFoundError):
    """Raised when a task run no longer exists (its job or project was deleted)."""


@dataclasses.dataclass(frozen=True)
class Dependency:
    """A task the requested task depends on, with its guide when one exists."""

    title: str
    guide: str | None = None


@dataclasses.dataclass(frozen=True)
class GuideRequest:
    """Everything a generator may use to write one task's hands-on guide."""

    project_name: str
    task_key: str
    task_title: str
    task_description: str = ""
    dependencies: tuple[Dependency, ...] = ()
    #: In a pipeline, the guide written by the previous step.
    previous_guide: str | None = None
    #: The job the run belongs to (None when unknown).
    job_id: int | None = None
    #: What the project is about, in the user's words.
    project_description: str = ""


@dataclasses.dataclass(frozen=True)
class Usage:
    """What writing one guide took from the AI provider (stored with the guide)."""

    #: The model that wrote it (as the provider names it).
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: True when the tokens were estimated from characters (no ``usage`` from the provider).
    estimated: bool = False
    #: Time the generator took, in milliseconds.
    latency_ms: int = 0
    #: Version of the prompt the guide was written from.
    prompt_version: str | None = None
    #: What it cost, in the currency of the ``AI_PRICE_*`` settings.
    cost: float = 0.0

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


#: The usage of a guide whose writer reported none (a custom generator's plain text).
NO_USAGE = Usage(model="")


# Built once: building a statement costs more Python time than running it does.
_dependency = orm.aliased(Task)
#: The run's task and project, with one row per dependency (its title and guide), or a
#: single row with NULLs there when it has none.
REQUEST_OF_RUN = (
    sa.select(
        Task.key,
        Task.title,
        Task.description,
        Project.name,
        Project.description.label("project_description"),
        TaskRun.job_id,
        _dependency.title.label("dependency_title"),
        HandsOn.markdown.label("dependency_guide"),
        _dependency.position.label("dependency_position"),
    )
    .join(TaskRun, TaskRun.task_id == Task.id)
    .join(Project, Project.id == Task.project_id)
    .outerjoin(task_dependencies, task_dependencies.c.task_id == Task.id)
    .outerjoin(_dependency, _dependency.id == task_dependencies.c.depends_on_id)
    .outerjoin(HandsOn, HandsOn.task_id == _dependency.id)
    .where(TaskRun.id == sa.bindparam("run_id"))
    .order_by(_dependency.position)
)


def read_request(
    session: orm.Session, run_id: int, previous_guide: str | None = None
) -> GuideRequest:
    """Build the generator's request for a task run, with its dependencies' guides.

    One query, on the caller's connection (:data:`REQUEST` reads the same within a
    run's start: see :func:`db.starts.start_run`).

    Raises:
      RunNotFoundError: when the run is gone.
    """
    rows = session.connection().execute(REQUEST_OF_RUN, {"run_id": run_id}).mappings().all()
    if not rows:
        raise RunNotFoundError(f"task run {run_id} does not exist")
    return dataclasses.replace(request_of_rows(rows), previous_guide=previous_guide)


def request_of_rows(rows: Sequence[Row]) -> GuideRequest:
    """Return the request that rows of :data:`REQUEST_OF_RUN` describe, in their order.

    Raises:
      RunNotFoundError: when there are none (the run is gone).
    """
    if not rows:
        raise RunNotFoundError("the task run does not exist")
    task = rows[0]
    return GuideRequest(
        project_name=task["name"] or "",
        project_description=task["project_description"] or "",
        task_key=task["key"],
        task_title=task["title"],
        task_description=task["description"],
        dependencies=tuple(
            Dependency(row["dependency_title"], row["dependency_guide"])
            for row in rows
            if row["dependency_title"] is not None
        ),
        job_id=task["job_id"],
    )


#: What the generation actor reads when its run starts (its ``prepare_run``).
REQUEST = RunRead(REQUEST_OF_RUN, request_of_rows, order_by=("dependency_position",))


def save_guide(run_id: int, markdown: str, generator: str, usage: Usage = NO_USAGE) -> None:
    """Store (or replace) the guide of the run's task, with its usage; safe to repeat.

    One ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` statement.

    Raises:
      RunNotFoundError: when the run is gone.
    """
    with statements_committing_alone() as connection:
        store_guide(connection, run_id, markdown, generator, usage)


def store_guide(
    connection: sa.Connection,
    run_id: int,
    markdown: str,
    generator: str,
    usage: Usage = NO_USAGE,
) -> None:
    """Store (or replace) the guide of the run's task within the caller's transaction.

    Raises:
      RunNotFoundError: when the run is gone.
    """
    parameters = guide_parameters(run_id, markdown, generator, usage)
    if connection.execute(upsert_guide(connection.dialect.name), parameters).first() is None:
        raise RunNotFoundError(f"task run {run_id} does not exist")


def guide_parameters(
    run_id: int, markdown: str, generator: str, usage: Usage = NO_USAGE
) -> dict[str, object]:
    """The parameters of :func:`upsert_guide` for a guide and its usage."""
    return {
        "run_id": run_id,
        "text": markdown,
        "written_by": generator,
        "now": utcnow(),
        **{f"u_{name}": value for name, value in _usage_columns(usage).items()},
    }


def _usage_columns(usage: Usage) -> dict[str, object]:
    """The guide's usage columns and their values for ``usage``."""
    return {
        "model": usage.model or None,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "tokens_estimated": usage.estimated,
        "latency_ms": usage.latency_ms,
        "cost": usage.cost,
        "prompt_version": usage.prompt_version,
    }


#: Columns the upsert writes and replaces (the task's and creation time aside).
_REPLACED = ("job_id", "markdown", "generator", *_usage_columns(NO_USAGE), "updated_at")


_TIMES = ("updated_at", "created_at")


@functools.lru_cache(maxsize=2)
def upsert_guide(dialect_name: str) -> sa.Insert:
    """Return the guide upsert for a dialect (``ON CONFLICT`` is dialect-specific), built once."""
    now = sa.bindparam("now", type_=HandsOn.updated_at.type)
    usage = [
        sa.bindparam(f"u_{name}", type_=HandsOn.__table__.c[name].type)
        for name in _usage_columns(NO_USAGE)
    ]
    insert = upsert_insert(dialect_name, HandsOn).from_select(
        ["task_id", "job_id", "markdown", "generator", *_usage_columns(NO_USAGE), *_TIMES],
        sa.select(
            TaskRun.task_id,
            TaskRun.job_id,
            sa.bindparam("text", type_=HandsOn.markdown.type),
            sa.bindparam("written_by", type_=HandsOn.generator.type),
            *usage,
            now,
            now,
        ).where(TaskRun.id == sa.bindparam("run_id")),
    )
    upsert = insert.on_conflict_do_update(
        index_elements=[HandsOn.task_id],
        set_={name: insert.excluded[name] for name in _REPLACED},
    )
    return upsert.returning(HandsOn.task_id)  # no row: the run is gone
