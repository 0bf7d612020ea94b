"""Bad arguments and files at the command line, on SQLite and PostgreSQL: exit 2, nothing written.

Each of these ended in a traceback before: ids beyond the database's integer range,
a JSON file nested a thousand levels deep, a NUL or a lone surrogate in a text field.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workerkit import make_project

import db
from cli import cli
from settings import Settings

HUGE = [str(2**31), str(2**63), "9" * 40]


@pytest.fixture
def run(database_url: str):
    """Run ``handson`` on the test database; return the click result."""
    settings = Settings(DATABASE_URL=database_url, EMBEDDED_WORKER_THREADS=2)
    db.configure(database_url)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), obj=settings, catch_exceptions=False)

    return invoke


def counts() -> dict[str, int]:
    with db.session_scope() as session:
        return {
            table: session.scalar(sa.text(f"SELECT count(*) FROM {table}"))
            for table in ("projects", "tasks", "jobs", "schedules")
        }


@pytest.mark.parametrize("number", HUGE, ids=["2^31", "2^63", "10^40"])
@pytest.mark.parametrize(
    ("command", "noun"),
    [
        (["enqueue"], "project"),
        (["status"], "job"),
        (["cancel"], "job"),
        (["retry"], "job"),
        (["schedule", "rm"], "schedule"),
        (["schedule", "add", "--cron", "0 3 * * *"], "project"),
    ],
    ids=["enqueue", "status", "cancel", "retry", "schedule-rm", "schedule-add"],
)
def test_ids_beyond_the_database_range_do_not_exist(run, command, noun, number):
    make_project("a")
    before = counts()
    result = run(*command, number)
    assert result.exit_code == 2, result.output
    assert f"{noun} {number[:30]} does not exist" in result.output
    assert counts() == before


@pytest.mark.parametrize("raw", ["\u0663", "\u00b2", "1e3", "0x10"])
def test_ids_and_batch_sizes_take_ascii_digits_only(run, raw):
    make_project("a")
    result = run("status", raw)
    assert result.exit_code == 2 and "is not a job id" in result.output
    sized = run("enqueue", "1", "--batch-size", raw)
    assert sized.exit_code == 2 and "'--batch-size': it must be a whole number" in sized.output
    assert counts()["jobs"] == 0


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "project.json"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_import_refuses_a_deeply_nested_file(run, tmp_path):
    result = run("import", write(tmp_path, "[" * 1000 + "]" * 1000))
    assert result.exit_code == 2
    assert "nested 1000 levels deep; at most 32 levels are allowed" in result.output
    assert "Traceback" not in result.output
    assert counts()["projects"] == 0


@pytest.mark.parametrize(
    ("bad", "problem"),
    [("\\u0000", "NUL character"), ("\\ud800", "lone surrogate")],
    ids=["nul", "surrogate"],
)
@pytest.mark.parametrize("field", ["name", "tasks[0].title", "tasks[0].key"])
def test_import_refuses_nul_and_lone_surrogates_naming_the_field(
    run, tmp_path, bad, problem, field
):
    task = {"key": "a", "title": "A"}
    document = {"name": "P", "tasks": [task]}
    target, _, name = field.rpartition(".")
    (task if target else document)[name] = "@"
    text = json.dumps(document).replace("@", f"a{bad}b")  # the escape, as a file holds it
    result = run("import", write(tmp_path, text))
    assert result.exit_code == 2
    assert f"{field} contains a {problem}" in result.output
    assert counts()["projects"] == 0


@pytest.mark.parametrize("hours", ["1e300", "nan", "inf", "0", "-5"])
def test_budget_refuses_a_window_it_cannot_sum(run, hours):
    result = run("budget", "--hours", hours)
    assert result.exit_code == 2
    assert "must be more than 0 and at most 87600" in result.output


#: Text for names, titles and keys, with the characters a database may refuse.
TEXT = st.one_of(st.text(max_size=8), st.sampled_from(["a\x00b", "x\ud800", "\udfff", "9" * 40]))


def test_import_answers_every_file_with_a_project_or_exit_2(run, tmp_path):
    documents = st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner),
            max_leaves=20,
        ).map(lambda value: json.dumps(value).encode()),
        st.builds(
            lambda name, title, deps: json.dumps(
                {"name": name, "tasks": [{"title": title, "depends_on": deps}]}
            ).encode(),
            TEXT,
            TEXT,
            st.lists(st.one_of(st.integers(), TEXT), max_size=3),
        ),
        st.integers(min_value=1, max_value=1200).map(lambda n: b"[" * n + b"]" * n),
    )

    @settings(
        max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(content=documents)
    def import_(content: bytes) -> None:
        path = tmp_path / "fuzzed.json"
        path.write_bytes(content)
        result = run("import", str(path))
        assert result.exit_code in (0, 2), result.output

    import_()
