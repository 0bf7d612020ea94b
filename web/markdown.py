"""Render generated Markdown (CommonMark) to HTML that is safe to put in our pages.

Guides come from an AI model: they are untrusted, and written the way models write
(CommonMark: nested lists indented by 2-3 spaces, ``- [ ]`` task lists, tables, fenced
code). markdown-it-py renders them. Raw HTML in a guide is kept only where it is a tag
of :data:`RAW_TAGS` written with :data:`RAW_ATTRIBUTES` only; any other tag is escaped,
so it shows as the text the model wrote: ``in a <style> tag`` keeps its words,
``a<b and c>d`` is not bold, a stray ``<style>`` swallows nothing after it. nh3 then
sanitizes the whole result against :data:`ALLOWED_TAGS`: no script, no event handler or
``style`` attribute, no ``javascript:``/``data:`` URL survives, whatever the renderer did.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from markupsafe import Markup
from mdit_py_plugins.tasklists import tasklists_plugin

#: Tags a rendered guide may contain (Markdown's output plus :data:`RAW_TAGS`).
ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4",
        "h5", "h6", "hr", "i", "img", "input", "kbd", "li", "ol", "p", "pre", "s", "strong",
        "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
    }
)  # fmt: skip
#: Attributes per tag; nothing else, in particular no event handlers and no style.
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "img": {"src", "alt", "title"},
    "code": {"class"},
    "input": {"checked"},
    "ol": {"start"},
    "th": {"align"},
    "td": {"align"},
}
#: URL schemes allowed in ``href``/``src``; relative URLs are always allowed.
ALLOWED_PROTOCOLS = frozenset({"http", "https", "mailto"})
#: Inline tags a guide may write as raw HTML (written otherwise, a tag shows as text).
RAW_TAGS = frozenset(
    {"a", "abbr", "b", "br", "code", "del", "em", "i", "img", "kbd", "s", "strong", "sub", "sup"}
)
#: Attributes a raw tag may carry; a tag with any other one shows as text.
RAW_ATTRIBUTES = {"a": {"href", "title"}, "abbr": {"title"}, "img": {"src", "alt", "title"}}
_VOID_TAGS = frozenset({"br", "img"})
_RAW_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)(\s[^>]*?)?\s*/?>\Z", re.DOTALL)
_ATTRIBUTE_NAME = re.compile(r"""([^\s"'>/=]+)(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?""")
_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
    url_schemes=set(ALLOWED_PROTOCOLS),
    # Task-list checkboxes only, never enabled (a guide is read, not filled in).
    tag_attribute_values={"input": {"type": {"checkbox"}}},
    set_tag_attribute_values={"input": {"disabled": "disabled"}},
    allowed_classes={
        "ul": {"contains-task-list"},
        "li": {"task-list-item"},
        "input": {"task-list-item-checkbox"},
    },
    strip_comments=True,
    # No guide link opens a window (no target attribute), so it gets no opener either.
    link_rel=None,
)


def _raw_tag_kept(raw: str, open_tags: collections.Counter[str]) -> bool:
    """Whether a raw HTML tag of a guide stays a tag (else it is shown as text).

    An opening tag stays when it is in :data:`RAW_TAGS` with allowed attributes only; a
    closing tag stays when it closes one that stayed.
    """
    match = _RAW_TAG.match(raw)
    if match is None:
        return False  # a comment, a declaration, a processing instruction
    closing, name, attributes = match.group(1), match.group(2).lower(), match.group(3) or ""
    if name not in RAW_TAGS:
        return False
    if closing:
        if open_tags[name] <= 0:
            return False
        open_tags[name] -= 1
        return True
    names = {found.lower() for found in _ATTRIBUTE_NAME.findall(attributes)}
    if not names <= RAW_ATTRIBUTES.get(name, set()):
        return False
    if name not in _VOID_TAGS and not match.group(0).endswith("/>"):
        open_tags[name] += 1
    return True


def _mark_raw_html(state: StateCore) -> None:
    """Mark the HTML the guide wrote (runs before plugins add HTML of their own)."""
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "html_inline":
                child.meta["raw"] = True


def _render_html_inline(
    self: Any, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """Render a raw inline tag as itself when it is allowed, else as escaped text."""
    token = tokens[idx]
    if not token.meta.get("raw"):
        return token.content  # a plugin's own markup (a task-list checkbox)
    if _raw_tag_kept(token.content, env.setdefault("open_tags", collections.Counter())):
        return token.content
    return str(Markup.escape(token.content))


def _align_cells(state: StateCore) -> None:
    """Turn a table cell's ``style="text-align:…"`` into ``align`` (no style survives)."""
    for token in state.tokens:
        if token.type in ("th_open", "td_open"):
            style = token.attrs.pop("style", None)
            if isinstance(style, str) and style.startswith("text-align:"):
                token.attrSet("align", style.removeprefix("text-align:"))


def parser() -> MarkdownIt:
    """Return the CommonMark parser guides are read with (tables, strikethrough, task lists).

    Raw HTML blocks are off: a line starting with ``<style>`` (or ``<div>``...) is a
    paragraph whose tags are judged one by one, instead of a block running to its end tag.
    """
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    md.disable("html_block")
    # Every link is written as a link; nh3 then drops a href/src of a refused scheme and
    # keeps the text, the same for [x](javascript:...) as for <a href="javascript:...">.
    md.validateLink = lambda url: True
    md.use(tasklists_plugin, enabled=False)
    md.core.ruler.after("inline", "mark_raw_html", _mark_raw_html)  # before the plugin's
    md.core.ruler.push("align_cells", _align_cells)
    md.add_render_rule("html_inline", _render_html_inline)
    return md


_MARKDOWN = parser()


def sanitize(html: str) -> str:
    """Return ``html`` with every tag, attribute and URL scheme outside the allowlist removed."""
    return _CLEANER.clean(html)


def render(text: str) -> Markup:
    """Render untrusted Markdown to sanitized HTML, ready for a template."""
    return Markup(sanitize(_MARKDOWN.render(text, {})))  # sanitized just above
