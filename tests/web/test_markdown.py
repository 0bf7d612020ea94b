"""Guides render from CommonMark to HTML keeping what the model wrote, dropping anything active."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from web.download import guides_markdown, shift_headings
from web.markdown import render


class Document(HTMLParser):
    """What a browser would build from the HTML: elements with attributes, and the text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.chunks: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.chunks).split())

    def tags(self) -> list[str]:
        return [tag for tag, _ in self.elements]


def rendered(markdown: str) -> Document:
    return Document(str(render(markdown)))


ATTACKS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[link](javascript:alert(1))",
    '<a href="jAvAsCrIpT:alert(1)">x</a>',
    '<a href="java&#x09;script:alert(1)">x</a>',
    '<p onclick="alert(1)" style="color:red">x</p>',
    '<iframe src="https://example.com"></iframe>',
    "<svg><script>alert(1)</script></svg>",
    '<img src="data:text/html;base64,PHNjcmlwdD4=">',
    "<style>body{display:none}</style>",
    '<a href="https://e.org" onmouseover="alert(1)">x</a>',
    "<math><mi xlink:href=javascript:alert(1)>x</mi></math>",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_nothing_active_survives(attack):
    document = rendered(f"# Title\n\n{attack}\n")
    assert set(document.tags()) <= {"h1", "p", "a", "img"}
    for tag, attributes in document.elements:
        assert not any(name.startswith("on") for name in attributes), (tag, attributes)
        assert "style" not in attributes
        for name in ("href", "src"):
            value = "".join(attributes.get(name, "").split()).lower()
            assert not value.startswith(("javascript:", "data:")), (tag, attributes)


@pytest.mark.parametrize(
    "attack", ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<style>x</style>"]
)
def test_a_tag_outside_the_allowlist_is_shown_as_text(attack):
    html = str(render(attack))
    assert Document(html).text == attack
    assert "<script" not in html and "<img" not in html and "<style" not in html


def test_formatting_is_kept():
    html = str(
        render("# T\n\n**b** `c`\n\n```py\nx = 1\n```\n\n| a |\n|---|\n| 1 |\n\n[l](https://e.org)")
    )
    assert "<h1>T</h1>" in html and "<strong>b</strong>" in html
    assert '<code class="language-py">' in html and "<table>" in html
    assert '<a href="https://e.org">l</a>' in html


# The texts of issue 13, as models write them.


def test_a_tag_named_in_prose_keeps_its_words():
    document = rendered("Put the rules in a <style> tag, then reload.")
    assert document.text == "Put the rules in a <style> tag, then reload."
    assert document.tags() == ["p"]


def test_comparisons_in_prose_do_not_turn_bold():
    document = rendered("If a<b and c>d, swap them.")
    assert document.text == "If a<b and c>d, swap them."
    assert document.tags() == ["p"]


def test_a_stray_style_tag_swallows_nothing_after_it():
    document = rendered("# Styles\n\n<style>\n\nThe rest of the guide, **in bold**.\n\n## Next\n")
    assert document.tags() == ["h1", "p", "p", "strong", "h2"]
    assert document.text == "Styles <style> The rest of the guide, in bold. Next"


def test_lists_nested_the_commonmark_way_render_nested():
    # Two spaces under a bullet, three under "1. ": how every model writes them
    html = str(render("- Install\n  - Python 3.12\n    - with venv\n1. Run\n   - the tests\n"))
    assert html.count("<ul>") == 4 and html.count("<ol>") == 1
    assert "<li>Install\n<ul>\n<li>Python 3.12\n<ul>\n<li>with venv</li>" in html
    assert "<li>Run\n<ul>\n<li>the tests</li>" in html


def test_task_lists_render_as_disabled_checkboxes():
    document = rendered("- [ ] Write the tests\n- [x] Read the issue\n")
    boxes = [attributes for tag, attributes in document.elements if tag == "input"]
    assert [box["type"] for box in boxes] == ["checkbox", "checkbox"]
    assert all("disabled" in box for box in boxes)
    assert ["checked" in box for box in boxes] == [False, True]
    assert "[ ]" not in document.text and document.text == "Write the tests Read the issue"


def test_tables_and_fenced_code_render():
    table = "| Step | Time |\n|:-----|-----:|\n| a<b | 1 s |\n"
    document = rendered(table + "\n```sh\necho '<b>'\n```\n")
    table_tags = ["table", "thead", "tr", "th", "th", "tbody", "tr", "td", "td"]
    assert document.tags() == [*table_tags, "pre", "code"]
    aligns = [a.get("align") for tag, a in document.elements if tag in ("th", "td")]
    assert aligns == ["left", "right", "left", "right"]
    assert "a<b" in document.text and "echo '<b>'" in document.text


def test_allowed_inline_html_stays_html():
    document = rendered("Press <kbd>Ctrl</kbd>+<kbd>C</kbd>; H<sub>2</sub>O<br>done")
    assert document.tags() == ["p", "kbd", "kbd", "sub", "br"]
    assert document.text == "Press Ctrl+C; H2Odone"


# The download: one Markdown file of every guide.


def test_a_guide_h1_sits_below_its_task_section_in_the_download():
    guide = "# Hands-on: Set up\n\nIntro\n\n## Steps\n\n```\n# not a heading\n```\n"
    guide += "\nSetext\n------\n"
    text = guides_markdown("Recipe app", [("Set up", guide), ("Deploy", None)])
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == [
        "# Recipe app",
        "## Set up",
        "### Hands-on: Set up",
        "#### Steps",
        "# not a heading",  # inside a code fence, left alone
        "#### Setext",
        "## Deploy",
    ]
    assert "_Not generated yet._" in text


def test_heading_levels_keep_their_differences_and_stop_at_h6():
    assert shift_headings("## A\n\n#### B\n\n###### C", 3) == "### A\n\n##### B\n\n###### C"
    assert shift_headings("No heading at all", 3) == "No heading at all"


def test_a_link_to_a_refused_scheme_keeps_its_text_and_loses_its_target():
    document = rendered("[the docs](javascript:alert(1)) and ![a diagram](data:text/html,x)")
    assert document.text == "the docs and"
    assert document.elements == [("p", {}), ("a", {}), ("img", {"alt": "a diagram"})]
