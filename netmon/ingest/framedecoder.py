"""Per-frame header decoding: link layer -> IPv4/IPv6 -> TCP/UDP/ICMP, one frame at a time.

Pure code, no I/O and no threads of its own: :class:`FrameDecoder` is a mixin of
:class:`netmon.ingest.pcapstream.PcapStreamDecoder`, so whoever feeds that decoder owns
it (the reactor thread in netmon). It decodes link types (Ethernet with any number of
VLAN tags, MPLS, PPPoE and LLC/SNAP; Linux cooked v1/v2; raw IP; BSD null/loop; NFLOG),
IPv4 and IPv6 (extension headers; fragments, which get their datagram's ports from its
first fragment in any arrival order: :mod:`netmon.ingest.fragments`), tunnels
(:mod:`netmon.ingest.tunnels`) and the transport header, into plain tuples laid out
like :class:`netmon.core.values.PacketRecord`: one per frame, or a list of them for a
tunnel frame (outer, then inner). Only link, IP and transport headers are decoded
(that is all the flow table needs). Nothing here raises on bad input: undecodable
frames are counted by reason in :attr:`FrameDecoder.skipped`.

A mixin rather than a separate object because this is the per-packet hot path: the
container loops bind ``self._decode_frame`` once per chunk and every call below is one
method call on the same instance, exactly as before the split.
"""

from __future__ import annotations

import struct
from collections import Counter

from netmon.ingest.fragments import FragmentMemory
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
from netmon.ingest.tunnels import TUNNEL_PORTS, TUNNEL_PROTOS, TunnelDecoder

_ETH_VLAN = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))
_ETH_MPLS = frozenset((0x8847, 0x8848))
_IPV6_EXT = frozenset((0, 43, 60, 135, 139, 140))  # generic TLV-style extension headers
_PORT_PROTOS = frozenset((6, 17))

_U16BE = struct.Struct(">H")
_PORTS = struct.Struct(">HH")

#: Longest IPv6 extension-header chain decoded; a longer one is skipped as
#: ``ipv6-ext-chain-too-long`` (tshark gives up near 256 protocol layers). The cap
#: keeps a hostile chain from costing more than a few tens of microseconds.
MAX_IPV6_EXT = 64


