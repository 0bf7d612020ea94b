"""The prompt a model writes a guide from, versioned: a change of it shows on every new guide.

The user message holds the project (name and description), the task, and the guides of
the tasks it depends on (and, in a pipeline, the previous step's guide), trimmed so that
the context they add stays within :data:`CONTEXT_TOKEN_BUDGET` tokens.
"""

from __future__ import annotations

from workers.generators.base import GuideRequest
from workers.generators.metering import CHARS_PER_TOKEN

#: Stored with each guide; change it with any change of the text below.
VERSION = "guide-2"

#: Instructions given to the model with every request.
SYSTEM_PROMPT = (
    "You write practical hands-on guides for the tasks of a software project. Answer in "
    "Markdown only (no HTML): a '# Hands-on: <task title>' heading, then the goal, what to "
    "have done before starting, numbered concrete steps with short code examples where "
    "useful, and a 'Check your work' checklist. Fit the guide to the project described, "
    "and build on the guides of the tasks it depends on: reuse what they set up, do not "
    "repeat their steps."
)
#: Tokens (estimated from characters) that dependencies' guides and the previous step's
#: guide may add to a prompt, shared between them; each is cut to its share.
CONTEXT_TOKEN_BUDGET = 3_000
#: Longest project description sent, in tokens (estimated).
DESCRIPTION_TOKEN_BUDGET = 500
#: Marks where a guide or description was cut.
CUT = "\n[…truncated]"


def build_messages(request: GuideRequest) -> list[dict[str, str]]:
    """Return the chat messages (system prompt, then project, task and context) for ``request``."""
    description = _clip(request.project_description.strip(), DESCRIPTION_TOKEN_BUDGET)
    parts = [f"Project: {request.project_name}"]
    if description:
        parts.append(f"About the project:\n{description}")
    parts += [
        f"Task {request.task_key}: {request.task_title}",
        f"Description:\n{request.task_description.strip() or '(none)'}",
    ]
    shares = len(request.dependencies) + (1 if request.previous_guide else 0)
    share = CONTEXT_TOKEN_BUDGET // max(1, shares)
    for dependency in request.dependencies:
        guide = _clip(dependency.guide, share) or "(no guide yet)"
        parts.append(f"Depends on: {dependency.title}\nIts guide:\n{guide}")
    if request.previous_guide:
        previous = _clip(request.previous_guide, share)
        parts.append(f"Guide of the previous pipeline step:\n{previous}")
    parts.append("Write the hands-on guide for this task.")
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def prompt_chars(messages: list[dict[str, str]]) -> int:
    """Return the characters of ``messages``' contents (for token estimates)."""
    return sum(len(message["content"]) for message in messages)


def _clip(text: str | None, tokens: int) -> str:
    """Return ``text`` cut to about ``tokens`` tokens, marked where it was cut."""
    if not text:
        return ""
    limit = tokens * CHARS_PER_TOKEN
    return text if len(text) <= limit else text[:limit].rstrip() + CUT
