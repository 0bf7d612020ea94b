"""Tests of the guide generators: offline, OpenAI-compatible (against a real local
HTTP server), and the settings-driven factory."""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from settings import Settings
from tests.fake_openai import FakeOpenAI, FakeResponse, completion, error, usage_of
from workers.generators import (
    Dependency,
    GeneratorError,
    GuideRequest,
    OfflineGenerator,
    OpenAIGenerator,
    PermanentGeneratorError,
    Usage,
    get_generator,
    prompt,
)
from workers.generators.base import RateLimitedError
from workers.generators.metering import priced

KEY = "sk-test-SECRET-0123456789"

LOGIN_GUIDE = "# Hands-on: Add login form\n\nUsers sign in. Then they see the shop.\n"

REQUEST = GuideRequest(
    project_name="Shop",
    task_key="checkout",
    task_title="Build checkout page",
    task_description="Customers pay for the cart with a card.",
    dependencies=(Dependency("Add login form", LOGIN_GUIDE), Dependency("Cart")),
)


# --- offline -------------------------------------------------------------------------


def test_offline_guides_are_deterministic_and_differ_per_task() -> None:
    # Given two generators and two different tasks
    other = GuideRequest("Shop", "search", "Search products", "Full-text search on names.")

    # When each task is generated twice
    first, again = (
        OfflineGenerator().generate(REQUEST).markdown,
        OfflineGenerator().generate(REQUEST).markdown,
    )

    # Then identical input gives identical output, and different tasks differ in the steps
    assert first == again
    other_guide = OfflineGenerator().generate(other).markdown
    assert first.split("## Steps")[1] != other_guide.split("## Steps")[1]
    assert OfflineGenerator.name == "offline"


def test_offline_guide_has_title_goal_dependencies_steps_and_checks() -> None:
    guide = OfflineGenerator().generate(REQUEST).markdown

    assert guide.startswith("# Hands-on: Build checkout page\n")
    assert "## Goal\n\nCustomers pay for the cart with a card." in guide
    before = guide.split("## Before you start")[1].split("## Steps")[0]
    assert "**Add login form**" in before and "**Cart**" in before
    # One line taken from the dependency's guide (its heading)
    assert "From its guide: Hands-on: Add login form" in before
    steps = guide.split("## Steps")[1].split("## Check your work")[0]
    assert sum(line[:1].isdigit() for line in steps.splitlines()) >= 4
    assert "checkout" in steps
    assert "## Check your work" in guide
    assert "Continuing from the previous step" not in guide


def test_offline_guide_quotes_the_previous_pipeline_step() -> None:
    request = GuideRequest("Shop", "pay", "Take payment", previous_guide=LOGIN_GUIDE)

    guide = OfflineGenerator().generate(request).markdown

    assert "## Continuing from the previous step\n\n> Hands-on: Add login form" in guide


def test_offline_guide_keeps_user_titles_on_one_line() -> None:
    # A title with a newline must not open a new Markdown block (e.g. raw HTML)
    request = GuideRequest("Shop", "x", "Evil\n<script>alert(1)</script>\n# Owned")

    guide = OfflineGenerator().generate(request).markdown

    assert guide.splitlines()[0] == "# Hands-on: Evil <script>alert(1)</script> # Owned"
    assert "\n<script>" not in guide and "\n# Owned" not in guide


def test_offline_latency_is_honored() -> None:
    started = time.monotonic()

    OfflineGenerator(latency_ms=150).generate(REQUEST)

    assert time.monotonic() - started >= 0.15


