"""Follow stream: a flow's kept frames -> its TCP or UDP payload in both directions,
chunk by chunk, as ``tshark -q -z follow,tcp,ascii,N`` (or ``follow,udp``) prints it.

Pure code, no I/O and no threads of its own: the engine's link runs
:func:`follow_frames` on a worker thread with frames copied off the reactor thread.

Headers are found by netmon's own frame decoder
(:func:`netmon.ingest.payload.transport_headers`), so every link type, VLAN/MPLS
stack, IPv6 extension chain and tunnel the flow table understands is followed the same
way.

TCP is reassembled per direction by sequence number the way Wireshark's follow tap
does it (epan/dissectors/packet-tcp.c, ``follow_tcp_tap_listener`` and
``check_follow_fragments``): bytes in order, each segment one chunk; the part of a
retransmitted or overlapping segment already shown is dropped; a segment ahead of the
next expected byte waits until the hole before it is filled, or until the other side
acknowledges past the hole (the bytes were sent but this capture, or netmon's store,
does not have them), and the hole then becomes a gap chunk with its size. Unlike
tshark, holes left at the end, bytes acknowledged but never seen, and payload cut by
the snap length are gap chunks too, so a reader always sees where bytes are missing.
UDP is each datagram's payload, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from netmon.core.link import FollowChunk
from netmon.core.values import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_SYN
from netmon.ingest.payload import transport_headers

_MASK = 0xFFFFFFFF
_HALF = 1 << 31


class Frame(Protocol):
    """What a kept frame offers (``RingFrame`` and its successors)."""

    seq: int
    ts: float
    wirelen: int
    linktype: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Followed:
    """The stream: its chunks and what went into them."""

    chunks: tuple[FollowChunk, ...]
    frames_used: int  # frames of the flow whose transport header was found
    frames_skipped: int  # frames that could not be placed (no header, other flow)


def _unwrap(raw: int, ref: int) -> int:
    """Sequence number ``raw`` (32 bits) as the absolute number nearest to ``ref``."""
    diff = (raw - ref) & _MASK
    return ref + (diff - (1 << 32) if diff >= _HALF else diff)


class _TcpFollower:
    """Per-direction reassembly state; ``d`` is 0 for the initiator, 1 for the other."""

    def __init__(self, out: list[FollowChunk]) -> None:
        self.out = out
        self.next: list[int | None] = [None, None]  # next expected byte, absolute
        self.frags: list[list[tuple[int, bytes, int]]] = [[], []]  # (seq, data, length)
        self.acked: list[int | None] = [None, None]  # highest ack of each direction's bytes
        self.fin: list[int | None] = [None, None]

    def _emit(self, d: int, data: bytes, missing: int) -> None:
        direction = 1 if d == 0 else -1
        if data:
            self.out.append(FollowChunk(direction, data))
        if missing > 0:
            self.out.append(FollowChunk(direction, missing=missing))

    def segment(self, d: int, raw_seq: int, flags: int, raw_ack: int, data: bytes,
                length: int) -> None:
        """One segment from direction ``d``: ``length`` payload bytes on the wire, of
        which ``data`` (a prefix) was kept."""
        other = 1 - d
        if flags & TCP_ACK and self.next[other] is not None:
            ack = _unwrap(raw_ack, self.next[other])  # type: ignore[arg-type]
            if self.acked[other] is None or ack > self.acked[other]:  # type: ignore[operator]
                self.acked[other] = ack
            if self.frags[other]:
                self._flush(other, ack)
        seq = raw_seq + 1 if flags & TCP_SYN else raw_seq  # SYN takes one number
        nxt = self.next[d]
        if nxt is None:
            nxt = self.next[d] = seq
        s = _unwrap(seq, nxt)
        if flags & TCP_FIN:
            self.fin[d] = s + length
        if s < nxt:  # seen before, at least in part: keep only what is new
            if s + length <= nxt:
                return
            cut = nxt - s
            data, length, s = data[cut:], length - cut, nxt
        if length <= 0:
            return
        if s == nxt:
            self._emit(d, data, length - len(data))
            self.next[d] = s + length
            self._flush(d, None)
        else:
            self.frags[d].append((s, data, length))

    def _flush(self, d: int, ack: int | None) -> None:
        """Place waiting segments of direction ``d`` that now fit; with ``ack`` (bytes
        the receiver has), a hole it covers becomes a gap."""
        frags = self.frags[d]
        while frags:
            nxt = self.next[d]
            assert nxt is not None
            for i, (s, data, length) in enumerate(frags):
                if s <= nxt:
                    del frags[i]
                    if s + length > nxt:
                        cut = nxt - s
                        self._emit(d, data[cut:], length - max(len(data), cut))
                        self.next[d] = s + length
                    break
            else:
                lowest = min(s for s, _, _ in frags)
                if ack is None or ack <= lowest:
                    return
                self._emit(d, b"", lowest - nxt)
                self.next[d] = lowest

    def finish(self) -> None:
        """End of the frames: holes before waiting segments and bytes acknowledged
        but never seen are gaps (a FIN's sequence number is not a byte)."""
        for d in (0, 1):
            if self.frags[d]:
                self._flush(d, max(s + n for s, _, n in self.frags[d]))
            nxt, acked, fin = self.next[d], self.acked[d], self.fin[d]
            if nxt is not None and acked is not None:
                end = acked - 1 if fin is not None and fin < acked else acked
                if end > nxt:
                    self._emit(d, b"", end - nxt)
                    self.next[d] = end


def follow_frames(frames: Sequence[Frame], proto: int, initiator: tuple[bytes, int],
                  responder: tuple[bytes, int]) -> Followed:
    """The ``proto`` (TCP or UDP) stream between ``initiator`` and ``responder``
    (packed address, port) in ``frames`` (one flow's kept frames, in capture order;
    ``frame.seq`` numbers the flow's packets, so skipped numbers are packets not kept).
    """
    if proto not in (PROTO_TCP, PROTO_UDP):
        raise ValueError(f"only TCP and UDP streams can be followed, not protocol {proto}")
    out: list[FollowChunk] = []
    tcp = _TcpFollower(out)
    used = skipped = 0
    expected = 0  # the flow's next packet number
    for frame in frames:
        if frame.seq > expected and (proto == PROTO_UDP or expected == 0):
            # TCP sequence numbers size the later holes; UDP has nothing to size them.
            out.append(FollowChunk(0, packets=frame.seq - expected))
        expected = max(expected, frame.seq + 1)
        found = _transport_of(frame, proto, initiator, responder)
        if found is None:
            skipped += 1
            continue
        d, buf, q, qend, ip_end = found
        # What the wire had past the kept bytes (the IP length may claim more).
        cut = max(frame.wirelen - len(buf), 0)
        if proto == PROTO_UDP:
            if qend - q < 8:
                skipped += 1
                continue
            ulen = (buf[q + 4] << 8) | buf[q + 5]
            end = q + ulen if ulen >= 8 else ip_end
            data = buf[q + 8:min(end, qend)]
            missing = min(end - q - 8 - len(data), cut)
            used += 1
            if data or missing > 0:
                direction = 1 if d == 0 else -1
                if data:
                    out.append(FollowChunk(direction, data))
                if missing > 0:
                    out.append(FollowChunk(direction, missing=missing))
            continue
        if qend - q < 14:  # no sequence number and flags: cannot be placed
            skipped += 1
            continue
        raw_seq = int.from_bytes(buf[q + 4:q + 8], "big")
        raw_ack = int.from_bytes(buf[q + 8:q + 12], "big")
        hl = (buf[q + 12] >> 4) * 4
        flags = buf[q + 13]
        start = q + max(hl, 20)
        data = buf[start:qend] if start < qend else b""
        length = len(data) + min(ip_end - max(start, qend), cut) if ip_end > qend \
            else len(data)
        used += 1
        tcp.segment(d, raw_seq, flags, raw_ack, data, max(length, 0))
    if proto == PROTO_TCP:
        tcp.finish()
    return Followed(tuple(out), used, skipped)


def _transport_of(frame: Frame, proto: int, a: tuple[bytes, int],
                  b: tuple[bytes, int]) -> tuple[int, bytes, int, int, int] | None:
    """(direction 0/1, buffer, header offset, captured end, declared end) of the flow's
    transport header in ``frame`` (the innermost one that matches, for tunnels)."""
    buf = bytes(frame.data)
    for p, src, dst, q, qend, ip_end in reversed(
            transport_headers(frame.linktype, buf, 0, len(buf), frame.ts, frame.wirelen)):
        if p != proto or qend - q < 4:
            continue
        sport = (buf[q] << 8) | buf[q + 1]
        dport = (buf[q + 2] << 8) | buf[q + 3]
        if (src, sport) == a and (dst, dport) == b:
            return 0, buf, q, qend, ip_end
        if (src, sport) == b and (dst, dport) == a:
            return 1, buf, q, qend, ip_end
    return None
