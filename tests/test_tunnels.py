"""Tunnels (netmon.ingest.tunnels): GRE, IP-in-IP, VXLAN and GENEVE decapsulated so the
inner flows count as tshark counts them, with the outer flow kept and flagged.

Oracle: real tshark's conversation tables of captures built here (tests/tshark_oracle.py).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from netmon.ingest.batch import TUNNEL
from netmon.ingest.linktypes import LINKTYPE_ETHERNET, LINKTYPE_RAW
from netmon.ingest.pcapwrite import pcapng_epb, pcapng_idb, pcapng_shb
from netmon.testing.frames import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ETHERTYPE_TEB,
    GENEVE_PORT,
    PROTO_GRE,
    PROTO_IPIP,
    PROTO_IPV6_IN_IP,
    VXLAN_PORT,
    ethernet,
    geneve,
    gre,
    ipv4,
    ipv6,
    tcp,
    udp,
    vxlan,
)
from tests.conftest import run_netmon
from tests.test_pcapstream import decode, pcap
from tests.tshark_oracle import T0, compare, netmon_flows, write_pcap

SYN, ACK, PSH = 0x02, 0x10, 0x08
# Outer (tunnel endpoint) and inner addresses: all documentation/private ranges.
O1, O2, O61, O62 = "192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"
I1, I2, I61, I62 = "10.1.0.1", "10.1.0.2", "fd00::1", "fd00::2"


def eth4(packet: bytes) -> bytes:
    return ethernet(packet, ETHERTYPE_IPV4)


def eth6(packet: bytes) -> bytes:
    return ethernet(packet, ETHERTYPE_IPV6)


def inner_tcp(n: int, src: str = I1, dst: str = I2) -> list[bytes]:
    """An inner IPv4 TCP exchange (SYN, SYN-ACK, data) on client port 40000 + n."""
    port = 40000 + n
    return [ipv4(src, dst, 6, tcp(port, 80, flags=SYN)),
            ipv4(dst, src, 6, tcp(80, port, flags=SYN | ACK)),
            ipv4(src, dst, 6, tcp(port, 80, flags=PSH | ACK, payload=b"GET / HTTP/1.0\r\n\r\n"))]


def tunnel_frames() -> list[bytes]:
    """One capture with every tunnel kind, 16 inner TCP conversations among them."""
    frames: list[bytes] = []
    n = iter(range(100))
    # GRE over IPv4 carrying IPv4, plain and with checksum, key and sequence words.
    for pkt in inner_tcp(next(n)):
        frames.append(eth4(ipv4(O1, O2, PROTO_GRE, gre(pkt, ETHERTYPE_IPV4))))
    for pkt in inner_tcp(next(n)):
        frames.append(eth4(ipv4(O1, O2, PROTO_GRE, gre(pkt, ETHERTYPE_IPV4, key=7, seq=1,
                                                       checksum=True))))
    # GRE bridging Ethernet (0x6558) with IPv6 UDP inside; GRE over IPv6.
    frames.append(eth4(ipv4(O1, O2, PROTO_GRE, gre(
        eth6(ipv6(I61, I62, 17, udp(5353, 5353, b"mdns"))), ETHERTYPE_TEB))))
    for pkt in inner_tcp(next(n)):
        frames.append(eth6(ipv6(O61, O62, PROTO_GRE, gre(pkt, ETHERTYPE_IPV4, key=9))))
    # IP-in-IP: 4in4, 6in4, 4in6.
    for pkt in inner_tcp(next(n)):
        frames.append(eth4(ipv4(O1, O2, PROTO_IPIP, pkt)))
    frames.append(eth4(ipv4(O1, O2, PROTO_IPV6_IN_IP, ipv6(I61, I62, 17, udp(1000, 53, b"q")))))
    for pkt in inner_tcp(next(n)):
        frames.append(eth6(ipv6(O61, O62, PROTO_IPIP, pkt)))
    # VXLAN: eight inner TCP conversations over one outer UDP flow.
    for _ in range(8):
        for pkt in inner_tcp(next(n), "10.2.0.1", "10.2.0.2"):
            frames.append(eth4(ipv4(O1, O2, 17, udp(49152, VXLAN_PORT, vxlan(eth4(pkt), 42)))))
    # GENEVE: Ethernet inside (with an option), and IPv4 directly (protocol 0x0800).
    opt = struct.pack("!HBB", 0x0102, 0x80, 1) + b"\xaa" * 4
    for pkt in inner_tcp(next(n)):
        frames.append(eth4(ipv4(O1, O2, 17, udp(50000, GENEVE_PORT,
                                                geneve(eth4(pkt), 5, options=opt)))))
    for pkt in inner_tcp(next(n)):
        frames.append(eth4(ipv4(O1, O2, 17, udp(50001, GENEVE_PORT,
                                                geneve(pkt, 6, ETHERTYPE_IPV4)))))
    # Nested: VXLAN inside GRE.
    for pkt in inner_tcp(next(n), "10.3.0.1", "10.3.0.2"):
        vx = eth4(ipv4("172.16.0.1", "172.16.0.2", 17, udp(49153, VXLAN_PORT,
                                                         vxlan(eth4(pkt), 1))))
        frames.append(eth4(ipv4(O1, O2, PROTO_GRE, gre(vx, ETHERTYPE_TEB))))
    return frames


def test_inner_flows_equal_tsharks_conversations(tmp_path: Path) -> None:
    frames = tunnel_frames()
    path = write_pcap(tmp_path / "tunnels.pcap", LINKTYPE_ETHERNET, frames)
    table, dec = compare(path)
    views = table.live_views()
    inner_tcp_flows = [f for f in views if f.proto == 6]
    assert len(inner_tcp_flows) == 16 and not any(f.tunnel for f in inner_tcp_flows)
    outer = {(f.proto, f.addr_a, f.addr_b) for f in views if f.tunnel}
    assert outer == {(47, O1, O2), (47, O61, O62), (4, O1, O2), (41, O1, O2), (4, O61, O62),
                     (17, O1, O2), (17, "172.16.0.1", "172.16.0.2")}
    # Each frame counted once in the totals, though it is in two or three flows.
    assert table.packets == len(frames) == dec.ip_frames
    assert table.bytes == sum(len(f) for f in frames)
    assert sum(f.packets for f in views if not f.tunnel) == len(frames)


def test_pcapng_and_pcap_give_the_same_flows(tmp_path: Path) -> None:
    """The pcapng per-frame path and the pcap fast path hand tunnels over alike."""
    frames = tunnel_frames()
    ng = tmp_path / "tunnels.pcapng"
    ng.write_bytes(pcapng_shb() + pcapng_idb(LINKTYPE_ETHERNET) + b"".join(
        pcapng_epb(0, T0 + i / 1000, f) for i, f in enumerate(frames)))
    compare(ng)
    recs, dec = decode(ng.read_bytes())  # whole, chunked, feed and feed_batch agree
    assert sum(r.flags >= TUNNEL for r in recs) == len(recs) - dec.ip_frames > 0


def test_undecodable_inner_leaves_an_unmarked_outer_flow(tmp_path: Path) -> None:
    frames = [
        eth4(ipv4(O1, O2, 17, udp(49152, VXLAN_PORT, b"\x08\0\0\0\0\0\x2a\0"))),  # no frame
        eth4(ipv4(O1, O2, 17, udp(49152, VXLAN_PORT, vxlan(ethernet(b"arp", 0x0806), 42)))),
        eth4(ipv4(O1, O2, PROTO_GRE, gre(b"\x45\0", ETHERTYPE_IPV4))),  # cut inner header
        eth4(ipv4(O1, O2, PROTO_IPIP, b"")),
    ]
    path = write_pcap(tmp_path / "broken.pcap", LINKTYPE_ETHERNET, frames)
    table, dec = compare(path)
    views = table.live_views()
    assert sorted(f.proto for f in views) == [4, 17, 47] and not any(f.tunnel for f in views)
    assert table.packets == dec.ip_frames == 4 and not dec.skipped and dec.nonip == 0


def test_hostile_nesting_stops_at_the_depth_bound() -> None:
    pkt = ipv4(I1, I2, 6, tcp(1, 2, flags=SYN))
    for _ in range(50):
        pkt = ipv4(O1, O2, PROTO_IPIP, pkt)
    recs, dec = decode(pcap(LINKTYPE_RAW, [pkt]))
    assert len(recs) == 5 and dec.ip_frames == 1  # the outer and four levels inside
    assert [r.flags >= TUNNEL for r in recs] == [True] * 4 + [False]


def test_flows_out_and_totals_mark_the_tunnel(tmp_path: Path) -> None:
    frames = tunnel_frames()
    path = write_pcap(tmp_path / "tunnels.pcap", LINKTYPE_ETHERNET, frames)
    out = tmp_path / "flows.jsonl"
    proc = run_netmon("--headless", "--json", "--no-cluster", "-r", str(path),
                      "--flows-out", str(out))
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout.splitlines()[-1])
    assert final["ip_packets"] == len(frames)
    assert final["bytes"] == sum(len(f) for f in frames)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(r["tunnel"] for r in rows) == 9  # 5 IP tunnels, 4 UDP (VXLAN, GENEVE)
    assert {r["proto"] for r in rows if r["tunnel"]} == {4, 17, 41, 47}
    table, _ = netmon_flows(path)
    assert len(rows) == len(table)