def test_offline_latency_jitter_is_a_reproducible_lognormal_spread_per_task() -> None:
    # Given a generator with a median latency of 1 s and a spread of 0.5
    generator = OfflineGenerator(latency_ms=1000, jitter=0.5)
    requests = [
        dataclasses.replace(REQUEST, task_key=f"t{i}", job_id=job)
        for i in range(400)
        for job in (1, 2)
    ]

    # When each task's latency is drawn twice, by two generators
    first = [generator.latency_s(request) for request in requests]
    again = [OfflineGenerator(latency_ms=1000, jitter=0.5).latency_s(r) for r in requests]

    # Then the draws repeat, differ between tasks and jobs, and spread like the lognormal
    assert first == again
    assert len(set(first)) == len(first)
    logs = sorted(math.log(latency) for latency in first)
    median = logs[len(logs) // 2]
    spread = statistics.pstdev(logs)
    assert abs(median) < 0.08 and 0.42 < spread < 0.58
    assert OfflineGenerator(latency_ms=1000).latency_s(requests[0]) == 1.0


# --- OpenAI-compatible, against a real local server ---------------------------------


@pytest.fixture(scope="module")
def api_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def api(api_server: FakeOpenAI) -> FakeOpenAI:
    api_server.reset()
    return api_server


@pytest.fixture
def make_client(api: FakeOpenAI) -> Callable[..., OpenAIGenerator]:
    def make(**overrides: object) -> OpenAIGenerator:
        options: dict[str, object] = {
            "base_url": api.url,
            "api_key": KEY,
            "model": "fake-model",
            "timeout_s": 2.0,
            "max_attempts": 3,
            "max_chars": 10_000,
        }
        return OpenAIGenerator(**{**options, **overrides})  # type: ignore[arg-type]

    return make


#: Transient failures answered with a short ``retry-after-ms`` (the SDK honors it), so
#: retries do not wait the SDK's default back-off.
QUICK = {"Retry_After_Ms": "10"}


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "one-answer"])
def test_openai_posts_the_task_and_returns_the_guide_and_the_servers_usage(
    api: FakeOpenAI, make_client, stream: bool
) -> None:
    # Given an API that answers with a guide
    text = "# Hands-on: Build checkout page\n\nDo it, step by step, then check it."
    api.script([completion(text)])
    request = dataclasses.replace(
        REQUEST, previous_guide="# Step one\nDone.", project_description="A small web shop."
    )

    # When a guide is generated, its text watched as it is written
    pieces: list[str] = []
    written = make_client(stream=stream).generate(request, on_text=pieces.append)

    # Then the guide is returned, the pieces add up to it, and the usage is the server's
    assert written.markdown == text and "".join(pieces) == text
    assert len(pieces) > 1 if stream else pieces == [text]
    usage = written.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        usage_of(text)["prompt_tokens"],
        usage_of(text)["completion_tokens"],
    )
    assert not usage.estimated and usage.model == "fake-model"
    assert usage.prompt_version == prompt.VERSION and usage.latency_ms >= 0
    # And the request carried model, key, the stream options and the task
    [sent] = api.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    body = sent.json
    assert body["model"] == "fake-model" and body["temperature"] == 0.2
    assert body.get("stream", False) is stream
    assert body.get("stream_options") == ({"include_usage": True} if stream else None)
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    user = body["messages"][1]["content"]
    assert "Build checkout page" in user and "Customers pay for the cart" in user
    assert "A small web shop." in user
    assert "Add login form" in user and "Users sign in." in user
    assert "# Step one" in user
    assert make_client().name == "openai:fake-model"


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "one-answer"])
def test_openai_estimates_tokens_from_characters_when_the_server_sends_no_usage(
    api: FakeOpenAI, make_client, stream: bool
) -> None:
    text = "word " * 100
    api.script([completion(text, usage=None)])

    usage = make_client(stream=stream).generate(REQUEST).usage

    assert usage.estimated
    assert usage.completion_tokens == math.ceil(len(text) / 4)
    sent = api.requests[0].json["messages"]
    assert usage.prompt_tokens == math.ceil(sum(len(m["content"]) for m in sent) / 4)


def test_openai_trims_dependency_guides_to_the_context_budget(api: FakeOpenAI, make_client) -> None:
    api.script([completion("ok")])
    big = "x" * 50_000
    request = GuideRequest(
        "Shop", "k", "T", dependencies=(Dependency("A", big), Dependency("B", big))
    )

    make_client().generate(request)

    user = api.requests[0].json["messages"][1]["content"]
    assert user.count("[…truncated]") == 2
    budget_chars = prompt.CONTEXT_TOKEN_BUDGET * 4
    assert budget_chars < len(user) < budget_chars + 1_000


@pytest.mark.parametrize(
    "failure",
    [
        error(429, "slow down"),
        error(500, "boom", **QUICK),
        error(503, "overloaded", **QUICK),
    ],
)
def test_openai_retries_transient_failures_then_succeeds(
    api: FakeOpenAI, make_client, failure: FakeResponse
) -> None:
    api.script([failure, failure, completion("guide")])

    assert make_client(max_attempts=3).generate(REQUEST).markdown == "guide"
    assert len(api.requests) == 3


def test_openai_leaves_a_429_s_retry_after_to_the_limiter(api: FakeOpenAI, make_client) -> None:
    # Given an API that answers 429 with Retry-After: 2.5
    api.script([error(429, "slow down", Retry_After="2.5"), completion("guide")])

    # When a guide is asked for, Then it raises at once with the wait (no thread sleeps on
    # it: the limiter pauses every process), and does not call again
    with pytest.raises(RateLimitedError) as caught:
        make_client().generate(REQUEST)

    assert caught.value.retry_after_s == 2.5 and "slow down" in str(caught.value)
    assert len(api.requests) == 1


