"""Synthetic frame builders and a fast synthetic-capture generator, for tests and benchmarks.

Pure module (no textual, no twisted): every builder returns ``bytes`` and runs in the
caller's thread. Builders nest from the inside out, e.g.
``ethernet(ipv4("10.0.0.1", "10.0.0.2", PROTO_UDP, udp(1234, 53, b"q")), ETHERTYPE_IPV4)``.

Addresses here only ever end up in files; nothing is sent. TCP/UDP checksums are left
0 (decoders must not depend on them); IPv4 header and ICMP checksums are valid.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Sequence
from os import PathLike
from typing import NamedTuple

from netmon.core.values import PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_PSH, TCP_SYN
from netmon.ingest.pcapwrite import PcapWriter

#: LINKTYPE_* numbers (the pcap/pcapng link-layer header types).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239
LINKTYPE_LINUX_SLL2 = 276

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


# --- synthetic captures ---------------------------------------------------------------

_KIND_TCP, _KIND_UDP, _KIND_ICMP = 0, 1, 2
_TCP_PORTS = (80, 443, 443, 443, 22, 25, 993, 8080, 8443)
_UDP_PORTS = (53, 53, 443, 443, 514, 1194, 4500, 5353)
#: Linux SYN / SYN-ACK options: MSS, SACK-permitted, timestamps, NOP, window scale.
_SYN_OPTIONS = bytes.fromhex("020405b40402080a000000000000000001030307")
#: Pure ACK options: NOP, NOP, timestamps.
_ACK_OPTIONS = bytes.fromhex("0101080a0000000000000000")
_SIZE_TABLE_BITS = 12


def _size_table(rng: random.Random) -> list[int]:
    """4096 frame sizes in 60..1514 drawn from a bimodal mix, indexed by random bits."""
    sizes = []
    for _ in range(1 << _SIZE_TABLE_BITS):
        r = rng.random()
        if r < 0.45:
            sizes.append(rng.randint(60, 200))
        elif r < 0.85:
            sizes.append(rng.randint(1400, 1514))
        else:
            sizes.append(rng.randint(60, 1514))
    return sizes


def _flow_packet_counts(rng: random.Random, packets: int, flows: int) -> list[int]:
    """Per-flow packet counts summing to ``packets``, each >= 1, mildly heavy-tailed."""
    counts = [1] * flows
    extra = packets - flows
    if extra and flows:
        weights = [min(rng.paretovariate(1.3), 1000.0) for _ in range(flows)]
        for f in rng.choices(range(flows), weights=weights, k=extra):
            counts[f] += 1
    return counts


class _Templates(NamedTuple):
    """Precomputed header pieces, indexed 2*flow + direction (0 = client -> server).

    Only lengths, IP id, checksums, TCP seq/ack/flags and the payload change per
    packet, so the hot loop glues these together instead of building headers.
    """

    kinds: list[int]  # indexed by flow, not by flow and direction
    eth_ip0: list[bytes]  # Ethernet header + IP version/IHL and TOS
    ip_mid: list[int]  # flags/fragment, TTL, protocol as one 32-bit word
    addrs: list[bytes]  # IP source + destination
    base_sum: list[int]  # checksum partial sum of the fixed IP header words
    ports: list[bytes]  # TCP/UDP source + destination port; ICMP echo identifier
    seqs: list[int]  # next TCP sequence number (mutated by the writer loop)


def _flow_templates(rng: random.Random, flows: int) -> _Templates:
    """Draw each flow's kind, client, server and ports, and precompute its headers."""
    t = _Templates([], [], [], [], [], [], [])
    gateway_mac = b"\x02\x00\x00\x00\x00\xfe"
    for f in range(flows):
        r = rng.random()
        kind = _KIND_TCP if r < 0.70 else _KIND_UDP if r < 0.95 else _KIND_ICMP
        t.kinds.append(kind)
        client = (0x0A400000 + f + 1).to_bytes(4, "big")
        server = bytes((10, 0, rng.randrange(4), rng.randrange(1, 255)))
        client_mac = b"\x02\x10" + (f + 1).to_bytes(4, "big")
        # DF set, TTL 64.
        mid = (0x4000 << 16) | (64 << 8) | (PROTO_TCP, PROTO_UDP, PROTO_ICMP)[kind]
        sport = rng.randrange(1024, 65536)
        dport = rng.choice(_TCP_PORTS if kind == _KIND_TCP else _UDP_PORTS)
        for src, dst, smac, dmac, p1, p2 in (
            (client, server, client_mac, gateway_mac, sport, dport),
            (server, client, gateway_mac, client_mac, dport, sport),
        ):
            t.eth_ip0.append(dmac + smac + b"\x08\x00\x45\x00")
            t.ip_mid.append(mid)
            t.addrs.append(src + dst)
            addr_sum = sum(struct.unpack("!4H", src + dst))
            t.base_sum.append(0x4500 + (mid >> 16) + (mid & 0xFFFF) + addr_sum)
            if kind == _KIND_ICMP:
                t.ports.append(struct.pack("!H", sport))
            else:
                t.ports.append(struct.pack("!HH", p1, p2))
            t.seqs.append(rng.getrandbits(32))
    return t


