"""Where a frame's TCP/UDP headers and payload are, found by netmon's own frame decoder.

Pure code, called on whichever thread owns the caller (the reactor for the names read
off frames the fast path did not decode; a worker thread for follow stream).
:class:`TransportFinder` subclasses :class:`netmon.ingest.framedecoder.FrameDecoder`
and only notes where each transport header sits, so every link type, VLAN/MPLS stack,
IPv6 extension chain and tunnel the flow table understands is walked the same way,
by one decoder. A fragment gives nothing (a payload is read from a whole segment);
a tunnel gives its outer and inner headers, innermost last.
"""

from __future__ import annotations

from netmon.core.values import PROTO_TCP, PROTO_UDP
from netmon.ingest.framedecoder import FrameDecoder

#: (protocol, source port, destination port, payload start in buf, payload length).
Span = tuple[int, int, int, int, int]
#: (protocol, source address, destination address, header offset, end of the captured
#: transport bytes, end the IP header declares).
Header = tuple[int, bytes, bytes, int, int, int]


class TransportFinder(FrameDecoder):
    """The frame decoder, noting each TCP/UDP header it meets: (proto, src, dst,
    header offset, end of the captured transport bytes, end the IP header declares)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[int, bytes, bytes, int, int, int]] = []
        self._ip_end = 0

    def _decode_ipv4(self, buf: bytes, p: int, end: int, ts: float,
                     wirelen: int) -> tuple | list | None:
        if end - p >= 4:
            tl = (buf[p + 2] << 8) | buf[p + 3]
            self._ip_end = p + tl if tl else end  # 0: segmentation offload, as decoded
        return super()._decode_ipv4(buf, p, end, ts, wirelen)

    def _decode_ipv6(self, buf: bytes, p: int, end: int, ts: float,
                     wirelen: int) -> tuple | list | None:
        if end - p >= 6:
            plen = (buf[p + 4] << 8) | buf[p + 5]
            self._ip_end = p + 40 + plen if plen else end  # 0: a jumbogram
        return super()._decode_ipv6(buf, p, end, ts, wirelen)

    def _transport(self, proto: int, buf: bytes, q: int, qend: int, ts: float, wirelen: int,
                   src: bytes, dst: bytes) -> tuple | list:
        if proto in (PROTO_TCP, PROTO_UDP):
            self.found.append((proto, src, dst, q, qend, max(self._ip_end, qend)))
        return super()._transport(proto, buf, q, qend, ts, wirelen, src, dst)


def transport_headers(linktype: int, buf: bytes, p: int, end: int, ts: float = 0.0,
                      wirelen: int = 0) -> list[Header]:
    """Every TCP/UDP header of the frame at ``buf[p:end]``, outermost first."""
    finder = TransportFinder()
    finder._decode_frame(linktype, buf, p, end, ts, wirelen or end - p)
    return finder.found


def transport_payload(linktype: int, buf: bytes, p: int, end: int) -> Span | None:
    """The innermost TCP/UDP payload of the frame at ``buf[p:end]``, or None (not
    TCP/UDP, a fragment, a header chain the decoder does not walk, or too short)."""
    headers = transport_headers(linktype, buf, p, end)
    if not headers:
        return None
    proto, _src, _dst, q, qend, ip_end = headers[-1]
    if proto == PROTO_TCP:
        if qend - q < 20:
            return None
        hl = (buf[q + 12] >> 4) << 2
    else:
        hl = 8
    stop = min(qend, ip_end)  # Ethernet padding past the IP length is not payload
    if hl < 8 or stop - q < hl:
        return None
    sport = (buf[q] << 8) | buf[q + 1]
    dport = (buf[q + 2] << 8) | buf[q + 3]
    return proto, sport, dport, q + hl, stop - q - hl
