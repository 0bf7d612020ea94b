"""What a generator is given for a task run, and how its guide is stored."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from workerkit import make_project

import db
from db import guides, jobs
from db.models import Task, TaskRun


def runs_by_key(job_id: int) -> dict[str, int]:
    with db.session_scope() as session:
        rows = session.execute(
            sa.select(Task.key, TaskRun.id)
            .join(TaskRun, TaskRun.task_id == Task.id)
            .where(TaskRun.job_id == job_id)
        )
        return {key: run_id for key, run_id in rows}


def read(run_id: int, previous_guide: str | None = None):  # type: ignore[no-untyped-def]
    with db.session_scope() as session:
        return guides.read_request(session, run_id, previous_guide)


def test_a_request_has_its_task_and_every_dependency_in_project_order(database_url: str):
    # Given a project where "c" depends on "b" (which has a guide) and "a" (which has none)
    db.configure(database_url)
    project_id = make_project(
        {"key": "a", "title": "Alpha"},
        {"key": "b", "title": "Beta"},
        {"key": "c", "title": "Gamma", "description": "Do it", "depends_on": ["b", "a"]},
        name="Shop",
    )
    job_id = jobs.create_job(project_id, batch_size=5, max_batch_size=50, max_tasks=10).job_id
    runs = runs_by_key(job_id)
    guides.save_guide(runs["b"], "# Beta guide", "offline")

    # When the requests of "c" (handed its previous step's guide) and of "a" are read
    dependent, alone = read(runs["c"], "# previous"), read(runs["a"])

    # Then "c" comes with both dependencies, in the project's order, and "a" with none
    assert (dependent.project_name, dependent.task_key, dependent.task_title) == (
        "Shop",
        "c",
        "Gamma",
    )
    assert dependent.task_description == "Do it"
    assert [(d.title, d.guide) for d in dependent.dependencies] == [
        ("Alpha", None),
        ("Beta", "# Beta guide"),
    ]
    assert dependent.previous_guide == "# previous"
    assert (alone.task_key, alone.dependencies, alone.previous_guide) == ("a", (), None)


def test_a_run_that_is_gone_has_no_request_and_no_guide(database_url: str):
    # Given the database
    db.configure(database_url)

    # When a run that does not exist is read or given a guide, Then each says so
    with pytest.raises(guides.RunNotFoundError):
        read(999_999)
    with pytest.raises(guides.RunNotFoundError):
        guides.save_guide(999_999, "# guide", "offline")
