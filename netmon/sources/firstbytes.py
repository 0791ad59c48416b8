"""What a TCP connection's first bytes look like: a coarse class and an escaped preview.

Pure module (no twisted, no textual), used by the listener source on the reactor
thread. Classes: ``http`` (an HTTP request line), ``tls`` (a TLS ClientHello record),
``ssh`` (an SSH identification banner), ``text`` (other printable ASCII), ``binary``
(anything else) and ``none`` (the peer sent nothing).

The class depends only on the first :data:`PREFIX` bytes, never on how they were
split into reads: :class:`FirstBytes` decides early only when no later byte could
change the answer, so feeding a stream in 1-byte chunks gives the same class as
feeding it at once (tests/test_firstbytes.py checks this with random splits).

Payload is never kept beyond :data:`PREFIX` bytes, and it leaves this module only as
:func:`escape` output: printable ASCII with every other byte written as ``\\xNN``,
so a preview can be printed or put on a terminal without being interpreted. This is
not :func:`netmon.core.text.safe_text`'s job: that one makes decoded *text* inert and
keeps its printable letters in any script; this one shows raw *bytes* exactly and
reversibly (a backslash too is escaped), so two different payloads never look alike.
"""

from __future__ import annotations

#: Bytes of a connection kept to classify it (and nothing beyond).
PREFIX = 64
#: Bytes of the prefix shown (escaped) as a preview.
PREVIEW = 32

CLASSES = ("http", "tls", "ssh", "text", "binary", "none")

_METHODS = tuple(m + b" " for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT",
                                     b"OPTIONS", b"TRACE", b"PATCH", b"PRI"))
_SSH = b"SSH-"
#: Bytes that may appear in ordinary text: printable ASCII, tab, CR, LF.
_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
_ESCAPES = {0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_ESCAPE_TABLE = tuple(_ESCAPES.get(b, chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}")
                      for b in range(256))


def _tls_match(data: bytes) -> bool | None:
    """True/False once the TLS record header can be judged, None while it could match."""
    # TLS record: type 22 (handshake), version 3.x, 2-byte length, then ClientHello (1).
    checks = ((0, lambda b: b == 0x16), (1, lambda b: b == 0x03), (2, lambda b: b <= 0x04),
              (5, lambda b: b == 0x01))
    for pos, ok in checks:
        if pos >= len(data):
            return None
        if not ok(data[pos]):
            return _sslv2_match(data)
    return True


def _sslv2_match(data: bytes) -> bool | None:
    # An SSLv2-compatible ClientHello: 2-byte length with the top bit set, type 1, v3.x.
    checks = ((0, lambda b: b & 0x80), (2, lambda b: b == 0x01), (3, lambda b: b == 0x03))
    for pos, ok in checks:
        if pos >= len(data):
            return None
        if not ok(data[pos]):
            return False
    return True


def _http_match(data: bytes) -> bool | None:
    """An HTTP request line starts with a method, a space and a non-space target."""
    pending = False
    for method in _METHODS:
        head = data[:len(method)]
        if head != method[:len(head)]:
            continue
        if len(data) <= len(method):
            pending = True
            continue
        return 0x21 <= data[len(method)] <= 0x7E
    return None if pending else False


def classify(data: bytes, complete: bool) -> str | None:
    """The class of a connection whose first bytes are ``data`` (at most PREFIX used).

    With ``complete`` False more bytes may follow: the answer is None while they
    could still change it. With ``complete`` True (the stream ended, or PREFIX bytes
    are in) the answer is final.
    """
    data = data[:PREFIX]
    if not data:
        return "none" if complete else None
    if len(data) >= PREFIX:
        complete = True
    head = data[:len(_SSH)]
    ssh: bool | None = head == _SSH if len(head) == len(_SSH) else (
        None if _SSH.startswith(head) else False)
    if ssh:
        return "ssh"
    tls = _tls_match(data)
    if tls:
        return "tls"
    http = _http_match(data)
    if http:
        return "http"
    if not complete and None in (ssh, tls, http):
        return None  # a known prefix could still complete
    if all(b in _PRINTABLE for b in data):
        return "text" if complete else None
    return "binary"


def escape(data: bytes, limit: int = PREVIEW) -> str:
    """``data[:limit]`` as plain printable ASCII: other bytes become ``\\xNN`` and a
    backslash ``\\\\``, so the text is safe on a terminal and unambiguous. It is plain
    text, not markup: render it with ``rich.text.Text``."""
    return "".join([_ESCAPE_TABLE[b] for b in data[:limit]])


class FirstBytes:
    """Incremental classifier of one connection's first bytes.

    Keeps at most PREFIX bytes; once the class is known and the preview bytes are in,
    later chunks cost one comparison.
    """

    __slots__ = ("_buf", "kind")

    def __init__(self) -> None:
        self._buf = b""
        #: The class once decided, None until then.
        self.kind: str | None = None

    def feed(self, chunk: bytes) -> None:
        buf = self._buf
        if self.kind is not None and len(buf) >= PREVIEW:
            return
        if len(buf) < PREFIX:
            buf = self._buf = buf + chunk[:PREFIX - len(buf)]
        if self.kind is None:
            self.kind = classify(buf, len(buf) >= PREFIX)

    def finish(self) -> str:
        """The final class (the stream ended)."""
        if self.kind is None:
            self.kind = classify(self._buf, True)
        return self.kind

    @property
    def preview(self) -> str:
        """The first PREVIEW bytes, escaped."""
        return escape(self._buf)