class FrameDecoder(TunnelDecoder):
    """Decode one captured frame's headers into a PacketRecord tuple (or None).

    Counters read by the owner: ``ip_frames`` (IP frames emitted), ``nonip``
    (well-formed frames that are not IP, e.g. ARP), ``skipped`` (Counter of
    undecodable frames by reason) and ``partial`` (IP frames emitted without transport
    ports because the capture cut them short). Fragments held for their first
    fragment and released later, with a copy of their IP packet, are the owner's to
    take from ``frags`` (a :class:`~netmon.ingest.fragments.FragmentMemory`).
    """

    def __init__(self) -> None:
        self.ip_frames = 0
        self.nonip = 0
        self.partial = 0
        self.skipped: Counter[str] = Counter()
        self.frags = FragmentMemory()
        #: How many records at the end of the last list returned are released
        #: fragments of earlier frames (the container reads and resets it).
        self.late = 0

    def _decode_frame(self, linktype: int, buf: bytes, p: int, end: int, ts: float,
                      wirelen: int) -> tuple | list | None:
        """Decode one frame's headers: a PacketRecord tuple, a list of them (a tunnel:
        outer first), or None."""
        if linktype == LINKTYPE_ETHERNET:
            if end - p < 14:
                self.skipped["short-link-header"] += 1
                return None
            etype = (buf[p + 12] << 8) | buf[p + 13]
            p += 14
            if etype == 0x0800:  # the common case, without the generic dispatch
                return self._decode_ipv4(buf, p, end, ts, wirelen)
            return self._decode_ethertype(etype, buf, p, end, ts, wirelen)
        if linktype == LINKTYPE_LINUX_SLL:
            if end - p < 16:
                self.skipped["short-link-header"] += 1
                return None
            etype = (buf[p + 14] << 8) | buf[p + 15]
            return self._decode_ethertype(etype, buf, p + 16, end, ts, wirelen)
        if linktype == LINKTYPE_LINUX_SLL2:
            if end - p < 20:
                self.skipped["short-link-header"] += 1
                return None
            etype = (buf[p] << 8) | buf[p + 1]
            return self._decode_ethertype(etype, buf, p + 20, end, ts, wirelen)
        if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_BSD12, LINKTYPE_RAW_BSD14,
                        LINKTYPE_IPV4, LINKTYPE_IPV6):
            return self._decode_ip_guess(buf, p, end, ts, wirelen)
        if linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:
            if end - p < 4:
                self.skipped["short-link-header"] += 1
                return None
            if linktype == LINKTYPE_LOOP:
                fam = int.from_bytes(buf[p:p + 4], "big")
            elif buf[p] == 0 and buf[p + 1] == 0:
                fam = int.from_bytes(buf[p:p + 4], "big")  # written on a big-endian host
            else:
                fam = int.from_bytes(buf[p:p + 4], "little")
            if fam == 2:
                return self._decode_ipv4(buf, p + 4, end, ts, wirelen)
            if fam in (10, 24, 28, 30):
                return self._decode_ipv6(buf, p + 4, end, ts, wirelen)
            self.nonip += 1
            return None
        if linktype == LINKTYPE_NFLOG:
            return self._decode_nflog(buf, p, end, ts, wirelen)
        self.skipped[f"unsupported-linktype-{linktype}"] += 1
        return None

    def _decode_ethertype(self, etype: int, buf: bytes, p: int, end: int, ts: float,
                          wirelen: int) -> tuple | None:
        # Peel VLAN tags, PPPoE, LLC/SNAP and MPLS labels until IP or something else.
        # Any number of them: each turn consumes at least 4 bytes, so it ends.
        while True:
            if etype == 0x0800:
                return self._decode_ipv4(buf, p, end, ts, wirelen)
            if etype == 0x86DD:
                return self._decode_ipv6(buf, p, end, ts, wirelen)
            if etype in _ETH_VLAN:
                if end - p < 4:
                    break
                etype = (buf[p + 2] << 8) | buf[p + 3]
                p += 4
            elif etype in _ETH_MPLS:
                while True:
                    if end - p < 4:
                        self.skipped["short-mpls"] += 1
                        return None
                    bottom = buf[p + 2] & 1
                    p += 4
                    if bottom:
                        break
                if end - p < 1:
                    self.skipped["short-mpls"] += 1
                    return None
                nib = buf[p] >> 4
                if nib == 4:
                    return self._decode_ipv4(buf, p, end, ts, wirelen)
                if nib == 6:
                    return self._decode_ipv6(buf, p, end, ts, wirelen)
                if nib == 0 and end - p >= 18:  # pseudowire control word + Ethernet
                    p += 4
                    etype = (buf[p + 12] << 8) | buf[p + 13]
                    p += 14
                    continue
                self.nonip += 1
                return None
            elif etype == 0x8864:  # PPPoE session: 6-byte header, then a PPP protocol
                if end - p < 8:
                    break
                ppp = (buf[p + 6] << 8) | buf[p + 7]
                p += 8
                if ppp == 0x0021:
                    etype = 0x0800
                elif ppp == 0x0057:
                    etype = 0x86DD
                else:
                    self.nonip += 1
                    return None
            elif etype <= 1500:  # 802.3 length field: LLC, maybe SNAP with a type
                if end - p >= 8 and buf[p] == 0xAA and buf[p + 1] == 0xAA and buf[p + 2] == 3:
                    etype = (buf[p + 6] << 8) | buf[p + 7]
                    p += 8
                else:
                    self.nonip += 1
                    return None
            else:
                self.nonip += 1
                return None
        self.skipped["short-link-header"] += 1
        return None

    def _decode_ip_guess(self, buf: bytes, p: int, end: int, ts: float,
                         wirelen: int) -> tuple | None:
        if end - p < 1:
            self.skipped["short-ip-header"] += 1
            return None
        ver = buf[p] >> 4
        if ver == 4:
            return self._decode_ipv4(buf, p, end, ts, wirelen)
        if ver == 6:
            return self._decode_ipv6(buf, p, end, ts, wirelen)
        self.skipped["bad-ip-version"] += 1
        return None

    def _decode_nflog(self, buf: bytes, p: int, end: int, ts: float,
                      wirelen: int) -> tuple | None:
        if end - p < 4:
            self.skipped["short-link-header"] += 1
            return None
        family = buf[p]
        q = p + 4
        while q + 4 <= end:
            tlen = buf[q] | (buf[q + 1] << 8)
            ttype = buf[q + 2] | (buf[q + 3] << 8)
            if tlen < 4:
                break
            if ttype == 9:  # NFULA_PAYLOAD: the IP packet
                pend = min(q + tlen, end)
                if family == 10:
                    return self._decode_ipv6(buf, q + 4, pend, ts, wirelen)
                if family == 2:
                    return self._decode_ipv4(buf, q + 4, pend, ts, wirelen)
                return self._decode_ip_guess(buf, q + 4, pend, ts, wirelen)
            q += (tlen + 3) & ~3
        self.nonip += 1
        return None

    def _decode_ipv4(self, buf: bytes, p: int, end: int, ts: float,
                     wirelen: int) -> tuple | list | None:
        if end - p < 20:
            self.skipped["short-ip-header"] += 1
            return None
        vihl = buf[p]
        hl = (vihl & 15) << 2
        if vihl >> 4 != 4 or hl < 20:
            self.skipped["bad-ip-header"] += 1
            return None
        (tl,) = _U16BE.unpack_from(buf, p + 2)
        if tl == 0:
            # Captured on the sender with segmentation offload: the length is filled
            # in by the NIC later, so trust the captured bytes (as tshark does).
            tl = end - p
        if tl < hl or end - p < hl:
            self.skipped["bad-ip-header"] += 1
            return None
        proto = buf[p + 9]
        src = buf[p + 12:p + 16]
        dst = buf[p + 16:p + 20]
        (frag,) = _U16BE.unpack_from(buf, p + 6)
        l4 = p + hl
        l4end = p + tl if p + tl < end else end
        self.ip_frames += 1
        if frag & 0x3FFF:  # fragment: MF set or offset non-zero
            key = (proto, src, dst, buf[p + 4:p + 6])
            if frag & 0x1FFF:  # not the first fragment: no transport header here
                return self._later_fragment(key, ts, wirelen)
            return self._first_fragment(key, self._transport(proto, buf, l4, l4end, ts,
                                                             wirelen, src, dst))
        return self._transport(proto, buf, l4, l4end, ts, wirelen, src, dst)

    def _later_fragment(self, key: tuple, ts: float, wirelen: int) -> tuple | list | None:
        """A non-first fragment of datagram ``key``."""
        proto, src, dst = key[0], key[1], key[2]
        ports = self.frags.ports(key)
        if ports is not None:
            return (ts, wirelen, proto, src, ports[0], dst, ports[1], 0)
        rec = (ts, wirelen, proto, src, 0, dst, 0, 0)
        if proto not in _PORT_PROTOS or self._depth:
            # No ports to learn; or inside a tunnel, whose outer record must not be
            # counted without its inner one.
            return rec
        self.frags.hold(key, rec)
        return self._released(None)

    def _first_fragment(self, key: tuple, rec: tuple | list) -> tuple | list:
        """The first fragment of datagram ``key`` decoded as ``rec``."""
        first = rec if rec.__class__ is tuple else rec[0]
        if first[4] or first[6]:
            self.frags.first(key, (first[4], first[6]), first[0])
            return self._released(rec)
        return rec

    def _released(self, rec: tuple | list | None) -> tuple | list | None:
        """``rec`` followed by the fragments the fragment memory just released; their
        number is left in ``late`` (their bytes are not this frame's)."""
        late = self.frags.take()
        if not late:
            return rec
        self.late = len(late)
        if rec is None:
            return late
        if rec.__class__ is tuple:
            return [rec, *late]
        return [*rec, *late]

    def _decode_ipv6(self, buf: bytes, p: int, end: int, ts: float,
                     wirelen: int) -> tuple | list | None:
        if end - p < 40:
            self.skipped["short-ip-header"] += 1
            return None
        if buf[p] >> 4 != 6:
            self.skipped["bad-ip-header"] += 1
            return None
        (plen,) = _U16BE.unpack_from(buf, p + 4)
        nh = buf[p + 6]
        src = buf[p + 8:p + 24]
        dst = buf[p + 24:p + 40]
        q = p + 40
        l4end = q + plen if plen and q + plen < end else end
        self.ip_frames += 1
        frag_key = None
        for _ in range(MAX_IPV6_EXT + 1):  # a turn more: the transport ends the chain
            if nh in _IPV6_EXT:
                if l4end - q < 8:
                    self.partial += 1
                    return (ts, wirelen, nh, src, 0, dst, 0, 0)
                nh, q = buf[q], q + ((buf[q + 1] + 1) << 3)
            elif nh == 44:  # Fragment header
                if l4end - q < 8:
                    self.partial += 1
                    return (ts, wirelen, nh, src, 0, dst, 0, 0)
                (off_m,) = _U16BE.unpack_from(buf, q + 2)
                nh = buf[q]
                frag_key = (nh, src, dst, buf[q + 4:q + 8])
                q += 8
                if off_m & 0xFFF8:  # non-first fragment
                    return self._later_fragment(frag_key, ts, wirelen)
                if not off_m & 1:
                    frag_key = None  # atomic fragment: a whole datagram
            elif nh == 51:  # AH: length in 4-octet units
                if l4end - q < 8:
                    self.partial += 1
                    return (ts, wirelen, nh, src, 0, dst, 0, 0)
                nh, q = buf[q], q + ((buf[q + 1] + 2) << 2)
            else:
                break
        else:
            # Fix (tests/test_pcapstream.py): past the old bound of 16 headers the chain
            # was taken for the transport, giving a protocol-0, port-0 flow that hid the
            # real one. A chain this long is not a packet to account.
            self.ip_frames -= 1
            self.skipped["ipv6-ext-chain-too-long"] += 1
            return None
        rec = self._transport(nh, buf, q, l4end, ts, wirelen, src, dst)
        if frag_key is not None:
            return self._first_fragment(frag_key, rec)
        return rec

    def _transport(self, proto: int, buf: bytes, q: int, qend: int, ts: float, wirelen: int,
                   src: bytes, dst: bytes) -> tuple | list:
        if proto in _PORT_PROTOS:
            if qend - q < 4:
                self.partial += 1
                return (ts, wirelen, proto, src, 0, dst, 0, 0)
            sport, dport = _PORTS.unpack_from(buf, q)
            if proto == 6:
                if qend - q < 14:
                    self.partial += 1
                    return (ts, wirelen, 6, src, sport, dst, dport, 0)
                return (ts, wirelen, 6, src, sport, dst, dport, buf[q + 13])
            rec = (ts, wirelen, proto, src, sport, dst, dport, 0)
            if dport in TUNNEL_PORTS or sport in TUNNEL_PORTS:
                # The lower port decides when both are tunnel ports, as in tshark.
                port = dport if dport in TUNNEL_PORTS and (
                    dport < sport or sport not in TUNNEL_PORTS) else sport
                return self._decap_udp(rec, port, buf, q, qend)
            return rec
        if proto == 1 or proto == 58:
            return (ts, wirelen, proto, src, 0, dst, 0, buf[q] if qend > q else 0)
        rec = (ts, wirelen, proto, src, 0, dst, 0, 0)
        if proto in TUNNEL_PROTOS:
            return self._decap_ip(rec, proto, buf, q, qend)
        return rec
