"""The project's errors have one root; each family is mapped once to HTTP and to exit codes."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

import errors
from cli.context import ProjectGroup

FAMILIES = [
    (errors.InvalidInputError("batch size must be between 1 and 50", field="batch_size"), 422, 2),
    (errors.NotFoundError("job 7 does not exist"), 404, 2),
    (errors.ConflictError("job 7 is running; only a partial or failed job can be retried"), 409, 2),
    (errors.HandsonError("the database is down"), 500, 1),
]


@pytest.fixture
def raising_app(sqlite_url: str):  # type: ignore[no-untyped-def]
    from web import create_app

    app = create_app({"DATABASE_URL": sqlite_url, "TESTING": True})

    @app.get("/raise/<int:which>")
    def raise_one(which: int) -> str:
        raise FAMILIES[which][0]

    return app


@pytest.mark.parametrize("which", range(len(FAMILIES)))
def test_a_view_that_lets_a_project_error_through_answers_its_family_s_status(
    raising_app, which: int
):  # type: ignore[no-untyped-def]
    error, status, _ = FAMILIES[which]
    response = raising_app.test_client().get(
        f"/raise/{which}", headers={"Accept": "application/json"}
    )
    assert response.status_code == status
    body = response.json["error"]
    if status == 500:  # not a family a user can fix: logged, answered plainly
        assert str(error) not in body["message"]
    else:
        assert (body["message"], body["code"], body["field"]) == (
            str(error),
            error.code,
            error.field,
        )


@pytest.mark.parametrize("which", range(len(FAMILIES)))
def test_a_command_that_lets_a_project_error_through_exits_with_its_family_s_code(which: int):
    error, _, exit_code = FAMILIES[which]

    @click.group(cls=ProjectGroup)
    def group() -> None:
        pass

    @group.command()
    def fail() -> None:
        raise error

    result = CliRunner().invoke(group, ["fail"])
    assert result.exit_code == exit_code
    assert f"Error: {error}" in result.output
    assert "Traceback" not in result.output


def test_every_error_of_the_project_derives_from_the_root():
    import cli.context
    import db.control
    import db.engine
    import db.guides
    import db.jobs
    import db.pool
    import db.schedules
    import pipelines
    import settings
    import web.errors
    import web.forms
    import web.security
    import workers.generators.base
    import workers.middleware.progress

    modules = [
        cli.context, db.control, db.engine, db.guides, db.jobs, db.pool, db.schedules,
        pipelines, settings, web.errors, web.forms, web.security, workers.generators.base,
        workers.middleware.progress,
    ]  # fmt: skip
    ours = [
        value
        for module in modules
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == module.__name__
        and name.endswith("Error")
        and not issubclass(value, click.ClickException)  # how the CLI exits, not an error
    ]
    assert ours and [kind for kind in ours if not issubclass(kind, errors.HandsonError)] == []
