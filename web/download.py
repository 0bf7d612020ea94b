"""One Markdown file of all a project's guides, with heading levels that nest properly.

The file is the project's name as its H1 and one H2 section per task (its title), in
order. Each guide is written as a document of its own (it starts with its H1, as models
write), so its headings are shifted to sit below its section: its top level becomes H3.
"""

from __future__ import annotations

from collections.abc import Sequence

from web import markdown

#: The level a guide's top headings get inside its task's section.
GUIDE_TOP_LEVEL = 3
#: What a task's section says before its guide is generated.
NOT_GENERATED = "_Not generated yet._"
_PARSER = markdown.parser()


def shift_headings(text: str, top: int) -> str:
    """Return ``text`` with its headings moved so that the highest one is at level ``top``.

    Levels keep their differences (capped at H6); a setext heading (underlined) becomes
    an ATX one (``###``), since setext has only two levels. Headings inside code blocks,
    lists and quotes are not headings of the document and stay as they are.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    tokens = _PARSER.parse(text)
    headings = [
        (token, tokens[i + 1].content)
        for i, token in enumerate(tokens)
        if token.type == "heading_open" and token.level == 0 and token.map
    ]
    if not headings:
        return text
    shift = top - min(int(token.tag[1]) for token, _ in headings)
    lines = text.split("\n")
    for token, content in reversed(headings):  # from the end: earlier line numbers hold
        level = min(6, int(token.tag[1]) + shift)
        start, end = token.map  # type: ignore[misc]
        lines[start:end] = ["#" * level + " " + " ".join(content.split())]
    return "\n".join(lines)


def guides_markdown(name: str, guides: Sequence[tuple[str, str | None]]) -> str:
    """Return the one Markdown file of a project's guides.

    Parameters:
      name: the project's name.
      guides: (task title, guide Markdown or None when not generated), in task order.

    Returns:
      The file's text: ``# name``, then per task ``## title`` and its shifted guide.
    """
    parts = [f"# {_one_line(name)}\n"]
    for title, text in guides:
        body = NOT_GENERATED if text is None else shift_headings(text, GUIDE_TOP_LEVEL)
        parts.append(f"\n---\n\n## {_one_line(title)}\n\n{body.strip()}\n")
    return "".join(parts)


def _one_line(text: str) -> str:
    """A heading is one line: line breaks in a name or title become spaces."""
    return " ".join(text.split()) or "(untitled)"
