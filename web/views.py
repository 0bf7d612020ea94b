"""Pages: projects (form, detail, download), jobs (list, live page, cancel, retry), guides."""

from __future__ import annotations

import re
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import RequestEntityTooLarge

import pipelines
from db import ai_spend, control, idempotency, inputs, jobs, projects
from web import download, forms, graph, queries
from web import inputs as web_inputs
from web.expired import check_csrf_or_recover
from web.markdown import render
from workers import dispatch

bp = Blueprint("views", __name__)
bp.before_request(check_csrf_or_recover)

#: Jobs per page of the jobs list.
JOBS_PER_PAGE = 20
_TASK_FIELD = re.compile(r"^tasks\[(\d+)\]")


def _settings() -> Any:
    return current_app.config["HANDSON"]


def _friendly(message: str, field: str | None) -> str:
    """Name the form line of a task field (``tasks[2].title`` is line 3)."""
    match = _TASK_FIELD.match(field or "")
    if match and not message.lower().startswith("line"):
        return f"Line {int(match.group(1)) + 1}: {message}"
    return message


def _form_error(form: dict[str, str], message: str, field: str | None, status: int) -> Any:
    error = {"message": _friendly(message, field), "field": field}
    return render_template("project_new.html", form=form, error=error), status


@bp.get("/")
def index() -> str:
    """List projects and the newest jobs."""
    return render_template(
        "index.html",
        projects=queries.list_projects(),
        jobs=queries.jobs_page(1, 10)["items"],
    )


@bp.get("/projects/new")
def new_project() -> str:
    """Show the project form."""
    return render_template("project_new.html", form={}, error=None)


@bp.post("/projects")
def create_project() -> Any:
    """Create a project from the form (typed tasks or a JSON file); errors come back on it."""
    form = {key: request.form.get(key, "") for key in ("name", "description", "tasks")}
    upload = request.files.get("file")
    max_tasks = _settings().MAX_TASKS
    try:
        if upload is not None and upload.filename:
            spec = projects.parse_project_json(
                upload.read(), max_tasks=max_tasks, max_bytes=_settings().MAX_CONTENT_LENGTH
            )
        else:
            document = forms.project_document(form["name"], form["description"], form["tasks"])
            spec = projects.parse_project(document, max_tasks=max_tasks)
    except (pipelines.PlanError, forms.TaskLineError) as error:
        return _form_error(form, str(error), error.field, 422)
    project_id = projects.create_project(spec)
    return redirect(url_for("views.project", project_id=project_id), 303)


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(error: RequestEntityTooLarge) -> Any:
    limit = _settings().MAX_CONTENT_LENGTH
    message = f"The upload is too large: at most {limit:,} bytes are accepted."
    if request.endpoint == "views.create_project":
        return _form_error({}, message, "file", 413)
    return render_template("error.html", status=413, message=message, code="too_large"), 413


@bp.get("/projects/<id:project_id>")
def project(project_id: int) -> str:
    """Show a project's tasks with their dependencies, and the generate form."""
    data = queries.project_data(project_id)
    if data is None:
        abort(404)
    return render_template(
        "project.html",
        project=data,
        batch_size=_settings().BATCH_SIZE,
        strategy=_settings().JOB_STRATEGY,
        error=None,
    )


@bp.post("/projects/<id:project_id>/jobs")
def start_job(project_id: int) -> Any:
    """Start a generation job and go to its page; while one runs, go to that one instead.

    So two clicks on "Generate" start one job; a form field ``force=1`` starts another.
    """
    force = request.form.get("force") == "1"
    try:
        with idempotency.starting(project_id, key=None, force=force) as start:
            return _submit(project_id, start)
    except idempotency.JobRunningError as running:
        if running.job_id is None:
            flash("A job of this project is being started; it shows in the jobs list shortly.")
            return redirect(url_for("views.project", project_id=project_id), 303)
        flash(f"Job {running.job_id} of this project is running already: here it is.")
        return redirect(url_for("views.job", job_id=running.job_id), 303)


