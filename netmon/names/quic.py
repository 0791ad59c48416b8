"""The ClientHello inside a QUIC connection's client Initial packets (v1 and v2).

Pure module (stdlib, ``cryptography``, names.tls); it runs on whichever thread owns the
reader, one :class:`QuicHelloReader` per flow's client-to-server direction.

Initial packets are encrypted, but with keys anyone can derive from the Destination
Connection ID of the client's first Initial (RFC 9001 5.2; RFC 9369 3.3 for v2's salt
and its ``quicv2`` labels), which is how nDPI and Wireshark read their server name. For
each UDP datagram the reader walks the coalesced long-header packets, removes the header
protection of every client Initial (AES-ECB mask over a 16-byte sample), opens its payload
(AES-128-GCM; a packet that does not authenticate is dropped, so random bytes never reach
the TLS parser), reads PADDING, PING, ACK and CRYPTO frames (stopping at any other), and
puts the CRYPTO data back together by offset, across Initials: Chrome and Firefox split a
ClientHello with post-quantum key shares over two of them, and Chrome shuffles its CRYPTO
frames. Once the first handshake message is whole it goes to
:func:`netmon.names.tls.parse_handshake`.

Bounded: CRYPTO data past :data:`netmon.names.tls.HELLO_MAX` is not kept, at most
:data:`MAX_DATAGRAMS` datagrams are looked at, and garbage gives None, never an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from netmon.names.tls import DONE, HELLO_MAX, MALFORMED, READING, ClientHello, parse_handshake

QUIC_V1 = 0x00000001
QUIC_V2 = 0x6B3343CF
#: Initial salts (RFC 9001 5.2, RFC 9369 3.3.1) and the labels of each version's keys.
_SALTS = {QUIC_V1: bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
          QUIC_V2: bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")}
_LABELS = {QUIC_V1: (b"quic key", b"quic iv", b"quic hp"),
           QUIC_V2: (b"quicv2 key", b"quicv2 iv", b"quicv2 hp")}
#: The long-header packet type of an Initial: v2 renumbered them (RFC 9369 3.2).
_INITIAL_TYPE = {QUIC_V1: 0, QUIC_V2: 1}
_RETRY_TYPE = {QUIC_V1: 3, QUIC_V2: 0}

#: Datagrams a reader looks at before it gives up on a connection.
MAX_DATAGRAMS = 32
#: CRYPTO bytes a reader stores, overlaps and retransmissions counted.
_STORE_MAX = 2 * HELLO_MAX
_NONZERO = re.compile(rb"[^\x00]")


class _Bad(Exception):
    """A length that overruns its packet."""


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    # HKDF-Expand-Label (RFC 8446 7.1) with an empty context; every output here is at
    # most 32 bytes, one HMAC-SHA256 block.
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    return hmac.digest(secret, info + b"\x01", hashlib.sha256)[:length]


@dataclass(frozen=True, slots=True)
class InitialKeys:
    """A client's Initial packet protection keys for one DCID and version."""

    key: bytes
    iv: bytes
    hp: bytes


def initial_keys(dcid: bytes, version: int) -> InitialKeys:
    """The client Initial keys derived from ``dcid`` (RFC 9001 5.2 / RFC 9369 3.3).

    Raises KeyError for a version other than v1 and v2.
    """
    initial = hmac.digest(_SALTS[version], dcid, hashlib.sha256)  # HKDF-Extract
    client = _expand_label(initial, b"client in", 32)
    key_label, iv_label, hp_label = _LABELS[version]
    return InitialKeys(_expand_label(client, key_label, 16), _expand_label(client, iv_label, 12),
                       _expand_label(client, hp_label, 16))


class _Opener:
    """The cipher objects of one InitialKeys, built once and reused per packet."""

    __slots__ = ("aead", "ecb", "iv")

    def __init__(self, keys: InitialKeys) -> None:
        self.aead = AESGCM(keys.key)
        self.ecb = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()
        self.iv = int.from_bytes(keys.iv, "big")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise _Bad
    first = data[pos]
    n = 1 << (first >> 6)
    if pos + n > len(data):
        raise _Bad
    value = first & 0x3F
    for i in range(1, n):
        value = (value << 8) | data[pos + i]
    return value, pos + n


