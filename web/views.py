"""Pages: a bare list of projects and jobs (the full UI is built on top of it)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, render_template

from db import jobs, session_scope
from db.models import Project, Task

bp = Blueprint("views", __name__)


@bp.get("/")
def index() -> str:
    """List projects (with their task counts) and the newest jobs."""
    with session_scope() as session:
        projects = session.execute(
            sa.select(Project.id, Project.name, sa.func.count(Task.id).label("tasks"))
            .outerjoin(Task, Task.project_id == Project.id)
            .group_by(Project.id, Project.name)
            .order_by(Project.id.desc())
        ).all()
    return render_template("index.html", projects=projects, jobs=jobs.recent_jobs())


@bp.get("/jobs/<int:job_id>")
def job(job_id: int) -> str:
    """Show one job: its counters and batches."""
    try:
        data = jobs.snapshot(job_id)
    except jobs.NotFoundError:
        abort(404)
    return render_template("job.html", job=data)
