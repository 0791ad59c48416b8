"""Per-frame header decoding: link layer -> IPv4/IPv6 -> TCP/UDP/ICMP, one frame at a time.

Pure code, no I/O and no threads of its own: :class:`FrameDecoder` is a mixin of
:class:`netmon.ingest.pcapstream.PcapStreamDecoder`, so whoever feeds that decoder owns
it (the reactor thread in netmon). It decodes link types (Ethernet with VLAN, MPLS,
PPPoE and LLC/SNAP; Linux cooked v1/v2; raw IP; BSD null/loop; NFLOG), IPv4 and IPv6
(extension headers, fragments: the first fragment's ports are remembered for the later
ones) and the transport header, into plain tuples laid out like
:class:`netmon.core.values.PacketRecord`. Only link, IP and transport headers are
decoded (that is all the flow table needs). Nothing here raises on bad input:
undecodable frames are counted by reason in :attr:`FrameDecoder.skipped`.

A mixin rather than a separate object because this is the per-packet hot path: the
container loops bind ``self._decode_frame`` once per chunk and every call below is one
method call on the same instance, exactly as before the split.
"""

from __future__ import annotations

import struct
from collections import Counter

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

_ETH_VLAN = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))
_ETH_MPLS = frozenset((0x8847, 0x8848))
_IPV6_EXT = frozenset((0, 43, 60, 135, 139, 140))  # generic TLV-style extension headers
_PORT_PROTOS = frozenset((6, 17))

_U16BE = struct.Struct(">H")
_PORTS = struct.Struct(">HH")

#: How many IP datagrams' fragment keys are remembered to give later fragments ports.
FRAG_MEMORY = 4096


class FrameDecoder:
    """Decode one captured frame's headers into a PacketRecord tuple (or None).

    Counters read by the owner: ``ip_frames`` (IP frames emitted), ``nonip``
    (well-formed frames that are not IP, e.g. ARP), ``skipped`` (Counter of
    undecodable frames by reason) and ``partial`` (IP frames emitted without transport
    ports because the capture cut them short).
    """

    def __init__(self) -> None:
        self.ip_frames = 0
        self.nonip = 0
        self.partial = 0
        self.skipped: Counter[str] = Counter()
        # first-fragment ports: (proto, src, dst, ident) -> (sport, dport)
        self._frag_ports: dict[tuple, tuple[int, int]] = {}

    def _decode_frame(self, linktype: int, buf: bytes, p: int, end: int, ts: float,
                      wirelen: int) -> tuple | None:
        """Decode one frame's headers; return a PacketRecord tuple or None."""
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
        for _ in range(16):  # bound on stacked tags: garbage must not loop for long
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

    def _remember_frag(self, key: tuple, ports: tuple[int, int]) -> None:
        d = self._frag_ports
        if len(d) >= FRAG_MEMORY:
            del d[next(iter(d))]
        d[key] = ports

    def _decode_ipv4(self, buf: bytes, p: int, end: int, ts: float,
                     wirelen: int) -> tuple | None:
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
            ident = buf[p + 4:p + 6]
            if frag & 0x1FFF:  # not the first fragment: no transport header here
                ports = self._frag_ports.get((proto, src, dst, ident))
                if ports is None:
                    return (ts, wirelen, proto, src, 0, dst, 0, 0)
                return (ts, wirelen, proto, src, ports[0], dst, ports[1], 0)
            rec = self._transport(proto, buf, l4, l4end, ts, wirelen, src, dst)
            if rec[4] or rec[6]:
                self._remember_frag((proto, src, dst, ident), (rec[4], rec[6]))
            return rec
        return self._transport(proto, buf, l4, l4end, ts, wirelen, src, dst)

    def _decode_ipv6(self, buf: bytes, p: int, end: int, ts: float,
                     wirelen: int) -> tuple | None:
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
        for _ in range(16):  # bound the extension-header chain
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
                    ports = self._frag_ports.get(frag_key)
                    if ports is None:
                        return (ts, wirelen, nh, src, 0, dst, 0, 0)
                    return (ts, wirelen, nh, src, ports[0], dst, ports[1], 0)
                if not off_m & 1:
                    frag_key = None  # atomic fragment: a whole datagram
            elif nh == 51:  # AH: length in 4-octet units
                if l4end - q < 8:
                    self.partial += 1
                    return (ts, wirelen, nh, src, 0, dst, 0, 0)
                nh, q = buf[q], q + ((buf[q + 1] + 2) << 2)
            else:
                break
        rec = self._transport(nh, buf, q, l4end, ts, wirelen, src, dst)
        if frag_key is not None and (rec[4] or rec[6]):
            self._remember_frag(frag_key, (rec[4], rec[6]))
        return rec

    def _transport(self, proto: int, buf: bytes, q: int, qend: int, ts: float, wirelen: int,
                   src: bytes, dst: bytes) -> tuple:
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
            return (ts, wirelen, proto, src, sport, dst, dport, 0)
        if proto == 1 or proto == 58:
            return (ts, wirelen, proto, src, 0, dst, 0, buf[q] if qend > q else 0)
        return (ts, wirelen, proto, src, 0, dst, 0, 0)