@dataclass(frozen=True, slots=True)
class _LongPacket:
    start: int
    version: int
    dcid: bytes
    pn_offset: int
    end: int


def _initials(datagram: bytes) -> list[_LongPacket]:
    """The Initial packets of v1/v2 coalesced in ``datagram``, headers still protected."""
    out: list[_LongPacket] = []
    pos = 0
    try:
        while pos + 7 <= len(datagram):
            first = datagram[pos]
            if not first & 0x80:  # a short header runs to the datagram's end
                break
            version = int.from_bytes(datagram[pos + 1:pos + 5], "big")
            if version not in _SALTS:  # version negotiation, or one we cannot read
                break
            i = pos + 5
            dcid_len = datagram[i]
            if dcid_len > 20:
                break
            dcid = datagram[i + 1:i + 1 + dcid_len]
            i += 1 + dcid_len
            if i >= len(datagram) or datagram[i] > 20:
                break
            i += 1 + datagram[i]
            kind = (first >> 4) & 3
            if kind == _RETRY_TYPE[version]:
                break
            if kind == _INITIAL_TYPE[version]:
                token_len, i = _varint(datagram, i)
                i += token_len
            length, i = _varint(datagram, i)
            end = i + length
            if end > len(datagram) or length < 20:
                break
            if kind == _INITIAL_TYPE[version]:
                out.append(_LongPacket(pos, version, bytes(dcid), i, end))
            pos = end
    except _Bad:
        pass
    return out


def _open(datagram: bytes, p: _LongPacket, opener: _Opener) -> bytes | None:
    """``p``'s decrypted payload, or None when it does not authenticate."""
    sample = datagram[p.pn_offset + 4:p.pn_offset + 20]
    mask = opener.ecb.update(sample)
    first = datagram[p.start] ^ (mask[0] & 0x0F)
    pn_len = (first & 3) + 1
    pn_bytes = bytes(b ^ m for b, m in zip(datagram[p.pn_offset:p.pn_offset + pn_len],
                                            mask[1:1 + pn_len], strict=True))
    header = bytes([first]) + datagram[p.start + 1:p.pn_offset] + pn_bytes
    # Initial packet numbers are small, so the truncated number is the full one.
    nonce = (opener.iv ^ int.from_bytes(pn_bytes, "big")).to_bytes(12, "big")
    try:
        return opener.aead.decrypt(nonce, datagram[p.pn_offset + pn_len:p.end], header)
    except InvalidTag:
        return None


