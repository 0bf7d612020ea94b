"""Render generated Markdown to HTML that is safe to put in our pages.

Guides come from an AI model, so they are untrusted: Markdown is rendered (raw HTML in
it passes through), then everything goes through a bleach allowlist. Nothing outside it
survives: no ``<script>``/``<style>``/``<iframe>``, no ``on*`` or ``style`` attributes, no
``javascript:``/``data:`` links.
"""

from __future__ import annotations

import bleach
import markdown as markdown_lib
from markupsafe import Markup

#: Tags a guide may use.
ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4",
        "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "strong", "sub",
        "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
    }
)  # fmt: skip
#: Attributes per tag; nothing else, in particular no event handlers and no style.
ALLOWED_ATTRIBUTES = {
    "a": ["href", "title"],
    "abbr": ["title"],
    "img": ["src", "alt", "title"],
    "code": ["class"],
    "th": ["align"],
    "td": ["align"],
}
#: URL schemes allowed in ``href``/``src``; relative URLs are always allowed.
ALLOWED_PROTOCOLS = frozenset({"http", "https", "mailto"})
#: Markdown extensions: code fences and tables are common in guides.
EXTENSIONS = ("fenced_code", "tables", "sane_lists")


def sanitize(html: str) -> str:
    """Return ``html`` with every tag, attribute and URL scheme outside the allowlist removed."""
    return bleach.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        protocols=ALLOWED_PROTOCOLS,
        strip=True,
        strip_comments=True,
    )


def render(text: str) -> Markup:
    """Render untrusted Markdown to sanitized HTML, ready for a template."""
    html = markdown_lib.markdown(text, extensions=list(EXTENSIONS), output_format="html")
    return Markup(sanitize(html))  # sanitized just above
