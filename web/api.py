"""The JSON API: projects, jobs, guides and the health check.

Errors are ``{"error": {"code", "message", "field"}}`` (see :mod:`web.errors`). Writes
take ``application/json`` bodies (so a cross-site HTML form cannot post here) and, when
``API_TOKEN`` is set, ``Authorization: Bearer <API_TOKEN>``.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, current_app, jsonify, request, url_for

import pipelines
from db import jobs, projects
from web import queries
from web.errors import ApiError
from web.markdown import render
from web.security import check_api_token

bp = Blueprint("api", __name__, url_prefix="/api")
bp.before_request(check_api_token)


def error_code(error: Exception) -> str:
    """Return a snake_case code for an exception class (``CycleError`` -> ``cycle``)."""
    name = type(error).__name__.removesuffix("Error")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() or "invalid"


def plan_error(error: pipelines.PlanError) -> ApiError:
    """Turn a planning or import error into a 422 naming the field to fix."""
    return ApiError(422, str(error), code=error_code(error), field=error.field)


def json_body() -> Any:
    """Return the decoded JSON body.

    Raises:
      ApiError: 415 when the body is not JSON, 400 when it does not decode.
    """
    if not request.is_json:
        raise ApiError(415, "Send the body as JSON, with Content-Type: application/json.")
    data = request.get_json(silent=True)
    if data is None:
        raise ApiError(400, "The body is not valid JSON.", code="invalid_json")
    return data


def start_job(project_id: int, batch_size: Any) -> int:
    """Submit a job, turning bad input into API errors; return the job id."""
    settings = current_app.config["HANDSON"]
    if batch_size is None:
        batch_size = settings.BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise ApiError(422, "batch_size must be an integer.", code="batch_size", field="batch_size")
    try:
        return pipelines.submit_job(
            project_id,
            batch_size=batch_size,
            max_batch_size=settings.MAX_BATCH_SIZE,
            max_tasks=settings.MAX_TASKS,
        )
    except jobs.NotFoundError:
        raise ApiError(404, f"Project {project_id} does not exist.") from None
    except pipelines.BatchSizeError as error:
        raise ApiError(422, str(error), code="batch_size", field="batch_size") from None
    except pipelines.PlanError as error:
        raise plan_error(error) from None


def _accepted(job_id: int) -> tuple[Any, int, dict[str, str]]:
    location = url_for("api.get_job", job_id=job_id)
    return jsonify({"job_id": job_id}), 202, {"Location": location}


@bp.post("/projects")
def create_project() -> tuple[Any, int, dict[str, str]]:
    """Create a project from an import document; 201 with the project."""
    data = json_body()
    try:
        spec = projects.parse_project(data, max_tasks=current_app.config["HANDSON"].MAX_TASKS)
    except pipelines.PlanError as error:
        raise plan_error(error) from None
    project_id = projects.create_project(spec)
    location = url_for("api.get_project", project_id=project_id)
    return jsonify(queries.project_data(project_id)), 201, {"Location": location}


@bp.get("/projects/<int:project_id>")
def get_project(project_id: int) -> Any:
    """Return a project with its tasks and their dependencies."""
    data = queries.project_data(project_id)
    if data is None:
        raise ApiError(404, f"Project {project_id} does not exist.")
    return jsonify(data)


@bp.post("/projects/<int:project_id>/jobs")
def create_job(project_id: int) -> tuple[Any, int, dict[str, str]]:
    """Start a generation job for the project; 202 ``{"job_id"}``. Body: ``{"batch_size"}``."""
    data = json_body() if request.content_length else {}
    if not isinstance(data, dict):
        raise ApiError(422, "The body must be a JSON object.", code="invalid")
    return _accepted(start_job(project_id, data.get("batch_size")))


@bp.post("/task_hands_on/generate_all")
def generate_all() -> tuple[Any, int, dict[str, str]]:
    """The origin's contract: ``{"project_id", "config": {"batch_size"}}`` -> 202 ``{"job_id"}``."""
    data = json_body()
    if not isinstance(data, dict):
        raise ApiError(422, "The body must be a JSON object.", code="invalid")
    project_id = data.get("project_id")
    if isinstance(project_id, bool) or not isinstance(project_id, int):
        raise ApiError(422, "project_id must be an integer.", field="project_id")
    config = data.get("config")
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise ApiError(422, "config must be an object.", field="config")
    return _accepted(start_job(project_id, config.get("batch_size")))


@bp.get("/jobs")
def list_jobs() -> Any:
    """Return jobs newest first, paginated: ``?page=1&per_page=20``."""
    page = request.args.get("page", 1, type=int) or 1
    per_page = min(request.args.get("per_page", 20, type=int) or 20, 100)
    return jsonify(queries.jobs_page(max(page, 1), max(per_page, 1)))


@bp.get("/jobs/<int:job_id>")
def get_job(job_id: int) -> Any:
    """Return the job: status, counters, batches and task runs."""
    try:
        return jsonify(jobs.snapshot(job_id))
    except jobs.NotFoundError:
        raise ApiError(404, f"Job {job_id} does not exist.") from None


@bp.get("/tasks/<int:task_id>/hands_on")
def get_hands_on(task_id: int) -> Any:
    """Return the task's generated guide, as Markdown and as sanitized HTML."""
    guide = queries.guide_data(task_id)
    if guide is None:
        raise ApiError(404, f"Task {task_id} does not exist.")
    if guide["markdown"] is None:
        raise ApiError(404, f"Task {task_id} has no guide yet.", code="not_generated")
    return jsonify({**guide, "html": str(render(guide["markdown"]))})
