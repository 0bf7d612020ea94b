"""``handson export``: a project's guides as Markdown files, one per task, and an index."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

import db
from cli import cli
from db.models import HandsOn, Task
from settings import Settings

PROJECT = {
    "name": "Recipe app",
    "tasks": [
        {"key": "repo", "title": "Set up the repository"},
        {"key": "model", "title": "Write the [data] model", "depends_on": ["repo"]},
        {"key": "api", "title": "Écrire l'API", "depends_on": ["model"]},
    ],
}


@pytest.fixture
def run(sqlite_url: str, tmp_path: Path):
    settings = Settings(DATABASE_URL=sqlite_url, EMBEDDED_WORKER_THREADS=2)
    db.configure(sqlite_url)
    source = tmp_path / "project.json"
    source.write_text(json.dumps(PROJECT))

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), obj=settings, catch_exceptions=False)

    assert invoke("import", str(source)).exit_code == 0
    return invoke


def stored_guides() -> dict[str, str]:
    with db.session_scope() as session:
        rows = session.execute(sa.select(Task.title, HandsOn.markdown).join(HandsOn)).all()
    return dict(rows)


def test_export_writes_one_file_per_guide_and_an_index_linking_them_in_order(run, tmp_path):
    # Given a project whose guides were generated
    assert run("enqueue", "1", "--wait").exit_code == 0

    # When it is exported
    out = tmp_path / "out"
    result = run("export", "1", "-o", str(out))

    # Then each guide is a file holding it as generated, and the index links them in order
    assert result.exit_code == 0, result.output
    assert f"Wrote 3 guide(s) and README.md to {out}." in result.output
    names = ["01-set-up-the-repository.md", "02-write-the-data-model.md", "03-ecrire-l-api.md"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "README.md"])
    guides = stored_guides()
    for name, task in zip(names, PROJECT["tasks"], strict=True):
        assert (out / name).read_text() == guides[task["title"]].strip() + "\n"
    index = (out / "README.md").read_text()
    assert index.startswith("# Recipe app\n")
    assert re.findall(r"^\d+\. \[.*\]\((.*)\)$", index, re.M) == names
    assert r"[Write the \[data\] model](02-write-the-data-model.md)" in index


def test_export_of_a_project_without_guides_writes_the_index_only(run, tmp_path):
    result = run("export", "1", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0
    assert "(3 task(s) have no guide yet)" in result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["README.md"]
    assert (
        "1. Set up the repository: _not generated yet_" in (tmp_path / "out/README.md").read_text()
    )


@pytest.mark.parametrize("project_id", ["999", "0", "-1", "99999999999999999999", "x"])
def test_export_of_an_unknown_project_is_a_usage_error_and_writes_nothing(
    run, tmp_path, project_id
):
    out = tmp_path / "out"
    result = run("export", project_id, "-o", str(out))
    assert result.exit_code == 2
    assert "PROJECT_ID" in result.output
    assert not out.exists()


def test_export_to_a_directory_that_cannot_be_written_is_a_usage_error(run, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for target in (a_file / "sub", a_file):
        result = run("export", "1", "-o", str(target))
        assert result.exit_code == 2, result.output
        assert "--output" in result.output and str(target) in result.output
