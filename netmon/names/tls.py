"""TLS ClientHello from a client's first bytes: server name, ALPN and what a fingerprint needs.

Pure module (stdlib and core only); it runs on whichever thread owns the reader, one
:class:`ClientHelloReader` per flow direction (the lead wires it into the hot path).

Two ways in:

- :class:`ClientHelloReader` takes a TCP stream's client payload in chunks as they come.
  TLS records may be split over segments and the ClientHello may span several records;
  the reader keeps at most one record (5 + 16384 bytes) and the handshake message so far
  (at most :data:`HELLO_MAX` bytes), so its memory is bounded whatever it is fed.
- :func:`parse_handshake` takes one bare handshake message, as QUIC carries it in its
  CRYPTO frames (``netmon.names.quic``).

Nothing here raises on bad input: a stream that is not TLS, a message that is not a
ClientHello, lengths that do not add up or a hello larger than :data:`HELLO_MAX` give
``None`` (and :attr:`ClientHelloReader.state` says ``"malformed"``).

The numbers (versions, ciphers, extension types, groups, point formats, signature
algorithms) are kept exactly as sent, GREASE included, in wire order: fingerprints
(``netmon.names.ja``) decide what to drop. The two texts, the server name and the ALPN
protocols, come from the wire and are untrusted: they are decoded, capped and passed
through :func:`netmon.core.text.safe_text`, so they can go to a terminal as they are.
The first ALPN protocol's raw bytes are kept too (at most 255 by the wire format), as
JA4 needs them exactly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from netmon.core.text import safe_text

#: Largest ClientHello handshake message (4-byte header included) a reader buffers. Real
#: ones are 200 B to ~2 KB (post-quantum key shares); a bigger one is not worth keeping.
HELLO_MAX = 16384
#: Characters of a server name as returned (a DNS name has at most 253).
SNI_MAX = 255
#: Characters of one ALPN protocol as returned, and how many protocols are returned.
ALPN_MAX = 64
ALPN_COUNT = 16

_RECORD_MAX = 16384 + 2048  # RFC 8446 5.2: a TLSCiphertext may exceed 2^14 by 2048
_HANDSHAKE = 0x16
_CLIENT_HELLO = 1

EXT_SERVER_NAME = 0x0000
EXT_SUPPORTED_GROUPS = 0x000A
EXT_EC_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B
_WANTED = frozenset((EXT_SERVER_NAME, EXT_SUPPORTED_GROUPS, EXT_EC_POINT_FORMATS,
                     EXT_SIGNATURE_ALGORITHMS, EXT_ALPN, EXT_SUPPORTED_VERSIONS))


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a ClientHello says; numbers exactly as sent (GREASE kept), texts made safe."""

    legacy_version: int
    ciphers: tuple[int, ...]
    extensions: tuple[int, ...]
    #: The first host_name of the server_name extension, safe and capped; None if absent.
    server_name: str | None
    #: ALPN protocols in the client's order, safe and capped (at most ALPN_COUNT).
    alpn: tuple[str, ...]
    #: The first ALPN protocol's bytes as sent (b"" when there is no ALPN).
    alpn_first_raw: bytes
    supported_versions: tuple[int, ...]
    groups: tuple[int, ...]
    ec_point_formats: tuple[int, ...]
    signature_algorithms: tuple[int, ...]

    @property
    def version(self) -> int:
        """The highest version offered: supported_versions' largest non-GREASE value,
        else the legacy version."""
        offered = [v for v in self.supported_versions if not is_grease(v)]
        return max(offered) if offered else self.legacy_version


def is_grease(value: int) -> bool:
    """True for the RFC 8701 GREASE values 0x0a0a, 0x1a1a, ... 0xfafa."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


READING, DONE, MALFORMED = "reading", "done", "malformed"


class ClientHelloReader:
    """Incremental ClientHello reader for one TCP stream's client-to-server payload.

    Feed the payload in order, in chunks of any size; :meth:`feed` returns the
    :class:`ClientHello` once the whole message has arrived (and from then on), None
    before. :attr:`state` is ``"reading"``, ``"done"`` or ``"malformed"``; after
    ``"done"`` or ``"malformed"`` further chunks are ignored and nothing is buffered.
    """

    __slots__ = ("_hs", "_rec", "result", "state")

    def __init__(self) -> None:
        self._rec = bytearray()  # record-layer bytes not yet consumed (< one record)
        self._hs = bytearray()  # handshake bytes gathered from the records so far
        self.result: ClientHello | None = None
        self.state = READING

    def feed(self, chunk: bytes) -> ClientHello | None:
        """Add the next bytes of the stream; the ClientHello once complete, else None."""
        view = memoryview(chunk)
        # Take only as much as one record can need, then consume whole records, so a
        # huge chunk is never copied whole.
        while view and self.state == READING:
            room = 5 + _RECORD_MAX - len(self._rec)
            self._rec += view[:room]
            view = view[room:]
            self._drain()
        return self.result

    def _drain(self) -> None:
        rec = self._rec
        while len(rec) >= 5 and self.state == READING:
            if rec[0] != _HANDSHAKE or rec[1] != 3 or rec[2] > 4:
                self._fail()
                return
            n = (rec[3] << 8) | rec[4]
            if n > _RECORD_MAX:
                self._fail()
                return
            if len(rec) < 5 + n:
                return
            self._hs += rec[5:5 + n]
            del rec[:5 + n]
            self._check()

    def _check(self) -> None:
        hs = self._hs
        if not hs:
            return
        if hs[0] != _CLIENT_HELLO:
            self._fail()
            return
        if len(hs) < 4:
            return
        total = 4 + ((hs[1] << 16) | (hs[2] << 8) | hs[3])
        if total > HELLO_MAX:
            self._fail()
            return
        if len(hs) >= total:
            self.result = parse_handshake(bytes(hs[:total]))
            self.state = DONE if self.result is not None else MALFORMED
            self._release()

    def _fail(self) -> None:
        self.state = MALFORMED
        self._release()

    def _release(self) -> None:
        self._rec = bytearray()
        self._hs = bytearray()


def parse_records(data: bytes) -> ClientHello | None:
    """The ClientHello at the start of a TLS record stream given at once, or None."""
    return ClientHelloReader().feed(data)


class _Malformed(Exception):
    """A length or count that does not fit: the message is not a ClientHello."""


class _Cursor:
    """Reads big-endian fields from a bytes slice; overruns raise _Malformed."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise _Malformed
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        if self.pos >= self.end:
            raise _Malformed
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        if self.pos + 2 > self.end:
            raise _Malformed
        self.pos += 2
        return (self.data[self.pos - 2] << 8) | self.data[self.pos - 1]

    def sub(self, n: int) -> _Cursor:
        """A cursor over the next ``n`` bytes, which this one skips."""
        if n < 0 or self.pos + n > self.end:
            raise _Malformed
        inner = _Cursor(self.data, self.pos, self.pos + n)
        self.pos += n
        return inner

    def left(self) -> int:
        return self.end - self.pos