def test_openai_gives_up_after_max_attempts(api: FakeOpenAI, make_client) -> None:
    api.script([error(500, "still broken", **QUICK)] * 5)

    with pytest.raises(GeneratorError) as caught:
        make_client(max_attempts=3).generate(REQUEST)

    assert not isinstance(caught.value, PermanentGeneratorError)
    assert "HTTP 500" in str(caught.value) and "still broken" in str(caught.value)
    assert len(api.requests) == 3


def test_openai_rejected_key_is_permanent_with_the_api_message(
    api: FakeOpenAI, make_client
) -> None:
    api.script([error(401, "Incorrect API key provided.")])

    with pytest.raises(PermanentGeneratorError) as caught:
        make_client().generate(REQUEST)

    message = str(caught.value)
    assert "401" in message and "Incorrect API key provided." in message
    assert "OPENAI_API_KEY" in message
    assert len(api.requests) == 1  # no retry


def test_openai_other_client_errors_are_permanent(api: FakeOpenAI, make_client) -> None:
    api.script([error(404, "The model `nope` does not exist")])

    with pytest.raises(PermanentGeneratorError, match="does not exist"):
        make_client().generate(REQUEST)


def test_openai_missing_key_is_permanent_and_sends_nothing(api: FakeOpenAI, make_client) -> None:
    with pytest.raises(PermanentGeneratorError, match="OPENAI_API_KEY"):
        make_client(api_key=None).generate(REQUEST)

    assert api.requests == []


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "one-answer"])
@pytest.mark.parametrize(
    "answer",
    [
        FakeResponse(200, "this is not json"),
        FakeResponse(200, {"choices": []}),
        completion(""),
    ],
)
def test_openai_malformed_answer_is_retryable_error(
    api: FakeOpenAI, make_client, answer: FakeResponse, stream: bool
) -> None:
    api.script([answer])

    with pytest.raises(GeneratorError) as caught:
        make_client(stream=stream).generate(REQUEST)

    assert not isinstance(caught.value, PermanentGeneratorError)


def test_openai_times_out_and_retries(api: FakeOpenAI, make_client) -> None:
    # Given an API whose first answer comes after the client's timeout
    api.script([FakeResponse(200, "late", delay_s=5.0), completion("guide")])

    # When a guide is generated, it still arrives, on the second attempt
    assert make_client(timeout_s=0.2).generate(REQUEST).markdown == "guide"
    assert len(api.requests) == 2


def test_openai_timeouts_exhaust_attempts(api: FakeOpenAI, make_client) -> None:
    api.script([FakeResponse(200, "late", delay_s=5.0)] * 2)

    with pytest.raises(GeneratorError, match=r"no answer within 0\.2 s"):
        make_client(timeout_s=0.2, max_attempts=2).generate(REQUEST)


def test_openai_unreachable_server_is_retryable(make_client) -> None:
    # Given a port that was free a moment ago: nothing listens, connecting is refused
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(base_url=f"http://127.0.0.1:{port}/v1", max_attempts=2)

    with pytest.raises(GeneratorError, match="connection failed") as caught:
        client.generate(REQUEST)
    assert not isinstance(caught.value, PermanentGeneratorError)


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "one-answer"])
def test_openai_output_is_cut_to_max_chars(api: FakeOpenAI, make_client, stream: bool) -> None:
    api.script([completion("y" * 500)])
    pieces: list[str] = []

    written = make_client(max_chars=100, stream=stream).generate(REQUEST, on_text=pieces.append)

    assert written.markdown == "y" * 100 and "".join(pieces) == "y" * 100


