"""Synthetic frame builders, layer by layer, for tests and benchmarks.

Pure module (no textual, no twisted): every builder returns ``bytes`` and runs in the
caller's thread. Builders nest from the inside out, e.g.
``ethernet(ipv4("10.0.0.1", "10.0.0.2", PROTO_UDP, udp(1234, 53, b"q")), ETHERTYPE_IPV4)``.
Whole capture files of generated traffic come from ``netmon.testing.synth``.

Addresses here only ever end up in files; nothing is sent. TCP/UDP checksums are left
0 (decoders must not depend on them); IPv4 header and ICMP checksums are valid.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

#: Ethertypes the builders use.
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_MPLS = 0x8847
ETHERTYPE_QINQ = 0x88A8

#: IPv6 extension header numbers (they share the IP protocol number space).
IPV6_HOP_BY_HOP = 0
IPV6_ROUTING = 43
IPV6_FRAGMENT = 44
IPV6_DEST_OPTS = 60
IPV6_NO_NEXT = 59

#: Address families as BSD null/loopback headers write them (IPv6 differs per OS).
AF_NULL_INET = 2
AF_NULL_INET6_BSD = 24
AF_NULL_INET6_FREEBSD = 28
AF_NULL_INET6_DARWIN = 30
#: Linux address families, as NFLOG carries them.
AF_LINUX_INET = 2
AF_LINUX_INET6 = 10

DEFAULT_SRC_MAC = "02:00:00:00:00:01"
DEFAULT_DST_MAC = "02:00:00:00:00:02"


def _mac(text: str) -> bytes:
    raw = bytes.fromhex(text.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return raw


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# --- network layer --------------------------------------------------------------------


def ipv4(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    *,
    ttl: int = 64,
    ident: int = 0,
    options: bytes = b"",
    mf: bool = False,
    frag_offset: int = 0,
    df: bool = False,
    tos: int = 0,
) -> bytes:
    """An IPv4 packet; ``frag_offset`` is in 8-byte units, ``options`` are zero-padded."""
    options += b"\0" * (-len(options) % 4)
    ihl = 5 + len(options) // 4
    if ihl > 15:
        raise ValueError("IPv4 options longer than 40 bytes")
    flags_frag = (0x4000 if df else 0) | (0x2000 if mf else 0) | (frag_offset & 0x1FFF)
    header = (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            tos,
            ihl * 4 + len(payload),
            ident,
            flags_frag,
            ttl,
            proto,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        + options
    )
    csum = _checksum(header)
    return header[:10] + struct.pack("!H", csum) + header[12:] + payload


def ipv6(
    src: str,
    dst: str,
    next_header: int,
    payload: bytes,
    *,
    ext: Sequence[tuple[int, bytes]] = (),
    hop_limit: int = 64,
    traffic_class: int = 0,
    flow_label: int = 0,
) -> bytes:
    """An IPv6 packet whose payload length covers extension headers and ``payload``.

    Extension headers can be given two ways. Either build the chain yourself and pass
    ``next_header`` = the first header's number and ``payload`` = headers + upper layer;
    or pass ``ext`` = ``[(header number, header bytes), ...]`` (bytes from the
    ``ipv6_*`` helpers) and ``next_header`` = the upper-layer protocol: each header's
    Next Header byte is then rewritten so the chain links up in the order given.
    """
    chain = b""
    if ext:
        numbers = [number for number, _ in ext[1:]] + [next_header]
        chain = b"".join(bytes([nxt]) + raw[1:] for (_, raw), nxt in zip(ext, numbers, strict=True))
        next_header = ext[0][0]
    body = chain + payload
    first_word = (6 << 28) | ((traffic_class & 0xFF) << 20) | (flow_label & 0xFFFFF)
    return (
        struct.pack(
            "!IHBB16s16s",
            first_word,
            len(body),
            next_header,
            hop_limit,
            socket.inet_pton(socket.AF_INET6, src),
            socket.inet_pton(socket.AF_INET6, dst),
        )
        + body
    )


def _ipv6_options_header(next_header: int, options: bytes) -> bytes:
    """Hop-by-hop / destination options header, padded to 8 bytes with Pad1/PadN."""
    pad = -(2 + len(options)) % 8
    if pad == 1:
        options += b"\x00"
    elif pad:
        options += bytes([1, pad - 2]) + b"\0" * (pad - 2)
    return bytes([next_header, (2 + len(options)) // 8 - 1]) + options


def ipv6_hop_by_hop(next_header: int, options: bytes = b"") -> bytes:
    """A Hop-by-Hop Options header carrying raw TLV ``options`` (padding added)."""
    return _ipv6_options_header(next_header, options)


def ipv6_dest_opts(next_header: int, options: bytes = b"") -> bytes:
    """A Destination Options header carrying raw TLV ``options`` (padding added)."""
    return _ipv6_options_header(next_header, options)


def ipv6_routing(
    next_header: int,
    addresses: Sequence[str] = (),
    *,
    routing_type: int = 0,
    segments_left: int | None = None,
) -> bytes:
    """A Routing header in the type 0/2 layout: 4 reserved bytes, then ``addresses``."""
    left = len(addresses) if segments_left is None else segments_left
    body = b"\0" * 4 + b"".join(socket.inet_pton(socket.AF_INET6, a) for a in addresses)
    return bytes([next_header, len(body) // 8, routing_type, left]) + body


def ipv6_fragment(next_header: int, offset_units: int, more: bool, ident: int) -> bytes:
    """A Fragment header; ``offset_units`` counts 8-byte units."""
    return struct.pack(
        "!BBHI", next_header, 0, ((offset_units & 0x1FFF) << 3) | int(more), ident & 0xFFFFFFFF
    )


# --- tunnels ------------------------------------------------------------------------

#: IP protocol numbers and UDP ports of the tunnels the builders make.
PROTO_IPIP = 4
PROTO_IPV6_IN_IP = 41
PROTO_GRE = 47
VXLAN_PORT = 4789
GENEVE_PORT = 6081
#: GRE/GENEVE protocol type of a bridged Ethernet frame.
ETHERTYPE_TEB = 0x6558


def gre(payload: bytes, protocol: int, *, key: int | None = None, seq: int | None = None,
        checksum: bool = False) -> bytes:
    """A GRE (version 0) header + ``payload`` of ethertype ``protocol``; put it in IP
    protocol 47. ``key``, ``seq`` and ``checksum`` add those optional words (RFC 2890)."""
    bits = (0x8000 if checksum else 0) | (0x2000 if key is not None else 0) | (
        0x1000 if seq is not None else 0)
    words = b""
    if checksum:
        words += struct.pack("!HH", _checksum(struct.pack("!HH", bits, protocol) + payload), 0)
    if key is not None:
        words += struct.pack("!I", key)
    if seq is not None:
        words += struct.pack("!I", seq)
    return struct.pack("!HH", bits, protocol) + words + payload


def vxlan(frame: bytes, vni: int) -> bytes:
    """A VXLAN header (I flag, ``vni``) + an Ethernet ``frame``: a UDP payload for
    port 4789."""
    return struct.pack("!II", 0x08000000, (vni & 0xFFFFFF) << 8) + frame


def geneve(payload: bytes, vni: int, protocol: int = ETHERTYPE_TEB, *,
           options: bytes = b"") -> bytes:
    """A GENEVE header (version 0, ``options`` padded to 4 bytes) + ``payload`` of
    ethertype ``protocol``: a UDP payload for port 6081."""
    options += b"\0" * (-len(options) % 4)
    return struct.pack("!BBHI", len(options) // 4, 0, protocol, (vni & 0xFFFFFF) << 8) + (
        options + payload)


# --- transport layer ------------------------------------------------------------------


def tcp(
    sport: int,
    dport: int,
    *,
    flags: int,
    seq: int = 0,
    ack: int = 0,
    payload: bytes = b"",
    options: bytes = b"",
    window: int = 65535,
) -> bytes:
    """A TCP segment (checksum 0); ``options`` are padded with End-of-Option-List."""
    options += b"\0" * (-len(options) % 4)
    offset = 5 + len(options) // 4
    if offset > 15:
        raise ValueError("TCP options longer than 40 bytes")
    return (
        struct.pack(
            "!HHIIHHHH",
            sport,
            dport,
            seq & 0xFFFFFFFF,
            ack & 0xFFFFFFFF,
            (offset << 12) | (flags & 0x1FF),
            window,
            0,
            0,
        )
        + options
        + payload
    )


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    """A UDP datagram (checksum 0, meaning "not computed" for IPv4)."""
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(type_: int, code: int, payload: bytes = b"") -> bytes:
    """An ICMP message with a valid checksum; ``payload`` starts at the rest-of-header."""
    csum = _checksum(bytes([type_, code, 0, 0]) + payload)
    return struct.pack("!BBH", type_, code, csum) + payload


def icmpv6(type_: int, code: int, payload: bytes = b"") -> bytes:
    """An ICMPv6 message, checksum 0 (the real one needs the IPv6 pseudo-header)."""
    return struct.pack("!BBH", type_, code, 0) + payload


# --- link layer -----------------------------------------------------------------------


def ethernet(
    payload: bytes,
    ethertype: int,
    *,
    src_mac: str = DEFAULT_SRC_MAC,
    dst_mac: str = DEFAULT_DST_MAC,
    vlans: Sequence[int] = (),
    vlan_tpids: Sequence[int] | None = None,
) -> bytes:
    """An Ethernet II frame (no FCS, no padding), optionally VLAN-tagged.

    ``vlans`` lists tag TCIs outermost first (a bare VLAN id is a TCI with priority 0).
    Default TPIDs: one tag is 802.1Q (0x8100); with several, the innermost is 0x8100
    and the outer ones 802.1ad (0x88a8), i.e. QinQ.
    """
    if vlan_tpids is None:
        vlan_tpids = [ETHERTYPE_QINQ] * (len(vlans) - 1) + [ETHERTYPE_VLAN] if vlans else []
    if len(vlan_tpids) != len(vlans):
        raise ValueError("vlan_tpids must have one TPID per VLAN tag")
    tags = b"".join(
        struct.pack("!HH", tpid, tci) for tpid, tci in zip(vlan_tpids, vlans, strict=True)
    )
    return _mac(dst_mac) + _mac(src_mac) + tags + struct.pack("!H", ethertype) + payload


def mpls(payload: bytes, labels: Sequence[int], *, tc: int = 0, ttl: int = 64) -> bytes:
    """An MPLS label stack (outermost first, bottom-of-stack on the last) + ``payload``.

    Put it after an Ethernet header with ethertype 0x8847.
    """
    last = len(labels) - 1
    stack = b"".join(
        struct.pack("!I", (label << 12) | (tc << 9) | ((i == last) << 8) | ttl)
        for i, label in enumerate(labels)
    )
    return stack + payload


def sll(
    payload: bytes,
    protocol: int,
    *,
    pkttype: int = 0,
    arphrd: int = 1,
    addr: bytes = b"\x02\0\0\0\0\x01",
) -> bytes:
    """A Linux cooked-capture v1 header (16 bytes) + ``payload``; pkttype 0 = to us."""
    return struct.pack("!HHH8sH", pkttype, arphrd, len(addr), addr, protocol) + payload


def sll2(
    payload: bytes,
    protocol: int,
    *,
    ifindex: int = 1,
    pkttype: int = 0,
    arphrd: int = 1,
    addr: bytes = b"\x02\0\0\0\0\x01",
) -> bytes:
    """A Linux cooked-capture v2 header (20 bytes, protocol first) + ``payload``."""
    return (
        struct.pack("!HHIHBB8s", protocol, 0, ifindex, arphrd, pkttype, len(addr), addr) + payload
    )


def null_loopback(payload: bytes, family: int, *, big_endian: bool = False) -> bytes:
    """A BSD null/loopback header: the family in the capturing host's byte order."""
    return struct.pack(">I" if big_endian else "<I", family) + payload


def loop(payload: bytes, family: int) -> bytes:
    """A LINKTYPE_LOOP header: like null, but the family always in network order."""
    return struct.pack("!I", family) + payload


def _nflog_tlv(tlv_type: int, value: bytes) -> bytes:
    # Length counts the 4-byte TLV header and the value, not the alignment padding.
    return struct.pack("<HH", 4 + len(value), tlv_type) + value + b"\0" * (-len(value) % 4)


def nflog(payload: bytes, family: int = AF_LINUX_INET, resource_id: int = 0) -> bytes:
    """A LINKTYPE_NFLOG record: header, NFULA_PACKET_HDR TLV, NFULA_PAYLOAD TLV."""
    hw_protocol = ETHERTYPE_IPV6 if family == AF_LINUX_INET6 else ETHERTYPE_IPV4
    # NFULA_PACKET_HDR value: hw_protocol (network order), netfilter hook, padding.
    packet_hdr = _nflog_tlv(1, struct.pack("!HBx", hw_protocol, 0))
    return struct.pack("!BBH", family, 0, resource_id) + packet_hdr + _nflog_tlv(9, payload)
