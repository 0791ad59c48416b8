"""Builders of wire messages for the name parsers' tests and benchmarks: DNS responses
(with compression pointers, or hostile ones), and random chunk splits.

Pure helpers (stdlib); any thread.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Sequence

#: A record to build: (owner, type, ttl, rdata); rdata is bytes, or a name (str) for
#: CNAME/PTR, which is compressed against names written before it.
Record = tuple[str, int, int, "bytes | str"]


class _Writer:
    """A DNS message writer that compresses names the way servers do (suffix pointers
    to earlier names)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.seen: dict[bytes, int] = {}

    def name(self, name: str, compress: bool = True) -> None:
        labels = [lab.encode() for lab in name.strip(".").split(".")] if name.strip(".") else []
        for i in range(len(labels)):
            suffix = b".".join(labels[i:]).lower()
            if compress and suffix in self.seen:
                self.buf += struct.pack("!H", 0xC000 | self.seen[suffix])
                return
            if len(self.buf) < 0x3FFF:
                self.seen.setdefault(suffix, len(self.buf))
            self.buf += bytes([len(labels[i])]) + labels[i]
        self.buf += b"\x00"


def dns_response(questions: Sequence[tuple[str, int]], answers: Iterable[Record] = (),
                 authority: Iterable[Record] = (), additional: Iterable[Record] = (), *,
                 txid: int = 0x1234, flags: int = 0x8180, rclass: int = 1,
                 compress: bool = True) -> bytes:
    """A DNS response message: ``questions`` as (name, type); records as (owner, type,
    ttl, rdata). ``rclass`` is every record's class (0x8001: mDNS cache-flush)."""
    sections = [list(answers), list(authority), list(additional)]
    w = _Writer()
    w.buf += struct.pack("!HHHHHH", txid, flags, len(questions), *map(len, sections))
    for name, qtype in questions:
        w.name(name, compress)
        w.buf += struct.pack("!HH", qtype, 1)
    for records in sections:
        for owner, rtype, ttl, rdata in records:
            w.name(owner, compress)
            head = len(w.buf)
            w.buf += struct.pack("!HHIH", rtype, rclass, ttl, 0)
            start = len(w.buf)
            if isinstance(rdata, str):
                w.name(rdata, compress)
            else:
                w.buf += rdata
            struct.pack_into("!H", w.buf, head + 8, len(w.buf) - start)
    return bytes(w.buf)


def tcp_framed(messages: Iterable[bytes]) -> bytes:
    """DNS messages as they travel over TCP: each behind its 2-byte length."""
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


def random_chunks(data: bytes, rng: random.Random, max_chunk: int = 64) -> list[bytes]:
    """``data`` cut at random places (empty chunks included) into pieces of up to
    ``max_chunk`` bytes."""
    out, i = [], 0
    while i < len(data):
        n = rng.randint(0, max_chunk)
        out.append(data[i: i + n])
        i += n
    return out
