"""The offline generator: a deterministic Markdown guide built from the task alone.

It is the default generator (no network, no key) and the one demos and benchmarks use;
``latency_ms`` makes it behave like a slow remote model.  Task text is user input: it is
placed in Markdown text only (one line where a line is expected), never wrapped in HTML.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import re
import time

from workers.generators import prompt
from workers.generators.base import Dependency, GuideRequest, OnText, Usage, Written
from workers.generators.metering import estimate_tokens

#: Words too common to name a step after (split into ``_STOPWORDS``).
_STOPWORD_TEXT = """
a about add after all also an and any are as at be been before build but by can create
do does each for from get has have how if implement in into is it its make more must new
not of on or our out over set should so some than that the their then there these this
to up use used using via was we what when where which while will with within without
you your
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())

#: Step templates; one is picked per keyword by a stable hash, so different tasks differ.
_STEP_TEMPLATES = (
    "Sketch how **{word}** fits into {project}: write down its inputs and outputs.",
    "Write the smallest piece of code that handles **{word}**, and run it once by hand.",
    "List the edge cases of **{word}** (empty, too large, invalid) and handle the first one.",
    "Add a test that fails without **{word}**, then make it pass.",
    "Name the place in {project} where **{word}** lives and create that file or module.",
    "Log one clear line when **{word}** happens, so you can see it work.",
    "Compare two ways to do **{word}** and note in a comment why you chose yours.",
)

#: Keywords turned into steps, at most.
_MAX_KEYWORD_STEPS = 4
#: Least time between two pieces of a streamed guide, in seconds (about 20 chunks a second).
PIECE_INTERVAL_S = 0.05
#: Longest line quoted from another guide, in characters.
_MAX_QUOTE_CHARS = 160


class OfflineGenerator:
    """Writes a deterministic hands-on guide from the task's own text.

    Parameters:
      latency_ms: simulated AI latency per guide, in milliseconds (0: none); the median
        when ``jitter`` is set.
      jitter: sigma of a lognormal spread of that latency (0: constant), drawn per task
        from a seed of its key and job id (reproducible).
    """

    name = "offline"

    def __init__(self, *, latency_ms: int = 0, jitter: float = 0.0) -> None:
        self.latency_ms = max(0, int(latency_ms))
        self.jitter = max(0.0, float(jitter))

    def latency_s(self, request: GuideRequest) -> float:
        """Return the simulated latency of ``request``, in seconds (the same for a rerun)."""
        if not self.jitter:
            return self.latency_ms / 1000
        seed = hashlib.sha256(f"{request.task_key}\0{request.job_id}".encode()).digest()
        draw = random.Random(seed).gauss(0.0, self.jitter)
        return self.latency_ms / 1000 * math.exp(draw)

    def generate(self, request: GuideRequest, *, on_text: OnText | None = None) -> Written:
        """Return the Markdown guide for ``request``; identical input gives identical output.

        Its usage is estimated from characters (marked ``estimated``): the prompt the
        OpenAI generator would send (:mod:`workers.generators.prompt`), and the guide.
        ``on_text`` gets the guide in pieces of whole words, paced over the simulated latency.
        """
        started = time.monotonic()
        markdown = self.write(request)
        latency_s = self.latency_s(request) if self.latency_ms else 0.0
        if on_text is not None:
            _stream(markdown, latency_s, on_text)
        elif latency_s:
            # Stands in for the remote model's work; it waits for no other work of ours.
            time.sleep(latency_s)
        return Written(markdown, self.usage(request, markdown, time.monotonic() - started))

    def usage(self, request: GuideRequest, markdown: str, elapsed_s: float) -> Usage:
        """Return the estimated usage of writing ``markdown`` for ``request``."""
        return Usage(
            model=self.name,
            prompt_tokens=estimate_tokens(prompt.prompt_chars(prompt.build_messages(request))),
            completion_tokens=estimate_tokens(len(markdown)),
            estimated=True,
            latency_ms=round(elapsed_s * 1000),
            prompt_version=prompt.VERSION,
        )

    def write(self, request: GuideRequest) -> str:
        """Return the guide's Markdown, at once."""
        sections = [
            _heading(request),
            _goal(request),
            _before_you_start(request.dependencies),
            _continuing(request.previous_guide),
            _steps(request),
            _check(request),
        ]
        return "\n\n".join(section for section in sections if section) + "\n"