def test_openai_serves_many_threads(api: FakeOpenAI, make_client) -> None:
    api.script([completion(f"guide {n}") for n in range(8)])
    client = make_client()

    with ThreadPoolExecutor(max_workers=4) as pool:
        guides = list(pool.map(lambda request: client.generate(request).markdown, [REQUEST] * 8))

    assert sorted(guides) == sorted(f"guide {n}" for n in range(8))


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "one-answer"])
def test_openai_never_reveals_the_key(
    api: FakeOpenAI, make_client, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    # Given a server that fails, then echoes the key back in its errors and its guide
    caplog.set_level(logging.DEBUG)
    api.script(
        [
            error(500, f"bad {KEY}", **QUICK),
            error(500, f"bad {KEY}", **QUICK),
            error(401, f"bad {KEY}"),
        ]
    )
    client = make_client(stream=stream)

    # When generation fails both ways, then succeeds with the key in the text
    with pytest.raises(PermanentGeneratorError) as permanent:
        client.generate(REQUEST)
    api.script([error(500, f"bad {KEY}", **QUICK)] * 3)
    with pytest.raises(GeneratorError) as transient:
        client.generate(REQUEST)
    api.script([completion(f"echo {KEY} echo")])
    pieces: list[str] = []
    written = client.generate(REQUEST, on_text=pieces.append)

    # Then the key is in neither the logs, the messages, the guide nor the repr
    assert caplog.records, "expected retry messages"
    texts = (caplog.text, str(permanent.value), str(transient.value), repr(client))
    for text in (*texts, written.markdown, "".join(pieces)):
        assert KEY not in text


# --- tokens and money ----------------------------------------------------------------


def test_offline_generator_estimates_tokens_of_the_prompt_and_the_guide() -> None:
    written = OfflineGenerator().generate(REQUEST)

    usage = written.usage
    assert usage.estimated and usage.model == "offline"
    assert usage.prompt_version == prompt.VERSION
    assert usage.completion_tokens == math.ceil(len(written.markdown) / 4)
    messages = prompt.build_messages(REQUEST)
    assert usage.prompt_tokens == math.ceil(sum(len(m["content"]) for m in messages) / 4)


def test_offline_generator_streams_its_guide_in_whole_words_over_its_latency() -> None:
    pieces: list[tuple[float, str]] = []
    started = time.monotonic()

    written = OfflineGenerator(latency_ms=300).generate(
        REQUEST, on_text=lambda piece: pieces.append((time.monotonic() - started, piece))
    )

    # Every character once, in pieces of whole words: one every 50 ms, as a stream's chunks
    assert "".join(piece for _, piece in pieces) == written.markdown
    assert len(pieces) == 300 // 50 < len(written.markdown.split())
    words = set(written.markdown.split())
    assert all(set(piece.split()) <= words for _, piece in pieces)
    # Spread over the latency: the first piece early, the last one at its end
    assert pieces[0][0] < 0.15 and pieces[-1][0] >= 0.29
    assert written.usage.latency_ms >= 290


def test_priced_usage_costs_tokens_times_the_prices_per_million() -> None:
    usage = Usage(model="m", prompt_tokens=2_000_000, completion_tokens=500_000)

    cost = priced(usage, input_per_mtok=0.15, output_per_mtok=0.60).cost

    assert cost == pytest.approx(0.30 + 0.30)
    assert Settings().AI_PRICE_INPUT_PER_MTOK == 0.15
    assert Settings().AI_PRICE_OUTPUT_PER_MTOK == 0.60


# --- get_generator -------------------------------------------------------------------


def test_get_generator_offline_is_cached_per_settings() -> None:
    settings = Settings(GENERATOR="offline", GENERATOR_LATENCY_MS=7)

    generator = get_generator(settings)

    assert isinstance(generator, OfflineGenerator) and generator.latency_ms == 7
    assert get_generator(settings) is generator
    assert get_generator(settings.replace(GENERATOR_LATENCY_MS=8)) is not generator


def test_get_generator_openai_uses_the_settings() -> None:
    settings = Settings(
        GENERATOR="openai",
        OPENAI_BASE_URL="http://api.test/v1/",
        OPENAI_API_KEY=KEY,
        OPENAI_MODEL="m1",
        OPENAI_TIMEOUT_S=3.0,
        OPENAI_MAX_ATTEMPTS=2,
        MAX_GUIDE_CHARS=99,
    )

    generator = get_generator(settings)

    assert isinstance(generator, OpenAIGenerator)
    assert generator.name == "openai:m1"
    assert generator.base_url == "http://api.test/v1"
    assert (generator.timeout_s, generator.max_attempts, generator.max_chars) == (3.0, 2, 99)
    assert generator.stream and not get_generator(settings.replace(OPENAI_STREAM=False)).stream


def test_get_generator_calls_a_dotted_factory(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a module with a factory taking the settings
    (tmp_path / "my_guides.py").write_text(
        "from workers.generators import OfflineGenerator\n"
        "def make(settings):\n"
        "    generator = OfflineGenerator(latency_ms=settings.GENERATOR_LATENCY_MS)\n"
        "    generator.name = 'mine'\n"
        "    return generator\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    generator = get_generator(Settings(GENERATOR="my_guides:make", GENERATOR_LATENCY_MS=3))

    assert generator.name == "mine" and generator.latency_ms == 3


@pytest.mark.parametrize("choice", ["gpt", "", "no_such_module_xyz:make", "json:nope"])
def test_get_generator_rejects_unknown_choices(choice: str) -> None:
    with pytest.raises(ValueError, match=r"offline.*openai.*package\.module:factory"):
        get_generator(Settings(GENERATOR=choice))
