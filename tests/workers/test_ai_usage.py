"""Tokens and money, metered: each guide records its usage, jobs carry the totals."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from jobwatch import wait_for_job
from workerkit import Embedded, make_project

from db import session_scope
from db.models import HandsOn
from tests.fake_openai import FakeOpenAI, completion, usage_of
from workers import dispatch
from workers.generators import prompt

#: A chain (sent as one pipeline: its steps store their guides before their outcomes)
#: and two tasks on their own (stored with their outcomes).
TASKS = (
    {"key": "a", "title": "Set up the repo", "description": "Git, CI, a README."},
    {"key": "b", "title": "Add a model", "depends_on": ["a"]},
    {"key": "c", "title": "Add a view", "depends_on": ["b"]},
    "d",
    "e",
)
PRICES = {"AI_PRICE_INPUT_PER_MTOK": 2.5, "AI_PRICE_OUTPUT_PER_MTOK": 10.0}


def _submit(embedded: Embedded, project_id: int) -> int:
    settings = embedded.settings
    return dispatch.submit(
        project_id,
        batch_size=5,
        max_batch_size=settings.MAX_BATCH_SIZE,
        max_tasks=100,
        strategy=settings.JOB_STRATEGY,
    )


def _guides(job_id: int) -> list[HandsOn]:
    with session_scope() as session:
        rows = session.scalars(sa.select(HandsOn).where(HandsOn.job_id == job_id)).all()
        session.expunge_all()
        return list(rows)


def _cost(prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * 2.5 + completion_tokens * 10.0) / 1e6


def assert_totals_are_the_sum_of_the_guides(job: dict, events: list[dict]) -> list[HandsOn]:
    """The job's totals (stored and in its last counted event) add up its guides' usage."""
    guides = _guides(job["id"])
    assert len(guides) == job["total_tasks"] == job["succeeded_tasks"]
    assert job["prompt_tokens"] == sum(g.prompt_tokens for g in guides) > 0
    assert job["completion_tokens"] == sum(g.completion_tokens for g in guides) > 0
    assert job["cost"] == pytest.approx(sum(g.cost for g in guides), rel=1e-12)
    for guide in guides:
        assert guide.cost == pytest.approx(_cost(guide.prompt_tokens, guide.completion_tokens))
        assert guide.prompt_version == prompt.VERSION and guide.latency_ms is not None
    carried = [e["payload"]["job"] for e in events if "job" in e["payload"]][-1]
    assert (carried["prompt_tokens"], carried["completion_tokens"]) == (
        job["prompt_tokens"],
        job["completion_tokens"],
    )
    assert carried["cost"] == pytest.approx(job["cost"], rel=1e-12)
    return guides


@pytest.mark.both_strategies
def test_offline_guides_record_estimated_usage_and_the_job_carries_the_totals(
    embedded_factory: Callable[..., Embedded],
):
    # Given the offline generator with prices set
    embedded = embedded_factory(GENERATOR="offline", **PRICES)

    # When a job of a pipeline and two single tasks runs
    job, events = wait_for_job(_submit(embedded, make_project(*TASKS)))

    # Then every guide records estimated tokens of the offline model, and the job's
    # totals are their sums, carried live by its events too
    assert job["status"] == "succeeded"
    assert "pipeline" in {batch["mode"] for batch in job["batches"]}
    guides = assert_totals_are_the_sum_of_the_guides(job, events)
    for guide in guides:
        assert guide.model == "offline" and guide.tokens_estimated
        assert guide.completion_tokens == -(-len(guide.markdown) // 4)


@pytest.fixture(scope="module")
def api_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "one-answer"])
def test_runs_against_the_local_server_record_its_usage(
    embedded_factory: Callable[..., Embedded], api_server: FakeOpenAI, stream: bool
):
    # Given the local OpenAI-protocol server, answering each task with a different guide
    api_server.reset()
    answers = [f"# Hands-on: guide {n}\n\n" + "word " * (10 * n + 3) for n in range(len(TASKS))]
    api_server.script([completion(text, model="fake-model-2026") for text in answers])
    embedded = embedded_factory(
        GENERATOR="openai",
        OPENAI_BASE_URL=api_server.url,
        OPENAI_API_KEY="sk-test",
        OPENAI_MODEL="fake-model",
        OPENAI_STREAM=stream,
        **PRICES,
    )

    # When a job runs
    job, events = wait_for_job(_submit(embedded, make_project(*TASKS)))

    # Then each guide records the tokens of the server's usage for its answer, not
    # estimates, with the model the server named; the job's totals are their sums
    assert job["status"] == "succeeded"
    assert all(request.json.get("stream", False) is stream for request in api_server.requests)
    guides = assert_totals_are_the_sum_of_the_guides(job, events)
    for guide in guides:
        expected = usage_of(guide.markdown)
        assert (guide.prompt_tokens, guide.completion_tokens) == (
            expected["prompt_tokens"],
            expected["completion_tokens"],
        )
        assert not guide.tokens_estimated and guide.model == "fake-model-2026"
    assert sorted(g.markdown for g in guides) == sorted(answers)
