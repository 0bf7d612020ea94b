"""The JSON API: projects, jobs (start, cancel, retry), guides and the health check.

Errors are ``{"error": {"code", "message", "field"}}`` (see :mod:`web.errors`). Writes
take ``application/json`` bodies (so a cross-site HTML form cannot post here) and, when
``API_TOKEN`` is set, ``Authorization: Bearer <API_TOKEN>``; a deployed app without it
takes none unless ``API_OPEN`` (see :func:`web.security.check_api_token`). Writes whose
body is optional (start a project's job, cancel, retry) also take no body at all, but
not an empty form post. A project's job starts once: not while one runs, and once per
``Idempotency-Key`` (see :mod:`db.idempotency`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify, request, url_for

import pipelines
from db import ai_spend, control, idempotency, jobs, projects
from db import inputs as db_inputs
from db.engine import session_scope
from db.models import Job
from web import inputs, queries
from web.errors import ApiError
from web.markdown import render
from web.security import check_api_token
from workers import dispatch

logger = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")
bp.before_request(check_api_token)


def error_code(error: Exception) -> str:
    """Return a snake_case code for an exception class (``CycleError`` -> ``cycle``)."""
    name = type(error).__name__.removesuffix("Error")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() or "invalid"


def plan_error(error: pipelines.PlanError) -> ApiError:
    """Turn a planning or import error into a 422 naming the field to fix."""
    return ApiError(422, str(error), code=error_code(error), field=error.field)


def _optional(options: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """Return ``options[name]`` when it is a ``kind``, ``default`` when absent.

    Raises:
      ApiError: 422 naming the field when it has another type.
    """
    value = options.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, kind):
        noun = "an integer" if kind is int else "a string"
        raise ApiError(422, f"{name} must be {noun}.", code=name, field=name)
    return value


def start_job(project_id: int, options: dict[str, Any]) -> int:
    """Submit a job with ``batch_size``, ``strategy`` and ``max_in_flight`` from ``options``.

    Turns bad input into API errors; returns the job id.
    """
    settings = current_app.config["HANDSON"]
    batch_size = _optional(options, "batch_size", int, settings.BATCH_SIZE)
    strategy = _optional(options, "strategy", str, settings.JOB_STRATEGY)
    max_in_flight = _optional(options, "max_in_flight", int, None)
    try:
        return dispatch.submit(
            project_id,
            batch_size=batch_size,
            max_batch_size=settings.MAX_BATCH_SIZE,
            max_tasks=settings.MAX_TASKS,
            strategy=strategy,
            max_in_flight=max_in_flight,
            ai_cap=ai_spend.cap_of(settings),
        )
    except jobs.NotFoundError:
        raise ApiError(404, f"Project {project_id} does not exist.") from None
    except pipelines.BatchSizeError as error:
        raise ApiError(422, str(error), code="batch_size", field="batch_size") from None
    except pipelines.PlanError as error:
        raise plan_error(error) from None


def _start_once(
    project_id: int, force: Any, submit: Callable[[], int]
) -> tuple[Any, int, dict[str, str]]:
    """Start a job with ``submit`` unless one of the project runs or the key started one.

    Raises:
      ApiError: 409 ``job_running`` with the running job's id (unless ``force``), 409
        ``idempotency_key_in_use`` while the same key is being handled, 422 for a bad
        ``force`` or key, and those of :func:`start_job`.
    """
    if not isinstance(force, bool):
        raise ApiError(422, "force must be true or false.", field="force")
    key = request.headers.get("Idempotency-Key")
    try:
        with idempotency.starting(project_id, key=key, force=force) as start:
            if start.job_id is None:
                start.started(submit())
    except idempotency.JobRunningError as error:
        message = f'{str(error)[:1].upper()}{str(error)[1:]} (send "force": true).'
        raise ApiError(409, message, code=error.code, extra={"job_id": error.job_id}) from None
    except (idempotency.KeyInUseError, db_inputs.InputError) as error:
        status = 409 if isinstance(error, idempotency.KeyInUseError) else 422
        raise ApiError(status, f"{error}.", code=error.code, field=error.field) from None
    body, status, headers = _accepted(start.job_id)
    if start.replayed:
        headers["Idempotent-Replayed"] = "true"
    return body, status, headers


def _accepted(job_id: int) -> tuple[Any, int, dict[str, str]]:
    location = url_for("api.get_job", job_id=job_id)
    return jsonify({"job_id": job_id}), 202, {"Location": location}


@bp.post("/projects")
def create_project() -> tuple[Any, int, dict[str, str]]:
    """Create a project from an import document; 201 with the project."""
    data = inputs.json_body()
    try:
        spec = projects.parse_project(data, max_tasks=current_app.config["HANDSON"].MAX_TASKS)
    except pipelines.PlanError as error:
        raise plan_error(error) from None
    project_id = projects.create_project(spec)
    location = url_for("api.get_project", project_id=project_id)
    return jsonify(queries.project_data(project_id)), 201, {"Location": location}


@bp.get("/projects/<id:project_id>")
def get_project(project_id: int) -> Any:
    """Return a project with its tasks and their dependencies."""
    data = queries.project_data(project_id)
    if data is None:
        raise ApiError(404, f"Project {project_id} does not exist.")
    return jsonify(data)


@bp.post("/projects/<id:project_id>/jobs")
def create_job(project_id: int) -> tuple[Any, int, dict[str, str]]:
    """Start a generation job for the project; 202 ``{"job_id"}``.

    Body (all optional): ``{"batch_size", "strategy", "max_in_flight", "force"}``.
    """
    data = inputs.optional_json_object()
    force = data.get("force", False)
    return _start_once(project_id, force, lambda: start_job(project_id, data))


@bp.post("/task_hands_on/generate_all")
def generate_all() -> tuple[Any, int, dict[str, str]]:
    """The origin's contract: ``{"project_id", "config": {"batch_size"}}`` -> 202 ``{"job_id"}``."""
    data = inputs.json_object()
    project_id = inputs.json_id(data, "project_id", "Project")
    config = data.get("config")
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise ApiError(422, "config must be an object.", field="config")
    force = data.get("force", False)
    return _start_once(project_id, force, lambda: start_job(project_id, config))