def crypto_frames(payload: bytes) -> list[tuple[int, bytes]]:
    """(offset, data) of the CRYPTO frames of a decrypted Initial payload, read up to the
    first frame other than PADDING, PING, ACK or CRYPTO (or a bad length)."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    try:
        while pos < len(payload):
            kind = payload[pos]
            if kind == 0x00:  # PADDING: skip the whole run at once
                m = _NONZERO.search(payload, pos)
                pos = m.start() if m else len(payload)
            elif kind == 0x01:  # PING
                pos += 1
            elif kind in (0x02, 0x03):  # ACK, ACK_ECN
                _, pos = _varint(payload, pos + 1)  # largest acknowledged
                _, pos = _varint(payload, pos)  # ack delay
                count, pos = _varint(payload, pos)
                _, pos = _varint(payload, pos)  # first range
                # Each range is two varints of at least a byte: a huge count runs out
                # of payload (and stops) within len(payload) steps.
                for _ in range(2 * count + (3 if kind == 0x03 else 0)):
                    _, pos = _varint(payload, pos)
            elif kind == 0x06:  # CRYPTO
                offset, pos = _varint(payload, pos + 1)
                length, pos = _varint(payload, pos)
                if pos + length > len(payload):
                    raise _Bad
                out.append((offset, payload[pos:pos + length]))
                pos += length
            else:
                break
    except _Bad:
        pass
    return out


class QuicHelloReader:
    """The ClientHello of one QUIC connection, from its client's UDP datagrams in order.

    :meth:`feed` returns the :class:`~netmon.names.tls.ClientHello` once its CRYPTO data
    is complete (and from then on), None before. :attr:`state` is ``"reading"``,
    ``"done"`` or ``"malformed"``; :attr:`version` is the QUIC version of the first
    Initial that opened (0 before).
    """

    __slots__ = ("_datagrams", "_openers", "_pieces", "_stored", "result", "state", "version")

    def __init__(self) -> None:
        # Keys by (version, DCID): the first Initial's DCID keys the whole connection
        # (later Initials may carry the server's chosen DCID); after a Retry the client
        # starts over with the new DCID, so a packet's own DCID is tried as well.
        self._openers: dict[tuple[int, bytes], _Opener] = {}
        self._pieces: dict[int, bytes] = {}
        self._stored = 0
        self._datagrams = 0
        self.result: ClientHello | None = None
        self.state = READING
        self.version = 0

    def feed(self, datagram: bytes) -> ClientHello | None:
        """Look at the next client datagram; the ClientHello once complete, else None."""
        if self.state != READING:
            return self.result
        self._datagrams += 1
        if self._datagrams > MAX_DATAGRAMS:
            self._finish(None)
            return None
        datagram = bytes(datagram)
        for packet in _initials(datagram):
            payload = self._decrypt(datagram, packet)
            if payload is None:
                continue
            for offset, data in crypto_frames(payload):
                self._store(offset, data)
            if self.state == READING:
                self._assemble()
            if self.state != READING:
                break
        return self.result

    def _decrypt(self, datagram: bytes, packet: _LongPacket) -> bytes | None:
        first = next((k for k in self._openers if k[0] == packet.version), None)
        own = (packet.version, packet.dcid)
        for k in (first, own) if first != own else (own,):
            if k is None:
                continue
            opener = self._openers.get(k) or _Opener(initial_keys(k[1], k[0]))
            payload = _open(datagram, packet, opener)
            if payload is not None:
                # Only keys that opened a packet are kept (two at most in practice: the
                # first DCID's, and a Retry's), so junk cannot crowd them out.
                if k not in self._openers and len(self._openers) < 4:
                    self._openers[k] = opener
                self.version = self.version or packet.version
                return payload
        return None

    def _store(self, offset: int, data: bytes) -> None:
        if offset >= HELLO_MAX or not data:
            return  # beyond anything a ClientHello this reader accepts can reach
        data = data[:HELLO_MAX - offset]
        if len(data) <= len(self._pieces.get(offset, b"")):
            return
        self._stored += len(data)
        if self._stored > _STORE_MAX:
            self._finish(None)
            return
        self._pieces[offset] = data

    def _assemble(self) -> None:
        buf = bytearray()
        for offset in sorted(self._pieces):
            if offset > len(buf):
                break
            data = self._pieces[offset]
            if offset + len(data) > len(buf):
                buf += data[len(buf) - offset:]
        if not buf:
            return
        if buf[0] != 1:  # the client's first handshake message must be a ClientHello
            self._finish(None)
            return
        if len(buf) < 4:
            return
        total = 4 + int.from_bytes(buf[1:4], "big")
        if total > HELLO_MAX:
            self._finish(None)
        elif len(buf) >= total:
            hello = parse_handshake(bytes(buf[:total]))
            self._finish(hello)

    def _finish(self, hello: ClientHello | None) -> None:
        self.result = hello
        self.state = DONE if hello is not None else MALFORMED
        self._pieces = {}
        self._openers = {}


def parse_datagram(datagram: bytes) -> ClientHello | None:
    """The ClientHello in one client datagram's Initial packets, if it holds it whole."""
    return QuicHelloReader().feed(datagram)


@dataclass(frozen=True, slots=True)
class Initial:
    """One opened client Initial packet (for tests and tools)."""

    version: int
    dcid: bytes
    payload: bytes


def open_initials(datagram: bytes, dcid: bytes | None = None) -> list[Initial]:
    """The client Initials in ``datagram`` that open with the keys of ``dcid`` (each
    packet's own DCID when None); those that do not authenticate are left out."""
    out = []
    for packet in _initials(bytes(datagram)):
        opener = _Opener(initial_keys(packet.dcid if dcid is None else dcid, packet.version))
        payload = _open(bytes(datagram), packet, opener)
        if payload is not None:
            out.append(Initial(packet.version, packet.dcid, payload))
    return out
