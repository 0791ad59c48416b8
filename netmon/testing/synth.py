"""A fast synthetic-capture generator: ``synthetic_pcap`` writes a pcap of many flows.

Pure module (no textual, no twisted): runs in the caller's thread. It builds the
Ethernet/IPv4/TCP/UDP/ICMP headers itself from precomputed per-flow templates rather
than with the ``netmon.testing.frames`` builders, so that millions of frames take
seconds; benchmarks and soak tests use it for big, reproducible captures.

Addresses here only ever end up in files; nothing is sent. TCP/UDP checksums are left
0 (decoders must not depend on them); IPv4 header and ICMP checksums are valid.
"""

from __future__ import annotations

import random
import struct
from os import PathLike
from typing import NamedTuple

import numpy as np

from netmon.core.values import PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_PSH, TCP_SYN
from netmon.ingest.linktypes import LINKTYPE_ETHERNET
from netmon.ingest.pcapwrite import PcapWriter

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


def synthetic_flow_columns(n: int, *, seed: int = 1, edge_cases: bool = False
                           ) -> tuple[dict[str, np.ndarray], list[bytes]]:
    """``n`` flows as :meth:`FlowTable.columns` gives them, with their keys: IPv4 and
    IPv6 (one in 8), counters up to 2**40, realistic timestamps and statistics.
    ``edge_cases``: also NaN/infinite/negative/tiny/huge floats, rounding ties,
    exported flows and cluster ids, for checking text output against ``json.dumps``.
    """
    from netmon.flows.keys import FIRST_SIZES, KEY_DTYPE

    rng = np.random.default_rng(seed)
    keys = np.zeros(n, dtype=KEY_DTYPE)
    six = rng.random(n) < 0.125
    raw = rng.integers(0, 256, (n, 2, 16), dtype=np.uint8)
    raw[~six, :, :12] = 0
    keys["p"] = rng.choice([6, 17, 1, 58], n, p=[0.6, 0.3, 0.05, 0.05])
    keys["f"] = np.where(six, 6, 4)
    keys["a"] = raw[:, 0].copy().view("V16")[:, 0]
    keys["b"] = raw[:, 1].copy().view("V16")[:, 0]
    keys["ap"] = rng.integers(0, 65536, n)
    keys["bp"] = rng.integers(0, 65536, n)
    keys["o"] = rng.integers(0, 3, n)
    big = rng.integers(0, 2**40, n)
    pkts = rng.integers(1, 20, (n, 2))
    first = 1_700_000_000 + rng.random(n) * 1e7
    cols = {
        "flow_id": np.arange(1, n + 1, dtype=np.int64), "proto": keys["p"].astype(np.int64),
        "a_is_lo": rng.random(n) < 0.5,
        "port_a": keys["ap"].astype(np.int64), "port_b": keys["bp"].astype(np.int64),
        "pkts_a2b": pkts[:, 0], "bytes_a2b": big, "pkts_b2a": pkts[:, 1],
        "bytes_b2a": rng.integers(0, 10**6, n),
        "first": first, "last": first + rng.exponential(5, n),
        "syn": rng.integers(0, 3, n), "synack": rng.integers(0, 3, n),
        "fin": rng.integers(0, 3, n), "rst": rng.integers(0, 2, n), "psh": rng.integers(0, 9, n),
        "size_mean": rng.random(n) * 1500, "size_std": rng.random(n) * 700,
        "iat_mean": rng.exponential(0.5, n), "iat_std": rng.exponential(0.3, n),
        "first_sizes": rng.integers(-1514, 1515, (n, FIRST_SIZES)),
        "cluster": rng.integers(-1, 12, n), "outlier": rng.exponential(1.0, n),
        "exported": rng.random(n) < 0.05,
    }
    if edge_cases:
        odd = np.array([np.nan, np.inf, -np.inf, -0.0, -1e-9, 1e-7, 5e-5, 0.0001, 0.5, 2.5,
                        0.0000005, 0.0015, 2.675, 1e15, 1e16, 1.5e17, -3.25, 123456.0005])
        for name in ("size_mean", "size_std", "iat_mean", "iat_std", "outlier", "last"):
            cols[name][:len(odd)] = odd[:n]
        ties = (rng.integers(0, 10**9, n) + 0.5) / 10**6  # x.xxxxxx5: round-half cases
        cols["iat_mean"][len(odd):] = ties[len(odd):]
        cols["cluster"][:3] = [-1, 0, 10**6][:n]
        cols["pkts_a2b"][:2] = [0, 2**40][:n]
    return cols, keys.view(f"V{KEY_DTYPE.itemsize}").tolist()