@bp.get("/jobs")
def list_jobs() -> Any:
    """Return jobs newest first, paginated: ``?page=1&per_page=20``."""
    page = inputs.query_int("page", 1)
    per_page = inputs.query_int("per_page", 20, maximum=100)
    return jsonify(queries.jobs_page(page, per_page))


@bp.get("/jobs/<id:job_id>")
def get_job(job_id: int) -> Any:
    """Return the job: status, counters, batches and task runs."""
    try:
        return jsonify(jobs.snapshot(job_id))
    except jobs.NotFoundError:
        raise ApiError(404, f"Job {job_id} does not exist.") from None


def _job_status(job_id: int) -> str:
    """Return the job's status.

    Raises:
      ApiError: 404 when the job does not exist.
    """
    with session_scope() as session:
        status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
    if status is None:
        raise ApiError(404, f"Job {job_id} does not exist.")
    return str(status)


@bp.post("/jobs/<id:job_id>/cancel")
def cancel_job(job_id: int) -> Any:
    """Cancel a running job; 200 ``{"job_id", "cancelled", "status"}``, idempotent.

    ``cancelled`` is False when the job had already ended (nothing changes then).
    """
    inputs.optional_json_object()
    try:
        cancelled = dispatch.cancel(job_id)
    except jobs.NotFoundError:
        raise ApiError(404, f"Job {job_id} does not exist.") from None
    status = "cancelled" if cancelled else _job_status(job_id)
    return jsonify({"job_id": job_id, "cancelled": cancelled, "status": status})


@bp.post("/jobs/<id:job_id>/retry")
def retry_job(job_id: int) -> tuple[Any, int, dict[str, str]]:
    """Rerun the failed and skipped tasks of a partial or failed job; 202.

    Answers ``{"job_id", "tasks", "batches"}`` (how many tasks run again, and how many
    new batches went out at once; more follow as their dependencies succeed) with
    ``Location`` of the job.
    """
    inputs.optional_json_object()
    try:
        retried = dispatch.retry(job_id)
    except jobs.NotFoundError:
        raise ApiError(404, f"Job {job_id} does not exist.") from None
    except control.NotRetryableError as error:
        message = str(error)
        raise ApiError(409, f"{message[:1].upper()}{message[1:]}.", code="not_retryable") from None
    logger.info(
        "Retrying %d task(s) of job %d.", retried.tasks, job_id, extra={"action": "retry_job"}
    )
    body = {"job_id": job_id, "tasks": retried.tasks, "batches": len(retried.dispatches)}
    return jsonify(body), 202, {"Location": url_for("api.get_job", job_id=job_id)}


@bp.get("/tasks/<id:task_id>/hands_on")
def get_hands_on(task_id: int) -> Any:
    """Return the task's generated guide, as Markdown and as sanitized HTML."""
    guide = queries.guide_data(task_id)
    if guide is None:
        raise ApiError(404, f"Task {task_id} does not exist.")
    if guide["markdown"] is None:
        raise ApiError(404, f"Task {task_id} has no guide yet.", code="not_generated")
    return jsonify({**guide, "html": str(render(guide["markdown"]))})