def _u16_list(c: _Cursor) -> tuple[int, ...]:
    n = c.left() >> 1
    c.pos += 2 * n
    return struct.unpack_from(f">{n}H", c.data, c.pos - 2 * n)


def parse_handshake(msg: bytes) -> ClientHello | None:
    """One bare ClientHello handshake message (type 1, 3-byte length, body) -> result.

    Bytes after the message are ignored; anything that does not parse gives None.
    """
    if len(msg) > HELLO_MAX + 4096:  # callers cap; this keeps a direct call bounded too
        msg = msg[:HELLO_MAX + 4096]
    try:
        return _parse(msg)
    except _Malformed:
        return None


def _parse(msg: bytes) -> ClientHello:
    head = _Cursor(msg)
    if head.u8() != _CLIENT_HELLO:
        raise _Malformed
    length = (head.u8() << 16) | head.u16()
    c = head.sub(length)
    legacy_version = c.u16()
    c.take(32)  # random
    c.take(c.u8())  # legacy_session_id
    n = c.u16()
    if n & 1:
        raise _Malformed
    ciphers = _u16_list(c.sub(n))
    c.take(c.u8())  # legacy_compression_methods
    extensions: list[int] = []
    fields: dict[int, bytes] = {}
    if c.left():  # TLS 1.0-1.2 hellos may end here, without an extensions block
        ext = c.sub(c.u16())
        # The hot loop of the parser, so plain indexing rather than cursor calls.
        pos, end = ext.pos, ext.end
        while pos < end:
            if pos + 4 > end:
                raise _Malformed
            kind = (msg[pos] << 8) | msg[pos + 1]
            n = (msg[pos + 2] << 8) | msg[pos + 3]
            pos += 4
            if pos + n > end:
                raise _Malformed
            extensions.append(kind)
            if kind in _WANTED and kind not in fields:  # the first of a duplicate counts
                fields[kind] = msg[pos:pos + n]
            pos += n
    sni = _server_name(fields.get(EXT_SERVER_NAME))
    alpn_raw = _alpn(fields.get(EXT_ALPN))
    return ClientHello(
        legacy_version=legacy_version,
        ciphers=ciphers,
        extensions=tuple(extensions),
        server_name=sni,
        alpn=tuple(_text(p, ALPN_MAX) for p in alpn_raw[:ALPN_COUNT]),
        alpn_first_raw=alpn_raw[0] if alpn_raw else b"",
        supported_versions=_lenient(fields.get(EXT_SUPPORTED_VERSIONS), 1, _u16_list),
        groups=_lenient(fields.get(EXT_SUPPORTED_GROUPS), 2, _u16_list),
        ec_point_formats=_lenient(fields.get(EXT_EC_POINT_FORMATS), 1,
                                  lambda x: tuple(x.take(x.left()))),
        signature_algorithms=_lenient(fields.get(EXT_SIGNATURE_ALGORITHMS), 2, _u16_list),
    )


def _lenient(body: bytes | None, prefix: int, read) -> tuple[int, ...]:
    """An extension's length-prefixed list; an extension whose inside is malformed
    counts as empty (its type still shows in the extension list, as in tshark)."""
    if body is None:
        return ()
    c = _Cursor(body)
    try:
        n = c.u8() if prefix == 1 else c.u16()
        return read(c.sub(n))
    except _Malformed:
        return ()


def _server_name(body: bytes | None) -> str | None:
    if body is None:
        return None
    try:
        c = _Cursor(body)
        names = c.sub(c.u16())
        while names.left():
            kind = names.u8()
            name = names.take(names.u16())
            if kind == 0:  # host_name
                return _text(name, SNI_MAX)
    except _Malformed:
        return None
    return None


def _alpn(body: bytes | None) -> tuple[bytes, ...]:
    if body is None:
        return ()
    out: list[bytes] = []
    try:
        c = _Cursor(body)
        protos = c.sub(c.u16())
        while protos.left():
            out.append(protos.take(protos.u8()))
    except _Malformed:
        pass  # keep the protocols read before the bad length
    return tuple(out)


def _text(raw: bytes, cap: int) -> str:
    # Decode no more than the cap could show (4 bytes a character at most), so a long
    # name costs nothing extra; bad UTF-8 becomes U+FFFD, controls become escapes.
    return safe_text(raw[:cap * 4].decode("utf-8", "replace"), cap)
