"""What a generator is given for a task run, and how its guide is stored."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from test_progress_cost import counting_statements
from workerkit import make_project

import db
from db import guides, jobs, progress, starts
from db.models import RunStatus, Task, TaskRun


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


def test_a_run_reads_its_request_within_its_start_in_one_statement(database_url: str):
    # Given "c" depending on "b" (which has a guide) and "a" (which has none)
    db.configure(database_url)
    project_id = make_project(
        {"key": "a", "title": "Alpha"},
        {"key": "b", "title": "Beta"},
        {"key": "c", "title": "Gamma", "depends_on": ["b", "a"]},
        name="Shop",
    )
    job_id = jobs.create_job(project_id, batch_size=5, max_batch_size=50, max_tasks=10).job_id
    runs = runs_by_key(job_id)
    guides.save_guide(runs["b"], "# Beta guide", "offline")
    progress.record_outcome(runs["a"], RunStatus.SUCCEEDED)
    progress.record_outcome(runs["b"], RunStatus.SUCCEEDED)

    # When "c" starts, reading its request as the generation actor does
    with counting_statements() as statements:
        started = starts.start_run(runs["c"], guides.REQUEST)

    # Then it read what the request read on its own reads, dependencies in order...
    assert started.decision is starts.Start.RUN
    assert started.prepared == read(runs["c"])
    assert [(d.title, d.guide) for d in started.prepared.dependencies] == [
        ("Alpha", None),
        ("Beta", "# Beta guide"),
    ]
    # ...on PostgreSQL within the start's own statement (one round trip)
    if db.get_engine().dialect.name == "postgresql":
        assert len(statements) == 1
    # And a run with no dependency reads its task alone; a redelivery reads nothing
    alone = jobs.create_job(make_project("solo"), batch_size=5, max_batch_size=50, max_tasks=10)
    solo = runs_by_key(alone.job_id)["solo"]
    assert starts.start_run(solo, guides.REQUEST).prepared == read(solo)
    progress.record_outcome(solo, RunStatus.SUCCEEDED)
    assert starts.start_run(solo, guides.REQUEST).prepared is None


def test_a_run_that_is_gone_has_no_request_and_no_guide(database_url: str):
    # Given the database
    db.configure(database_url)

    # When a run that does not exist is read or given a guide, Then each says so
    with pytest.raises(guides.RunNotFoundError):
        read(999_999)
    with pytest.raises(guides.RunNotFoundError):
        guides.save_guide(999_999, "# guide", "offline")