def _stream(markdown: str, latency_s: float, on_text: OnText) -> None:
    """Hand ``markdown`` to ``on_text`` in whole words, spread evenly over ``latency_s``.

    A piece comes every :data:`PIECE_INTERVAL_S` at most (as a provider's stream chunks
    arrive): a waking thread per word would cost the worker more CPU than the work.
    """
    words = re.findall(r"\s*\S+", markdown) or [markdown]
    words[-1] += markdown[len("".join(words)) :]  # trailing whitespace goes with the last
    count = max(1, min(len(words), math.ceil(latency_s / PIECE_INTERVAL_S)))
    bounds = [round(i * len(words) / count) for i in range(count + 1)]
    started = time.monotonic()
    for piece, (start, end) in enumerate(itertools.pairwise(bounds), 1):
        # Paces the simulated model's words against the clock (each sleep's overshoot
        # does not add up); it waits for no other work of ours.
        time.sleep(max(0.0, started + latency_s * piece / count - time.monotonic()))
        on_text("".join(words[start:end]))


def _one_line(text: str) -> str:
    """Collapse ``text`` to one line so user input cannot open new Markdown blocks."""
    return " ".join(text.split())


def summary_line(guide: str) -> str:
    """Return a guide's first heading, else its first sentence, as one short line."""
    lines = [line.strip() for line in guide.splitlines() if line.strip()]
    heading = next((line for line in lines if line.startswith("#")), None)
    if heading is not None:
        line = heading.lstrip("#").strip()
    elif lines:
        line = re.split(r"(?<=[.!?])\s", _one_line(" ".join(lines)), maxsplit=1)[0]
    else:
        line = ""
    if len(line) > _MAX_QUOTE_CHARS:
        line = line[: _MAX_QUOTE_CHARS - 1].rstrip() + "…"
    return line


def _heading(request: GuideRequest) -> str:
    title = _one_line(request.task_title) or request.task_key
    return f"# Hands-on: {title}\n\n*Project: {_one_line(request.project_name)}*"


def _goal(request: GuideRequest) -> str:
    description = request.task_description.strip()
    if not description:
        description = f"Get **{_one_line(request.task_title)}** done and working."
    return f"## Goal\n\n{description}"


def _before_you_start(dependencies: tuple[Dependency, ...]) -> str:
    if not dependencies:
        return "## Before you start\n\nThis task depends on no other task: start right away."
    lines = ["## Before you start", "", "Finish these tasks first:", ""]
    for dependency in dependencies:
        lines.append(f"- **{_one_line(dependency.title)}**")
        if dependency.guide and (quote := summary_line(dependency.guide)):
            lines.append(f"  - From its guide: {quote}")
    return "\n".join(lines)


def _continuing(previous_guide: str | None) -> str:
    if not previous_guide:
        return ""
    quote = summary_line(previous_guide) or "the previous step"
    return (
        "## Continuing from the previous step\n\n"
        f"> {quote}\n\n"
        "Start from what that step left you with; keep its files and tests green."
    )


def keywords(request: GuideRequest) -> list[str]:
    """Return the task's distinctive words (title first), in order, without repeats."""
    text = f"{request.task_title} {request.task_description}"
    words = re.findall(r"[A-Za-z][A-Za-z0-9_-]{2,}", text)
    seen: dict[str, None] = {}
    for word in words:
        lowered = word.lower().strip("-_")
        if lowered not in _STOPWORDS and len(lowered) > 2:
            seen.setdefault(lowered)
    return list(seen)


def _template_for(word: str, request: GuideRequest) -> str:
    # hashlib, not hash(): str hashes are salted per process and guides must be stable.
    digest = hashlib.sha256(f"{request.task_key}\0{word}".encode()).digest()
    return _STEP_TEMPLATES[digest[0] % len(_STEP_TEMPLATES)]


def _steps(request: GuideRequest) -> str:
    project = _one_line(request.project_name) or "the project"
    title = _one_line(request.task_title)
    steps = [f"Create a branch or folder named `{_slug(request.task_key)}` for this task."]
    steps += [
        _template_for(word, request).format(word=word, project=project)
        for word in keywords(request)[:_MAX_KEYWORD_STEPS]
    ]
    if request.dependencies:
        names = ", ".join(f"**{_one_line(d.title)}**" for d in request.dependencies)
        steps.append(f"Reuse what you built in {names} instead of starting over.")
    steps.append(f"Run the whole flow of **{title}** once, end to end, and note what you see.")
    return "## Steps\n\n" + "\n".join(f"{n}. {step}" for n, step in enumerate(steps, 1))


def _check(request: GuideRequest) -> str:
    title = _one_line(request.task_title)
    items = [f"**{title}** works when you try it by hand.", "The tests you added pass."]
    items += [f"**{_one_line(d.title)}** still works." for d in request.dependencies]
    items.append("You could explain each step to a teammate in one sentence.")
    return "## Check your work\n\n" + "\n".join(f"- [ ] {item}" for item in items)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "task"
