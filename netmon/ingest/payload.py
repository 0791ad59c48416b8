"""Where a frame's TCP or UDP payload is, for the frames the fast path did not decode.

Pure module (stdlib only); runs on whichever thread calls it (the reactor thread, for
the few rows a name reader wants: :mod:`netmon.flows.naming`). The vectorised fast path
(:mod:`netmon.ingest.batch`) records each row's payload offset; frames it leaves to the
per-frame decoder (VLAN tags, MPLS, PPPoE, IPv6 extension headers, NFLOG, pcapng files)
come here, one frame at a time, only when a flow still wants its first bytes.

The walk mirrors :mod:`netmon.ingest.framedecoder` but keeps no state and counts
nothing: fragments and tunnels give None (a name is read from a whole, plain
segment; the caller checks the ports it returns against the row's, so an inner packet
of a tunnel is never read as its outer one).
"""

from __future__ import annotations

from netmon.ingest.linktypes import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NFLOG,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    LINKTYPE_RAW_BSD12,
    LINKTYPE_RAW_BSD14,
)

_RAW = (LINKTYPE_RAW, LINKTYPE_RAW_BSD12, LINKTYPE_RAW_BSD14, LINKTYPE_IPV4, LINKTYPE_IPV6)
_VLAN = (0x8100, 0x88A8, 0x9100, 0x9200)
_IPV6_EXT = (0, 43, 60, 135, 139, 140)
#: Link-layer wrappers peeled at most (each costs 4+ bytes, so a frame ends it anyway).
_MAX_LAYERS = 16

#: (protocol, source port, destination port, payload start in buf, payload length).
Span = tuple[int, int, int, int, int]


def transport_payload(linktype: int, buf: bytes | memoryview, p: int, end: int) -> Span | None:
    """The TCP/UDP payload of the frame at ``buf[p:end]``, or None (not TCP/UDP, a
    fragment, a link type or header chain this does not walk, or too short)."""
    if linktype == LINKTYPE_ETHERNET:
        if end - p < 14:
            return None
        return _ethertype((buf[p + 12] << 8) | buf[p + 13], buf, p + 14, end)
    if linktype == LINKTYPE_LINUX_SLL:
        if end - p < 16:
            return None
        return _ethertype((buf[p + 14] << 8) | buf[p + 15], buf, p + 16, end)
    if linktype == LINKTYPE_LINUX_SLL2:
        if end - p < 20:
            return None
        return _ethertype((buf[p] << 8) | buf[p + 1], buf, p + 20, end)
    if linktype in _RAW:
        return _ip(buf, p, end)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        return _ip(buf, p + 4, end) if end - p >= 4 else None
    if linktype == LINKTYPE_NFLOG:
        q = p + 4
        while q + 4 <= end:
            tlen = buf[q] | (buf[q + 1] << 8)
            if tlen < 4:
                return None
            if (buf[q + 2] | (buf[q + 3] << 8)) == 9:  # NFULA_PAYLOAD: the IP packet
                return _ip(buf, q + 4, min(q + tlen, end))
            q += (tlen + 3) & ~3
    return None


def _ethertype(etype: int, buf: bytes | memoryview, p: int, end: int) -> Span | None:
    for _ in range(_MAX_LAYERS):
        if etype in (0x0800, 0x86DD):
            return _ip(buf, p, end)
        if etype in _VLAN:
            if end - p < 4:
                return None
            etype, p = (buf[p + 2] << 8) | buf[p + 3], p + 4
        elif etype in (0x8847, 0x8848):  # MPLS: labels until bottom of stack, then IP
            while end - p >= 4 and not buf[p + 2] & 1:
                p += 4
            return _ip(buf, p + 4, end) if end - p >= 4 else None
        elif etype == 0x8864:  # PPPoE session: PPP protocol 0x0021 / 0x0057
            if end - p < 8:
                return None
            proto = (buf[p + 6] << 8) | buf[p + 7]
            return _ip(buf, p + 8, end) if proto in (0x0021, 0x0057) else None
        else:
            return None
    return None


def _ip(buf: bytes | memoryview, p: int, end: int) -> Span | None:
    if end - p < 20:
        return None
    ver = buf[p] >> 4
    if ver == 4:
        hl = (buf[p] & 15) << 2
        tl = (buf[p + 2] << 8) | buf[p + 3]
        if tl == 0:  # segmentation offload: the captured bytes are the packet
            tl = end - p
        if hl < 20 or tl < hl or ((buf[p + 6] << 8) | buf[p + 7]) & 0x3FFF:
            return None
        return _transport(buf[p + 9], buf, p + hl, min(p + tl, end))
    if ver != 6 or end - p < 40:
        return None
    plen = (buf[p + 4] << 8) | buf[p + 5]
    nh = buf[p + 6]
    q = p + 40
    qend = min(q + plen, end) if plen else end
    for _ in range(_MAX_LAYERS):
        if nh in _IPV6_EXT:
            if qend - q < 8:
                return None
            nh, q = buf[q], q + ((buf[q + 1] + 1) << 3)
        elif nh == 51:  # AH
            if qend - q < 8:
                return None
            nh, q = buf[q], q + ((buf[q + 1] + 2) << 2)
        else:
            return _transport(nh, buf, q, qend)
    return None


def _transport(proto: int, buf: bytes | memoryview, q: int, qend: int) -> Span | None:
    if proto == 6:
        if qend - q < 20:
            return None
        hl = (buf[q + 12] >> 4) << 2
    elif proto == 17:
        hl = 8
    else:
        return None
    if hl < 8 or qend - q < hl:
        return None
    sport = (buf[q] << 8) | buf[q + 1]
    dport = (buf[q + 2] << 8) | buf[q + 3]
    return proto, sport, dport, q + hl, qend - q - hl
