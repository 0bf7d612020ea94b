"""Guides are rendered from Markdown to HTML that keeps formatting and drops anything active."""

from __future__ import annotations

import pytest

from web.markdown import render

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
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_nothing_active_survives(attack):
    html = str(render(f"# Title\n\n{attack}\n")).lower()
    assert "<script" not in html
    assert "onerror" not in html and "onclick" not in html
    assert "javascript:" not in html
    assert "<iframe" not in html and "<style" not in html and "<svg" not in html
    assert "style=" not in html and "data:text" not in html


def test_formatting_is_kept():
    html = str(
        render("# T\n\n**b** `c`\n\n```py\nx = 1\n```\n\n| a |\n|---|\n| 1 |\n\n[l](https://e.org)")
    )
    assert "<h1>T</h1>" in html and "<strong>b</strong>" in html
    assert '<code class="language-py">' in html and "<table>" in html
    assert '<a href="https://e.org">l</a>' in html