def synthetic_pcap(
    path: str | PathLike[str],
    packets: int,
    flows: int,
    *,
    seed: int = 1,
    start: float = 1_700_000_000.0,
) -> dict[str, int]:
    """Write an Ethernet/IPv4 pcap of exactly ``packets`` frames over ``flows`` flows.

    Each flow is its own address pair (a client in 10.64.0.0/10 talking to one of ~1000
    servers in 10.0.0.0/22), so flows stay distinct however a flow table keys ICMP; both
    directions carry traffic. About 70% of flows are TCP (starting SYN, SYN-ACK), 25%
    UDP, 5% ICMP echo. Frames are 60..1514 bytes, with no Ethernet padding (IP total
    length = frame length - 14), timestamps 1 us..1 ms apart. The output depends only on
    the arguments. Returns ``{"packets": N, "bytes": total frame bytes, "flows": F}``.
    """
    if not 0 <= flows <= packets:
        raise ValueError(f"need 0 <= flows <= packets, got flows={flows} packets={packets}")
    if flows > (1 << 22) - 2:
        raise ValueError("at most 4194302 flows (one client address each)")
    rng = random.Random(seed)
    sizes = _size_table(rng)
    counts = _flow_packet_counts(rng, packets, flows)
    # Interleave flows: every flow id appears count times, in random order.
    order = [f for f, n in enumerate(counts) for _ in range(n)]
    rng.shuffle(order)

    t = _flow_templates(rng, flows)
    # Plain locals, not attribute lookups: the loop below runs once per packet.
    kinds, eth_ip0, ip_mid, addrs = t.kinds, t.eth_ip0, t.ip_mid, t.addrs
    base_sum, ports, seqs = t.base_sum, t.ports, t.seqs
    sent = [0] * flows
    zeros = [bytes(n) for n in range(1515)]
    pack_ip = struct.Struct("!HHIH").pack
    pack_tcp = struct.Struct("!IIHHI").pack
    pack_udp = struct.Struct("!HH").pack
    pack_icmp = struct.Struct("!BBH").pack
    pack_echo = struct.Struct("!H").pack
    syn_len = 14 + 20 + 20 + len(_SYN_OPTIONS)
    ack_len = 14 + 20 + 20 + len(_ACK_OPTIONS)
    size_mask = (1 << _SIZE_TABLE_BITS) - 1
    getrandbits = rng.getrandbits
    total_bytes = 0
    t_us = 0
    with open(path, "wb", buffering=1 << 20) as fh:
        writer = PcapWriter(fh, LINKTYPE_ETHERNET)
        write = writer.write
        for i, f in enumerate(order):
            bits = getrandbits(32)
            t_us += (bits >> 20) % 1000 + 1
            k = sent[f]
            sent[f] = k + 1
            kind = kinds[f]
            if kind == _KIND_TCP:
                if k < 2:
                    d = k
                    size = syn_len
                    flags = TCP_SYN if k == 0 else TCP_SYN | TCP_ACK
                    options = _SYN_OPTIONS
                    data = b""
                elif bits & 0x10000 and bits & 0x20000:
                    d = (bits >> 18) & 1
                    size = ack_len
                    flags = TCP_ACK
                    options = _ACK_OPTIONS
                    data = b""
                else:
                    d = (bits >> 18) & 1
                    size = sizes[bits & size_mask]
                    flags = TCP_PSH | TCP_ACK
                    options = b""
                    data = zeros[size - 54]
                x = 2 * f + d
                seq = seqs[x]
                # The handshake's SYN and SYN-ACK each consume one sequence number.
                seqs[x] = (seq + (1 if k < 2 else len(data))) & 0xFFFFFFFF
                ack = seqs[x ^ 1] if k else 0
                l4 = (
                    ports[x]
                    + pack_tcp(seq, ack, ((5 + len(options) // 4) << 12) | flags, 65535, 0)
                    + options
                    + data
                )
            else:
                # The client speaks first; after that either side may.
                d = (bits >> 18) & 1 if k else 0
                size = sizes[bits & size_mask]
                x = 2 * f + d
                if kind == _KIND_UDP:
                    l4 = ports[x] + pack_udp(size - 34, 0) + zeros[size - 42]
                else:
                    # Zero payload, so the checksum only covers type and identifier.
                    echo_type = 0 if d else 8
                    echo_seq = k & 0xFFFF
                    s = (echo_type << 8) + int.from_bytes(ports[x], "big") + echo_seq
                    s = (s & 0xFFFF) + (s >> 16)
                    s = (s & 0xFFFF) + (s >> 16)
                    l4 = (
                        pack_icmp(echo_type, 0, ~s & 0xFFFF)
                        + ports[x]
                        + pack_echo(echo_seq)
                        + zeros[size - 42]
                    )
            ident = i & 0xFFFF
            s = base_sum[x] + size - 14 + ident
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            frame = eth_ip0[x] + pack_ip(size - 14, ident, ip_mid[x], ~s & 0xFFFF) + addrs[x] + l4
            write(start + t_us * 1e-6, frame)
            total_bytes += size
    return {"packets": packets, "bytes": total_bytes, "flows": flows}
