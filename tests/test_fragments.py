"""IP fragments in any order (netmon.ingest.fragments): a datagram is one flow however
its fragments arrive; what waits is bounded; what never matches is counted.

Oracle: real tshark, which reassembles in any order, on captures built here. tshark
counts a reassembled datagram once in its UDP conversation (on the fragment that
completes it) and every fragment in the IP conversation; netmon counts every fragment
in the datagram's flow (README "Flow semantics").
"""

from __future__ import annotations

import json
from pathlib import Path

from netmon.ingest.fragments import FRAG_HOLD, FRAG_HOLD_SECONDS
from netmon.ingest.linktypes import LINKTYPE_ETHERNET
from netmon.ingest.pcapstream import PcapStreamDecoder
from netmon.ingest.pcapwrite import pcap_header, pcap_record
from netmon.testing.frames import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    IPV6_FRAGMENT,
    ethernet,
    ipv4,
    ipv6,
    ipv6_fragment,
    udp,
)
from tests.conftest import run_netmon
from tests.test_pcapstream import decode, pcap
from tests.tshark_oracle import netmon_conversations, netmon_flows, tshark_conversations, write_pcap

A, B, C = "10.9.0.1", "10.9.0.2", "10.9.0.3"
A6, B6 = "fd09::1", "fd09::2"


def v4_fragments(ident: int, sport: int, src: str = A) -> list[bytes]:
    """A 48-byte UDP datagram from ``src`` to B in three IPv4 fragments, in order."""
    l4 = udp(sport, 53, b"f" * 40)
    return [ethernet(ipv4(src, B, 17, part, ident=ident, mf=more, frag_offset=off),
                     ETHERTYPE_IPV4)
            for part, off, more in ((l4[:16], 0, True), (l4[16:32], 2, True), (l4[32:], 4, False))]


def v6_fragments(ident: int, sport: int) -> list[bytes]:
    l4 = udp(sport, 53, b"g" * 40)
    return [ethernet(ipv6(A6, B6, 17, part,
                          ext=[(IPV6_FRAGMENT, ipv6_fragment(0, off, more, ident))]),
                     ETHERTYPE_IPV6)
            for part, off, more in ((l4[:24], 0, True), (l4[24:], 3, False))]


def test_fragments_in_any_order_make_one_flow_like_tshark(tmp_path: Path) -> None:
    d1, d2, d3 = v4_fragments(1, 7001), v4_fragments(2, 7002), v4_fragments(3, 7003)
    e1 = v6_fragments(9, 7009)
    frames = [d1[2], d1[1], d1[0],  # last first
              d2[1], d3[2], d2[2], d3[0], d2[0], d3[1],  # two datagrams interleaved
              e1[1], e1[0]]
    path = write_pcap(tmp_path / "frags.pcap", LINKTYPE_ETHERNET, frames)
    want = tshark_conversations(path)
    table, dec = netmon_flows(path)
    got = netmon_conversations(table)
    # Every fragment in the IPv4 conversations (tshark's IPv6 ones count the datagram
    # once, like its UDP ones); the same UDP 5-tuples as tshark's, each holding all its
    # datagram's fragments (tshark: one reassembled datagram each).
    assert got["ip"] == want["ip"] and set(got["ipv6"]) == set(want["ipv6"])
    assert set(got["udp"]) == set(want["udp"]) and len(got["udp"]) == 4
    assert sorted(sum(sides.values()) for sides in got["udp"].values()) == [2, 3, 3, 3]
    assert sorted(sum(sides.values()) for sides in want["udp"].values()) == [1, 1, 1, 1]
    assert table.packets == len(frames) and dec.frags.unmatched == 0


def test_unmatched_fragments_expire_and_are_counted() -> None:
    orphan = v4_fragments(5, 7005)
    late_first = v4_fragments(6, 7006)
    # An orphan's first fragment never comes; another's comes after the hold expired.
    frames = [orphan[2], late_first[2], late_first[1], late_first[0]]
    recs, dec = decode(_spaced(frames, [0.0, 1.0, 2.0, 3.0 + FRAG_HOLD_SECONDS]))
    # The first fragment, then what it found expired: the orphan and its own.
    assert [(r.sport, r.dport) for r in recs] == [(7006, 53)] + [(0, 0)] * 3
    assert [r.ts - recs[0].ts for r in recs] == [0.0, -3 - FRAG_HOLD_SECONDS,
                                                 -2 - FRAG_HOLD_SECONDS, -1 - FRAG_HOLD_SECONDS]
    assert dec.frags.unmatched == 3 and dec.frags.held == 0


def _spaced(frames: list[bytes], times: list[float]) -> bytes:
    return pcap_header(LINKTYPE_ETHERNET) + b"".join(
        pcap_record(1_700_000_000.0 + t, f) for t, f in zip(times, frames, strict=True))


def test_held_fragments_are_bounded_in_memory() -> None:
    orphans = [v4_fragments(i, 8000, src=C)[2] for i in range(FRAG_HOLD + 10)]
    data = pcap(LINKTYPE_ETHERNET, orphans)
    dec = PcapStreamDecoder()
    out = dec.feed(data)  # before the end: the oldest ten were let go, unmatched
    assert dec.frags.held == FRAG_HOLD and len(out) == 10 and dec.frags.unmatched == 10
    recs, dec = decode(data, seeds=(3,))
    assert len(recs) == len(orphans) and all(r.sport == 0 for r in recs)
    assert dec.frags.unmatched == len(orphans)


def test_orphans_count_in_the_totals_at_end_of_capture(tmp_path: Path) -> None:
    frames = [v4_fragments(1, 7001)[2], *v4_fragments(2, 7002)]
    path = write_pcap(tmp_path / "orphan.pcap", LINKTYPE_ETHERNET, frames)
    proc = run_netmon("--headless", "--json", "--no-cluster", "-r", str(path))
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout.splitlines()[-1])
    assert final["ip_packets"] == 4 and final["fragments_unmatched"] == 1
    assert final["bytes"] == sum(len(f) for f in frames)
