"""DNS answers that name an address: a pure parser of DNS and mDNS messages.

Pure module (stdlib + core); runs on whichever thread owns the caller's object (the
reactor thread when the ingest path feeds it). :func:`parse_dns` reads one message (a
UDP payload, unicast DNS or mDNS); :class:`DnsStream` reads DNS over TCP (each message
behind a 2-byte length) incrementally from chunks of any size.

What comes out is what maps an address to a name (:class:`AddressName`): A and AAAA
records, and PTR records whose owner is a reverse name (``4.3.2.1.in-addr.arpa``,
``ip6.arpa``: mDNS announces hosts that way). An A/AAAA record in the answer section
reached from the question through CNAMEs is named after the QUESTION (the name a user
typed, ``www.netflix.com``), with the record's own owner (the CDN alias) kept as
``alias``. Records of the authority and additional sections (glue) keep their owner.

Hostile input: names are decompressed with every pointer pointing strictly before the
previous jump's target (so a loop cannot exist) and at most :data:`_MAX_JUMPS` jumps;
a name is at most 255 bytes on the wire and a label 63; a message truncated mid-record
(a snapped packet) gives the records before the cut with ``complete=False``. Nothing
here raises on bad bytes: garbage gives None. Names become text with undecodable bytes
escaped, then :func:`netmon.core.text.safe_text`, capped at :data:`NAME_TEXT_MAX`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from netmon.core.text import safe_text

#: Characters of a name as text: a wire name holds at most 253 printable characters;
#: escapes of odd bytes can lengthen it, so the text is cut (with an ellipsis) here.
NAME_TEXT_MAX = 260
#: Bytes of a name on the wire, labels' length bytes included (RFC 1035 3.1).
NAME_WIRE_MAX = 255
#: Bytes of one label (RFC 1035 2.3.4).
LABEL_MAX = 63
#: Compression pointers followed in one name (each must point further back anyway).
_MAX_JUMPS = 64
#: Questions and address records read from one message (more is not a real answer).
MAX_QUESTIONS = 4
MAX_RECORDS = 512
#: Bytes of one TCP DNS message kept; the rest of a bigger one (a zone transfer) is
#: skipped and the kept prefix parsed as a truncated message.
TCP_MESSAGE_MAX = 16 * 1024

TYPE_A = 1
TYPE_CNAME = 5
TYPE_PTR = 12
TYPE_AAAA = 28
CLASS_IN = 1
_MDNS_FLUSH = 0x8000  # top bit of an mDNS record's class: cache-flush (RFC 6762 10.2)
_V4_PREFIX = bytes(12)  # as netmon.ingest.batch.V4_PREFIX: IPv4 in the last 4 of 16 bytes
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")


class _Malformed(Exception):
    """Internal: the message cannot be read further (never leaves this module)."""


@dataclass(frozen=True, slots=True)
class AddressName:
    """One address named by a DNS record.

    ``addr`` is 16 bytes (IPv4 in the last four, as the flow table keeps addresses) and
    ``family`` 4 or 6. ``name`` is the question's name for an answer reached through
    CNAMEs, else the record's owner (for PTR: the name pointed to); ``alias`` is the
    record's owner when it differs from ``name`` (the CDN's name), else "". ``ttl`` is
    the record's TTL in seconds as sent (values above 2**31-1 read as 0, RFC 2181).
    ``section`` is 0 answer, 1 authority, 2 additional. ``cache_flush`` is the mDNS
    bit. Strings are safe text, capped at NAME_TEXT_MAX.
    """

    addr: bytes
    family: int
    name: str
    alias: str
    ttl: int
    rtype: int
    section: int
    cache_flush: bool = False


@dataclass(frozen=True, slots=True)
class DnsMessage:
    """What one DNS response says about addresses.

    ``questions`` are the question names (safe text); ``names`` the address records;
    ``complete`` is False when the message ended (or was cut) before its counts said
    or a record was malformed: the records before that point are still given.
    """

    txid: int
    rcode: int
    questions: tuple[str, ...]
    names: tuple[AddressName, ...]
    complete: bool
    mdns: bool = False


def parse_dns(payload: bytes, *, mdns: bool = False) -> DnsMessage | None:
    """The address records of one DNS response, or None if ``payload`` is not one.

    ``mdns`` (UDP port 5353) reads the class's top bit as cache-flush. Queries (QR=0,
    including mDNS known-answer lists) and opcodes other than QUERY give None.
    """
    try:
        return _parse(memoryview(payload).tobytes() if not isinstance(payload, bytes)
                      else payload, mdns)
    except Exception:  # garbage must never reach the caller as an exception
        return None


def _parse(msg: bytes, mdns: bool) -> DnsMessage | None:
    if len(msg) < 12:
        return None
    txid, flags, qd, an, ns, ar = _HEADER.unpack_from(msg)
    if not flags & 0x8000 or (flags >> 11) & 0xF != 0:
        return None
    off = 12
    complete = True
    questions: list[bytes] = []
    cnames: dict[bytes, bytes] = {}  # lower-case owner -> lower-case target (answer section)
    shown: dict[bytes, bytes] = {}  # lower-case name -> the name as sent, for the text
    records: list[tuple[int, bytes, bytes, int, int, bool]] = []
    memo: dict[int, tuple[bytes, int, int]] = {}  # offset -> a name read there
    try:
        for _ in range(qd):
            name, off = _read_name(msg, off, memo)
            if off + 4 > len(msg):
                raise _Malformed
            off += 4
            if len(questions) < MAX_QUESTIONS:
                questions.append(name)
                shown.setdefault(name.lower(), name)
        for section, count in ((0, an), (1, ns), (2, ar)):
            for _ in range(count):
                owner, off = _read_name(msg, off, memo)
                if off + 10 > len(msg):
                    raise _Malformed
                rtype, rclass, ttl, rdlen = _RR.unpack_from(msg, off)
                off += 10
                end = off + rdlen
                if end > len(msg):
                    raise _Malformed
                flush = mdns and bool(rclass & _MDNS_FLUSH)
                if mdns:
                    rclass &= ~_MDNS_FLUSH
                if rclass == CLASS_IN and len(records) < MAX_RECORDS:
                    ttl = ttl if ttl < 0x8000_0000 else 0
                    if rtype == TYPE_A and rdlen == 4:
                        records.append((section, owner, _V4_PREFIX + msg[off:end], 4, ttl,
                                        flush))
                    elif rtype == TYPE_AAAA and rdlen == 16:
                        records.append((section, owner, msg[off:end], 6, ttl, flush))
                    elif rtype in (TYPE_CNAME, TYPE_PTR):
                        target, tend = _read_name(msg, off, memo)
                        if tend > end:
                            raise _Malformed
                        if rtype == TYPE_CNAME and section == 0:
                            cnames.setdefault(owner.lower(), target.lower())
                            shown.setdefault(owner.lower(), owner)
                        elif rtype == TYPE_PTR:
                            records.append((section, owner, target, 0, ttl, flush))
                off = end
    except _Malformed:
        complete = False
    return DnsMessage(txid, flags & 0xF, tuple(_text(q) for q in questions),
                      _named(records, questions, cnames, shown), complete, mdns)


def _named(records: list[tuple[int, bytes, bytes, int, int, bool]], questions: list[bytes],
           cnames: dict[bytes, bytes], shown: dict[bytes, bytes]) -> tuple[AddressName, ...]:
    """Records as AddressNames: answers named after the question their CNAME chain
    starts from; PTRs after the name they point to."""
    back: dict[bytes, bytes] = {}  # CNAME target -> owner, to walk a chain backwards
    for owner, target in cnames.items():
        back.setdefault(target, owner)
    asked = {q.lower() for q in questions}
    texts: dict[bytes, str] = {}  # one string per name: a CDN's many addresses share it
    out: list[AddressName] = []
    for section, owner, data, family, ttl, flush in records:
        if family == 0:  # PTR: the owner is the address, the target the name
            packed = _reverse_address(owner)
            if packed is None:
                continue
            addr, family = packed
            out.append(AddressName(addr, family, _text(data, texts), "", ttl, TYPE_PTR, section,
                                   flush))
            continue
        name = owner
        if section == 0:
            key, seen = owner.lower(), {owner.lower()}
            while key not in asked and key in back and len(seen) <= MAX_RECORDS:
                key = back[key]
                if key in seen:  # a CNAME loop: no question at its start
                    break
                seen.add(key)
            if key in asked or key != owner.lower():
                name = shown.get(key, key)
        alias = _text(owner, texts) if name.lower() != owner.lower() else ""
        out.append(AddressName(data, family, _text(name, texts), alias, ttl,
                               TYPE_A if family == 4 else TYPE_AAAA, section, flush))
    return tuple(out)


def _read_name(msg: bytes, off: int, memo: dict[int, tuple[bytes, int, int]]
               ) -> tuple[bytes, int]:
    """The name at ``off`` as dotted bytes (root: b""), and the offset after it.

    ``memo`` (one per message) maps offsets where a name was read whole to (name,
    wire bytes, jumps): a pointer to such an offset reuses it, with the same limits
    checked as if it were read again (answers point at the question's name)."""
    labels: list[bytes] = []
    start = off
    wire = 1  # the root's zero byte
    end = -1  # where the name ends in the message (after its first pointer)
    floor = off  # every jump must land strictly before the last one's target
    jumps = 0
    n = len(msg)
    suffix = b""
    while True:
        if off >= n:
            raise _Malformed
        length = msg[off]
        if length == 0:
            off += 1
            break
        if length & 0xC0 == 0xC0:
            if off + 1 >= n or jumps >= _MAX_JUMPS:
                raise _Malformed
            target = ((length & 0x3F) << 8) | msg[off + 1]
            if target >= floor:
                raise _Malformed  # forward or self pointer: could loop
            if end < 0:
                end = off + 2
            jumps += 1
            known = memo.get(target)
            if known is not None:
                suffix, more, deeper = known
                wire += more - 1
                jumps += deeper
                if wire > NAME_WIRE_MAX or jumps > _MAX_JUMPS:
                    raise _Malformed
                break
            floor = off = target
            continue
        if length > LABEL_MAX:  # 0x40 / 0x80: extended label types, not in use
            raise _Malformed
        wire += length + 1
        if wire > NAME_WIRE_MAX or off + 1 + length > n:
            raise _Malformed
        labels.append(msg[off + 1: off + 1 + length])
        off += 1 + length
    if suffix:
        labels.append(suffix)
    name = b".".join(labels)
    memo[start] = (name, wire, jumps)
    return name, (end if end >= 0 else off)


def _text(name: bytes, memo: dict[bytes, str] | None = None) -> str:
    """A wire name as terminal-safe text (undecodable bytes as \\xNN)."""
    if memo is not None and name in memo:
        return memo[name]
    text = safe_text(name.decode("utf-8", "backslashreplace"), NAME_TEXT_MAX)
    if memo is not None:
        memo[name] = text
    return text


def _reverse_address(owner: bytes) -> tuple[bytes, int] | None:
    """The address a reverse name stands for (``d.c.b.a.in-addr.arpa``, 32 nibbles
    ``.ip6.arpa``), as (16 bytes, family), or None."""
    labels = owner.lower().split(b".")
    if labels[-2:] == [b"in-addr", b"arpa"] and len(labels) == 6:
        octets = labels[3::-1]
        if all(o.isdigit() and len(o) <= 3 and int(o) < 256 for o in octets):
            return _V4_PREFIX + bytes(int(o) for o in octets), 4
        return None
    if labels[-2:] == [b"ip6", b"arpa"] and len(labels) == 34:
        nibbles = b"".join(labels[31::-1])
        if len(nibbles) == 32:
            try:
                return bytes.fromhex(nibbles.decode("ascii")), 6
            except ValueError:
                return None
    return None


class DnsStream:
    """DNS over TCP, one direction of one connection, read incrementally.

    Owned by the caller's thread. :meth:`feed` takes the next chunk of the stream (any
    split) and returns the messages completed by it. Buffers at most
    :data:`TCP_MESSAGE_MAX` bytes (+2): a longer message is parsed from its kept prefix
    (``complete=False``) and the rest skipped. Messages that are not responses are
    counted in ``skipped``.
    """

    __slots__ = ("_after", "_buf", "_cut", "_drop", "_need", "messages", "skipped")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = -1  # length of the message being read, -1 while reading the prefix
        self._drop = 0  # bytes of an over-long message still to skip
        self._cut = False  # the message being read is over-long (only a prefix is kept)
        self._after = 0  # bytes of it beyond the kept prefix
        self.messages = 0
        self.skipped = 0

    def feed(self, chunk: bytes) -> list[DnsMessage]:
        out: list[DnsMessage] = []
        view = memoryview(chunk)
        while len(view):
            if self._drop:
                take = min(self._drop, len(view))
                self._drop -= take
                view = view[take:]
                continue
            if self._need < 0:
                take = min(2 - len(self._buf), len(view))
                self._buf += view[:take]
                view = view[take:]
                if len(self._buf) == 2:
                    length = int.from_bytes(self._buf, "big")
                    self._buf.clear()
                    self._need = min(length, TCP_MESSAGE_MAX)
                    self._cut = length > TCP_MESSAGE_MAX
                    self._after = length - self._need if self._cut else 0
                    if self._need == 0:
                        self._need = -1
                        self.skipped += 1
                continue
            take = min(self._need - len(self._buf), len(view))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) == self._need:
                msg = parse_dns(bytes(self._buf))
                self._buf.clear()
                self._need = -1
                if self._cut:
                    self._drop = self._after
                    if msg is not None:
                        msg = _incomplete(msg)
                if msg is None:
                    self.skipped += 1
                else:
                    self.messages += 1
                    out.append(msg)
        return out


def _incomplete(msg: DnsMessage) -> DnsMessage:
    return DnsMessage(msg.txid, msg.rcode, msg.questions, msg.names, False, msg.mdns)
