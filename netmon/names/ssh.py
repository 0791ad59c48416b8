"""SSH identification banners (RFC 4253 4.2): ``SSH-protoversion-softwareversion SP
comments CR LF``, from either side's first bytes.

Pure module (stdlib + core); runs on whichever thread owns the caller's object (the
reactor thread when the ingest path feeds it). A server may send other lines before
its banner (RFC 4253 4.2): up to :data:`PRE_LINES_MAX` lines and :data:`PRE_BYTES_MAX`
bytes of them are skipped. A banner line is at most :data:`BANNER_MAX` bytes, CR LF
included; a longer one is not a banner. :class:`SshBannerParser` takes chunks of any
size; :func:`parse_ssh_banner` takes a prefix held whole. Strings are safe text.
"""

from __future__ import annotations

from dataclasses import dataclass

from netmon.core.text import safe_text

#: Bytes of the banner line, CR LF included (RFC 4253 4.2).
BANNER_MAX = 255
#: Lines and bytes a server may send before its banner that are skipped.
PRE_LINES_MAX = 16
PRE_BYTES_MAX = 4096


@dataclass(frozen=True, slots=True)
class SshBanner:
    """One side's banner: ``protocol`` the whole line without CR LF (what tshark shows
    as ``ssh.protocol``), ``proto_version`` ("2.0", "1.99"), ``software``
    ("OpenSSH_9.2p1") and ``comments`` ("Debian-2+deb12u3", or ""). Safe text."""

    protocol: str
    proto_version: str
    software: str
    comments: str


def _banner(line: bytes) -> SshBanner | None:
    line = line.removesuffix(b"\r")
    version, sep, rest = line[4:].partition(b"-")
    if not sep or not version:
        return None
    software, _, comments = rest.partition(b" ")

    def text(raw: bytes) -> str:
        return safe_text(raw.decode("utf-8", "backslashreplace"), BANNER_MAX)

    return SshBanner(text(line), text(version), text(software), text(comments))


def parse_ssh_banner(data: bytes, *, final: bool = True) -> SshBanner | None:
    """The banner in ``data`` (a side's first bytes), or None. With ``final`` False
    more bytes may follow; the result is then None until the banner line has ended."""
    parser = SshBannerParser()
    result = parser.feed(data)
    return result if result is not None or not final else parser.finish()


class SshBannerParser:
    """Incremental banner reader for one direction of one connection.

    Owned by the caller's thread. :meth:`feed` returns the banner once its line has
    ended (``done`` becomes True), None before; ``done`` with ``result`` None means
    there is no banner (too many or too long lines first, or a long banner line).
    Keeps at most BANNER_MAX bytes of the current line.
    """

    __slots__ = ("_cur", "_line", "_lines", "_seen", "done", "result")

    def __init__(self) -> None:
        self._line = bytearray()  # the current line's first BANNER_MAX bytes
        self._cur = 0  # bytes of the current line so far
        self._lines = 0  # lines before the banner skipped so far
        self._seen = 0  # bytes before the current line
        self.done = False
        self.result: SshBanner | None = None

    def feed(self, chunk: bytes) -> SshBanner | None:
        try:
            return self._feed(chunk)
        except Exception:  # garbage must never reach the caller as an exception
            return self._end(None)

    def _feed(self, chunk: bytes) -> SshBanner | None:
        pos = 0
        while not self.done and pos < len(chunk):
            nl = chunk.find(b"\n", pos)
            stop = len(chunk) if nl < 0 else nl
            self._cur += stop - pos
            if len(self._line) < BANNER_MAX:
                self._line += chunk[pos: min(stop, pos + BANNER_MAX - len(self._line))]
            head = bytes(self._line[:4])
            if b"SSH-".startswith(head) or head == b"SSH-":
                if self._cur > BANNER_MAX - 1:
                    return self._end(None)  # too long for a banner line (LF included)
            elif self._seen + self._cur > PRE_BYTES_MAX:
                return self._end(None)
            if nl < 0:
                return None
            pos = nl + 1
            if head == b"SSH-":
                return self._end(_banner(bytes(self._line)))
            self._seen += self._cur + 1
            self._lines += 1
            self._line.clear()
            self._cur = 0
            if self._lines >= PRE_LINES_MAX or self._seen > PRE_BYTES_MAX:
                return self._end(None)
        return None

    def finish(self) -> SshBanner | None:
        """No more bytes: the answer from what was fed (a banner without its line end
        is not taken: it could have been cut)."""
        if not self.done:
            self._end(None)
        return self.result

    def _end(self, banner: SshBanner | None) -> SshBanner | None:
        self.done, self.result = True, banner
        self._line = bytearray()
        return banner