def _submit(project_id: int, start: idempotency.Start) -> Any:
    """Submit the job the form asks for, or show the form's error."""
    settings = _settings()
    raw = request.form.get("batch_size", "").strip()
    strategy = request.form.get("strategy", settings.JOB_STRATEGY)
    try:
        batch_size = settings.BATCH_SIZE
        if raw:
            batch_size = inputs.parse_int(
                raw, field="batch size", minimum=1, maximum=settings.MAX_BATCH_SIZE
            )
        job_id = dispatch.submit(
            project_id,
            batch_size=batch_size,
            max_batch_size=settings.MAX_BATCH_SIZE,
            max_tasks=settings.MAX_TASKS,
            strategy=strategy,
            ai_cap=ai_spend.cap_of(settings),
        )
    except jobs.NotFoundError:
        abort(404)
    except (inputs.InputError, pipelines.PlanError, ai_spend.BudgetExceededError) as error:
        data = queries.project_data(project_id)
        if data is None:
            abort(404)
        message = str(error)
        return render_template(
            "project.html",
            project=data,
            batch_size=raw,
            strategy=strategy,
            error=message[:1].upper() + message[1:],
        ), 409 if isinstance(error, ai_spend.BudgetExceededError) else 422
    start.started(job_id)
    return redirect(url_for("views.job", job_id=job_id), 303)


@bp.get("/projects/<id:project_id>/guides.md")
def download_guides(project_id: int) -> Response:
    """Download every guide of the project as one Markdown file."""
    found = queries.project_guides(project_id)
    if found is None:
        abort(404)
    name, guides = found
    filename = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "project"
    return Response(
        download.guides_markdown(name, guides),
        mimetype="text/markdown",
        headers={"Content-Disposition": f'attachment; filename="{filename}-guides.md"'},
    )


@bp.get("/jobs")
def job_list() -> str:
    """List jobs newest first, paginated (``?page=``)."""
    page = web_inputs.query_int("page", 1)
    return render_template("jobs.html", page=queries.jobs_page(page, JOBS_PER_PAGE))


@bp.get("/jobs/<id:job_id>")
def job(job_id: int) -> str:
    """Show a job; the page then follows the job live through its event stream."""
    try:
        data = jobs.snapshot(job_id)
    except jobs.NotFoundError:
        abort(404)
    return render_template("job.html", job=data, graph=graph.of_job(data))


@bp.post("/jobs/<id:job_id>/cancel")
def cancel_job(job_id: int) -> Any:
    """Cancel a running job (the "Cancel job" button), then go back to its page."""
    try:
        cancelled = dispatch.cancel(job_id)
    except jobs.NotFoundError:
        abort(404)
    flash("Job cancelled." if cancelled else "The job had already ended.")
    return redirect(url_for("views.job", job_id=job_id), 303)


@bp.post("/jobs/<id:job_id>/retry")
def retry_job(job_id: int) -> Any:
    """Rerun a finished job's failed and skipped tasks, then go back to its page."""
    try:
        retried = dispatch.retry(job_id)
    except jobs.NotFoundError:
        abort(404)
    except control.NotRetryableError:
        flash("Nothing to rerun: only a partial or failed job can be rerun.")
    else:
        flash(f"Rerunning {retried.tasks} task(s).")
    return redirect(url_for("views.job", job_id=job_id), 303)


@bp.get("/tasks/<id:task_id>/guide")
def guide(task_id: int) -> str:
    """Show a task's guide, rendered from Markdown and sanitized.

    While a running job writes it, the page also shows the new text as it comes (guide.js
    follows the job's event stream) and reloads once it is stored.
    """
    data = queries.guide_data(task_id)
    if data is None:
        abort(404)
    html = None if data["markdown"] is None else render(data["markdown"])
    live = queries.live_run(task_id)
    return render_template("guide.html", guide=data, html=html, live=live)
