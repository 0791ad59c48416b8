"""HTTP/1.x from a connection's first bytes: the request line, Host and User-Agent of
the client's first request; optionally the server's status line.

Pure module (stdlib + core); runs on whichever thread owns the caller's object (the
reactor thread when the ingest path feeds it). :class:`HttpRequestParser` is fed the
client's payload in order, in chunks of any size, and keeps at most
:data:`HTTP_MAX` bytes: it answers once the header block ends, or with what the first
HTTP_MAX bytes hold (``complete=False``); :func:`parse_http_request` is the same on a
prefix held whole. Bytes that cannot start a request line give None at once.

Every string is untrusted: decoded as UTF-8 with odd bytes as ``\\xNN``, passed
through :func:`netmon.core.text.safe_text` and capped (:data:`TARGET_MAX`,
:data:`HOST_MAX`, :data:`NAME_MAX`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netmon.core.text import NAME_MAX, safe_text

#: Bytes of the client's payload read for one request's line and headers.
HTTP_MAX = 8 * 1024
#: Characters kept of the request target (a URL can be kilobytes long).
TARGET_MAX = NAME_MAX
#: Characters kept of Host (a DNS name of up to 253 characters, a port, escapes).
HOST_MAX = 260
#: A method is an upper-case token (RFC 9110 9.1 allows any token; these are the ones
#: clients send): deciding on the first bytes keeps non-HTTP flows cheap.
_START = re.compile(rb"[A-Z][A-Z_-]{0,19}(?: |\Z)")
_REQUEST = re.compile(rb"([A-Z][A-Z_-]{0,19}) +([^ \r\n]+)(?: +(HTTP/\d\.\d))? *\r?$")
_STATUS = re.compile(rb"(HTTP/\d\.\d) +(\d{3})(?: +([^\r\n]*))?\r?$")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """The first request of a connection. ``version`` is "HTTP/1.1", "HTTP/1.0" or ""
    (HTTP/0.9); ``host`` and ``user_agent`` are "" when absent (the first of repeated
    ones); ``complete`` is False when the header block did not end within the bytes
    read. Strings are safe text, capped."""

    method: str
    target: str
    version: str
    host: str
    user_agent: str
    complete: bool


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A server's status line: ``version``, ``status`` (100-999) and ``reason``."""

    version: str
    status: int
    reason: str


def _text(raw: bytes, cap: int) -> str:
    return safe_text(raw[: cap * 4].decode("utf-8", "backslashreplace"), cap)


def _could_be_request(data: bytes) -> bool:
    """False once the first bytes cannot begin a request line (a method, then a space)."""
    return not data or _START.match(data) is not None


def parse_http_request(data: bytes, *, final: bool = True) -> HttpRequest | None:
    """The first request in ``data`` (the client's first bytes; only HTTP_MAX used),
    or None when they are not an HTTP/1.x request. With ``final`` False more bytes
    may follow, and a request whose header block has not ended gives None too."""
    try:
        return _parse_request(bytes(data[:HTTP_MAX]), final)
    except Exception:  # garbage must never reach the caller as an exception
        return None


def _parse_request(data: bytes, final: bool) -> HttpRequest | None:
    if not _could_be_request(data):
        return None
    end = data.find(b"\n")
    if end < 0:
        return None
    line = _REQUEST.match(data[:end])
    if line is None:
        return None
    method, target, version = line.groups()
    head_end = _header_end(data, end + 1)
    complete = head_end >= 0 or version is None  # HTTP/0.9 has no headers
    if not complete and not final and len(data) < HTTP_MAX:
        return None
    body = data[end + 1: head_end] if head_end >= 0 else data[end + 1:]
    lines = body.split(b"\n")
    if head_end < 0 and not body.endswith(b"\n"):
        lines.pop()  # the last line was cut: its value may be partial
    host = agent = None
    for raw in lines if version is not None else ():
        name, sep, value = raw.partition(b":")
        if not sep or raw[:1] in (b" ", b"\t"):
            continue  # not a header (or a folded continuation line)
        key = name.strip().lower()
        if key == b"host" and host is None:
            host = value.strip(b" \t\r")
        elif key == b"user-agent" and agent is None:
            agent = value.strip(b" \t\r")
    return HttpRequest(_text(method, 20), _text(target, TARGET_MAX),
                       (version or b"").decode("ascii"), _text(host or b"", HOST_MAX),
                       _text(agent or b"", NAME_MAX), complete)


def _header_end(data: bytes, start: int) -> int:
    """Offset of the blank line ending the headers (CRLF or bare LF), or -1."""
    if data[start:start + 2] == b"\r\n" or data[start:start + 1] == b"\n":
        return start
    ends = [i for i in (data.find(b"\n\r\n", start), data.find(b"\n\n", start)) if i >= 0]
    return min(ends) + 1 if ends else -1


class HttpRequestParser:
    """Incremental :func:`parse_http_request` for one client stream.

    Owned by the caller's thread. :meth:`feed` returns the request once it is known
    (then ``done`` is True and later chunks are ignored), None before; a stream that
    is not HTTP is ``done`` with ``result`` None after its first bytes. :meth:`finish`
    (the stream ended, or no more bytes will be looked at) gives the best answer
    from what was fed.
    """

    __slots__ = ("_buf", "done", "result")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.done = False
        self.result: HttpRequest | None = None

    def feed(self, chunk: bytes) -> HttpRequest | None:
        if self.done:
            return None
        self._buf += chunk[: HTTP_MAX - len(self._buf)]
        data = bytes(self._buf)
        if not _could_be_request(data[:21]):
            return self._end(None)
        full = len(data) >= HTTP_MAX
        if b"\n" in data or full:
            req = parse_http_request(data, final=full)
            if req is not None or full or _REQUEST.match(data[: data.find(b"\n")]) is None:
                return self._end(req)
        return None

    def finish(self) -> HttpRequest | None:
        if not self.done:
            self._end(parse_http_request(bytes(self._buf)))
        return self.result

    def _end(self, req: HttpRequest | None) -> HttpRequest | None:
        self.done, self.result = True, req
        self._buf = bytearray()
        return req


def parse_http_response(data: bytes) -> HttpResponse | None:
    """The status line at the start of a server's first bytes, or None."""
    try:
        end = data.find(b"\n", 0, 1024)
        m = _STATUS.match(bytes(data[:end])) if end >= 0 else None
        if m is None:
            return None
        version, status, reason = m.groups()
        return HttpResponse(version.decode("ascii"), int(status), _text(reason or b"", NAME_MAX))
    except Exception:  # garbage must never reach the caller as an exception
        return None
