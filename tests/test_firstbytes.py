"""The first-bytes classifier: classes of real client openings, chunk independence,
and previews that are always safe to print."""

from __future__ import annotations

import itertools
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netmon.sources.firstbytes import PREFIX, PREVIEW, FirstBytes, classify, escape

# Real openings (captured from curl 7.88, OpenSSH 9.2, Python ssl, nc).
CURL = b"GET /hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\n\r\n"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CLIENT_HELLO = bytes.fromhex("160301020001 0001fc0303".replace(" ", "")) + bytes(range(32))
SSLV2_HELLO = bytes.fromhex("802b0103010012000000100000") + bytes(16)
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"

CASES = [
    (CURL, "http"),
    (b"POST /api HTTP/1.0\r\n\r\n", "http"),
    (b"OPTIONS * HTTP/1.1\r\n", "http"),
    (b"CONNECT example.com:443 HTTP/1.1\r\n", "http"),
    (H2_PREFACE, "http"),
    (CLIENT_HELLO, "tls"),
    (SSLV2_HELLO, "tls"),
    (SSH_BANNER, "ssh"),
    (b"SSH-1.99-old\r\n", "ssh"),
    (b"hello there\n", "text"),
    (b"HELO mail.example.com\r\n", "text"),  # SMTP-ish: printable, not HTTP
    (b"GET", "text"),  # ended before a request line could form
    (b"GET  /", "text"),  # two spaces: not a request line
    (b"get / HTTP/1.1\r\n", "text"),  # methods are case-sensitive
    (b"\x16\x03", "binary"),  # a TLS record header cut short
    (b"\x16\x03\x01\x02\x00\x02", "binary"),  # handshake, but a ServerHello
    (b"\x00\x01\x02garbage", "binary"),
    (b"hello\x00world", "binary"),
    (b"\x1b[2J\x1b]0;title\x07", "binary"),
    (bytes(range(256)), "binary"),
    (b"", "none"),
]


@pytest.mark.parametrize(("data", "kind"), CASES, ids=[c[1] + str(i) for i, c in enumerate(CASES)])
def test_classes_of_real_openings(data: bytes, kind: str) -> None:
    assert classify(data, complete=True) == kind
    fb = FirstBytes()
    fb.feed(data)
    assert fb.finish() == kind


@pytest.mark.parametrize(("data", "kind"), CASES[:-1], ids=[c[1] + str(i) for i, c in
                                                           enumerate(CASES[:-1])])
@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 9])
def test_same_class_when_fed_in_small_chunks(data: bytes, kind: str, size: int) -> None:
    fb = FirstBytes()
    for i in range(0, len(data), size):
        fb.feed(data[i:i + size])
    assert fb.finish() == kind
    assert fb.preview == escape(data[:PREVIEW])


def test_decides_early_only_when_nothing_can_change_it() -> None:
    assert classify(b"SSH-", complete=False) == "ssh"
    assert classify(b"SSH", complete=False) is None
    assert classify(b"GET /", complete=False) == "http"
    assert classify(b"GET ", complete=False) is None
    assert classify(b"\x16\x03\x01\x02\x00", complete=False) is None
    assert classify(b"\x16\x03\x01\x02\x00\x01", complete=False) == "tls"
    assert classify(b"\x00", complete=False) == "binary"
    assert classify(b"hello", complete=False) is None  # text needs the end or PREFIX bytes
    assert classify(b"h" * PREFIX, complete=False) == "text"


openings = st.one_of(
    st.binary(max_size=3 * PREFIX),
    st.sampled_from([c[0] for c in CASES]).flatmap(
        lambda d: st.tuples(st.just(d), st.binary(max_size=40)).map(lambda t: t[0] + t[1])),
    st.text(string.printable, max_size=100).map(str.encode),
    st.builds(lambda p, rest: p + rest,
              st.sampled_from([b"GET", b"SSH-", b"\x16\x03\x01", b"\x80\x2b\x01", b"PRI "]),
              st.binary(max_size=20)),
)


@settings(max_examples=400, deadline=None)
@given(data=openings, cuts=st.lists(st.integers(min_value=0, max_value=3 * PREFIX), max_size=12))
def test_chunking_never_changes_the_class(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    fb = FirstBytes()
    decided = None
    for a, b in itertools.pairwise(bounds):
        fb.feed(data[a:b])
        if decided is None:
            decided = fb.kind
        elif fb.kind != decided:
            pytest.fail("an early decision changed")
    assert fb.finish() == classify(data[:PREFIX], complete=True)
    assert len(fb._buf) <= PREFIX


@settings(max_examples=300, deadline=None)
@given(head=openings, tail=st.binary(max_size=80))
def test_early_answers_hold_for_every_continuation(head: bytes, tail: bytes) -> None:
    early = classify(head, complete=False)
    if early is not None:
        assert classify((head + tail)[:PREFIX], complete=True) == early


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_previews_are_printable_ascii_and_unambiguous(data: bytes) -> None:
    text = escape(data, limit=len(data))
    assert all(" " <= ch <= "~" for ch in text)
    # Escapes read back to the same bytes: nothing is hidden or merged.
    assert text.encode().decode("unicode_escape").encode("latin-1") == data


def test_terminal_control_sequences_never_survive() -> None:
    evil = b"\x1b]0;pwned\x07\x1b[2J\r\x08\x9b31m\xe2\x80\xae"
    text = escape(evil)
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "\x9b" not in text and "\u202e" not in text
    assert text.startswith("\\x1b]0;pwned\\x07")


def test_keeps_no_more_than_the_prefix_of_a_bulk_upload() -> None:
    fb = FirstBytes()
    for _ in range(1000):
        fb.feed(b"\x00" * 65536)
    assert fb.finish() == "binary"
    assert len(fb._buf) <= PREFIX
    assert len(fb.preview) <= 4 * PREVIEW
