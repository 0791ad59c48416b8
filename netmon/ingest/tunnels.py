"""Tunnel decapsulation: GRE, IP-in-IP (4in4, 6in4, 4in6, 6in6), VXLAN and GENEVE.

Pure code, no I/O and no threads of its own: :class:`TunnelDecoder` is a mixin of
:class:`netmon.ingest.framedecoder.FrameDecoder`, so it runs on the thread that feeds
the decoder (the reactor thread in netmon).

tshark counts a tunnelled packet in every conversation it belongs to: the outer one
(GRE, IP-in-IP, the VXLAN/GENEVE UDP flow) and the inner TCP/UDP/ICMP one. So does
netmon: a tunnel frame becomes the outer record, marked with the :data:`TUNNEL` bit in
its ``flags`` field (free there: the outer protocol is never TCP or ICMP), followed by
the inner packet's record(s). The flow table keeps the outer flow, flags it as a
tunnel and leaves marked rows out of its packet and byte totals, so each frame is
counted once (README "Flow semantics"). A frame whose inner packet cannot be decoded
stays an ordinary, unmarked outer record.
"""

from __future__ import annotations

from collections import Counter

from netmon.ingest.batch import TUNNEL
from netmon.ingest.linktypes import LINKTYPE_ETHERNET

#: IP protocols that carry a tunnel: IPv4 in IP, IPv6 in IP, GRE.
TUNNEL_PROTOS = frozenset((4, 41, 47))
#: UDP ports of tunnels with an Ethernet (or IP) payload: VXLAN, GENEVE.
VXLAN_PORT = 4789
GENEVE_PORT = 6081
TUNNEL_PORTS = frozenset((VXLAN_PORT, GENEVE_PORT))
#: Tunnels inside tunnels decoded at most this deep (hostile nesting must stay cheap).
MAX_TUNNEL_DEPTH = 4

_ETH_BRIDGING = 0x6558  # GRE / GENEVE protocol type: an Ethernet frame follows
_GRE_PPP = 0x880B  # enhanced GRE (PPTP, version 1): PPP follows


class TunnelDecoder:
    """Decode the packet inside a tunnel (mixed into FrameDecoder, whose
    ``_decode_frame``, ``_decode_ethertype``, ``_decode_ipv4``, ``_decode_ipv6`` and
    counters it uses)."""

    _depth = 0

    def _decap_ip(self, outer: tuple, proto: int, buf: bytes, q: int, qend: int) -> tuple | list:
        """``outer`` (protocol ``proto`` in TUNNEL_PROTOS) with its payload at ``q``."""
        if proto == 47:
            return self._decap_gre(outer, buf, q, qend)
        if proto == 4:
            return self._inner(outer, self._decode_ipv4, buf, q, qend)
        return self._inner(outer, self._decode_ipv6, buf, q, qend)

    def _decap_udp(self, outer: tuple, port: int, buf: bytes, q: int, qend: int) -> tuple | list:
        """``outer``, a UDP datagram to or from tunnel ``port``; its header is at ``q``."""
        q += 8
        if qend - q < 8:
            return outer
        if port == VXLAN_PORT:  # 8-byte header (flags, VNI), then an Ethernet frame
            return self._inner(outer, self._decode_eth, buf, q + 8, qend)
        # GENEVE: version (2 bits) and option length in 4-byte words, protocol type.
        if buf[q] >> 6:
            return outer
        start = q + 8 + ((buf[q] & 0x3F) << 2)
        ptype = (buf[q + 2] << 8) | buf[q + 3]
        return self._inner_type(outer, ptype, buf, start, qend)

    def _decap_gre(self, outer: tuple, buf: bytes, q: int, qend: int) -> tuple | list:
        if qend - q < 4:
            return outer
        bits = buf[q]
        version = buf[q + 1] & 7
        ptype = (buf[q + 2] << 8) | buf[q + 3]
        if version == 0:
            if bits & 0x40:  # RFC 1701 source routing: obsolete, not decoded
                return outer
            # Optional checksum(+offset), key and sequence number words (RFC 2890).
            start = q + 4 + 4 * ((bits >> 7) + ((bits >> 5) & 1) + ((bits >> 4) & 1))
            return self._inner_type(outer, ptype, buf, start, qend)
        if version == 1 and ptype == _GRE_PPP:  # PPTP: key always, sequence and ack maybe
            start = q + 8 + 4 * (((bits >> 4) & 1) + (buf[q + 1] >> 7))
            if qend - start >= 2 and buf[start] == 0xFF and buf[start + 1] == 0x03:
                start += 2  # PPP address and control fields
            if qend - start < 1:
                return outer
            ppp = buf[start]  # protocol field, compressed to one byte or not
            if ppp == 0:
                if qend - start < 2:
                    return outer
                ppp, start = buf[start + 1], start + 2
            else:
                start += 1
            if ppp == 0x21:
                return self._inner(outer, self._decode_ipv4, buf, start, qend)
            if ppp == 0x57:
                return self._inner(outer, self._decode_ipv6, buf, start, qend)
        return outer

    def _inner_type(self, outer: tuple, ptype: int, buf: bytes, start: int,
                    qend: int) -> tuple | list:
        """The payload at ``start`` is of ethertype ``ptype`` (0x6558: Ethernet)."""
        if start > qend:
            return outer
        if ptype == _ETH_BRIDGING:
            return self._inner(outer, self._decode_eth, buf, start, qend)
        return self._inner(outer, lambda b, s, e, ts, wl: self._decode_ethertype(
            ptype, b, s, e, ts, wl), buf, start, qend)

    def _decode_eth(self, buf: bytes, p: int, end: int, ts: float, wirelen: int
                    ) -> tuple | list | None:
        return self._decode_frame(LINKTYPE_ETHERNET, buf, p, end, ts, wirelen)

    def _inner(self, outer: tuple, decode, buf: bytes, start: int, qend: int) -> tuple | list:
        """Decode the inner packet with ``decode``; return ``outer`` marked as a tunnel
        followed by the inner record(s), or ``outer`` alone if nothing came of it."""
        if self._depth >= MAX_TUNNEL_DEPTH:
            return outer
        # The frame is counted once, as the outer packet: what the inner decode counts
        # (an IP frame, a non-IP payload, a skip reason) is not a frame of its own.
        saved = (self.ip_frames, self.nonip, self.partial, self.skipped)
        self.skipped = Counter()
        self._depth += 1
        try:
            inner = decode(buf, start, qend, outer[0], outer[1])
        finally:
            self._depth -= 1
            self.ip_frames, self.nonip, self.partial, self.skipped = saved
        if inner is None:
            return outer
        marked = (*outer[:7], TUNNEL)
        if inner.__class__ is tuple:
            return [marked, inner]
        return [marked, *inner]
