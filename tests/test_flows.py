"""Tests for netmon.flows.table.FlowTable: keying, counters, statistics, expiry, the cap.

Packets are PacketRecord tuples built by hand; expected statistics come from numpy
over the same packets (population standard deviations, as the table keeps them).
"""

from __future__ import annotations

import itertools
import random
import socket
from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netmon.core.values import FlowView
from netmon.flows.keys import FIRST_SIZES
from netmon.flows.table import FlowTable

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
LO, HI = "10.0.0.1", "10.0.0.200"  # LO < HI as packed bytes, so both orientations get tested


def ip(addr: str) -> bytes:
    if ":" in addr:
        return socket.inet_pton(socket.AF_INET6, addr)
    return socket.inet_aton(addr)


def pkt(ts: float, src: str, sport: int, dst: str, dport: int, *, proto: int = TCP,
        size: int = 100, flags: int = 0) -> tuple:
    """A PacketRecord tuple (ts, wirelen, proto, src, sport, dst, dport, flags)."""
    return (float(ts), size, proto, ip(src), sport, ip(dst), dport, flags)


def only(views: list[FlowView]) -> FlowView:
    assert len(views) == 1, views
    return views[0]


def handshake(client: str, server: str, t0: float = 100.0) -> list[tuple]:
    """A short TCP conversation: handshake, request, response, FIN both ways."""
    c, s = (client, 50000), (server, 443)
    return [
        pkt(t0, *c, *s, flags=SYN, size=74),
        pkt(t0 + 0.010, *s, *c, flags=SYN | ACK, size=74),
        pkt(t0 + 0.011, *c, *s, flags=ACK, size=66),
        pkt(t0 + 0.020, *c, *s, flags=PSH | ACK, size=583),
        pkt(t0 + 0.090, *s, *c, flags=ACK, size=66),
        pkt(t0 + 0.100, *s, *c, flags=PSH | ACK, size=1514),
        pkt(t0 + 0.101, *s, *c, flags=PSH | ACK, size=900),
        pkt(t0 + 0.150, *c, *s, flags=FIN | ACK, size=66),
        pkt(t0 + 0.160, *s, *c, flags=FIN | ACK, size=66),
        pkt(t0 + 0.170, *c, *s, flags=ACK, size=66),
    ]


# --- keying and counters -------------------------------------------------------------------


@pytest.mark.parametrize(("client", "server"), [(LO, HI), (HI, LO)],
                         ids=["client-lo", "client-hi"])
def test_both_directions_are_one_flow_oriented_by_first_packet(client: str,
                                                               server: str) -> None:
    table = FlowTable()
    packets = handshake(client, server)
    table.add_packets(packets)
    v = only(table.live_views())
    assert (v.proto, v.addr_a, v.port_a, v.addr_b, v.port_b) == (TCP, client, 50000, server, 443)
    assert (v.pkts_a2b, v.pkts_b2a) == (5, 5)
    assert v.bytes_a2b == 74 + 66 + 583 + 66 + 66
    assert v.bytes_b2a == 74 + 66 + 1514 + 900 + 66
    assert v.bytes == sum(p[1] for p in packets) == table.bytes
    assert v.packets == 10 == table.packets
    assert (v.first_epoch, v.last_epoch) == (100.0, pytest.approx(100.17))
    assert (v.syn, v.synack, v.fin, v.rst, v.psh) == (1, 1, 2, 0, 3)
    assert v.first_sizes == (74, -74, 66, 583, -66, -1514, -900, 66)
    assert table.flows_seen == 1 and len(table) == 1 and v.end_reason == ""


@pytest.mark.parametrize(("client", "server"), [(LO, HI), (HI, LO)],
                         ids=["client-lo", "client-hi"])
def test_synack_first_makes_the_other_side_the_initiator(client: str, server: str) -> None:
    table = FlowTable()
    table.add_packets([
        pkt(1.0, server, 443, client, 50000, flags=SYN | ACK, size=74),  # SYN not captured
        pkt(1.1, client, 50000, server, 443, flags=ACK, size=66),
        pkt(1.2, client, 50000, server, 443, flags=PSH | ACK, size=300),
    ])
    v = only(table.live_views())
    assert (v.addr_a, v.port_a, v.addr_b, v.port_b) == (client, 50000, server, 443)
    assert (v.pkts_a2b, v.bytes_a2b, v.pkts_b2a, v.bytes_b2a) == (2, 366, 1, 74)
    assert v.first_sizes == (-74, 66, 300)
    assert (v.syn, v.synack) == (0, 1)


def test_synack_rule_is_tcp_only() -> None:
    """ICMP type 18 (address mask reply) has the SYN-ACK bit pattern but is no SYN-ACK."""
    table = FlowTable()
    table.add_packets([pkt(1.0, HI, 0, LO, 0, proto=ICMP, flags=18),
                       pkt(1.5, LO, 0, HI, 0, proto=ICMP, flags=17)])
    v = only(table.live_views())
    assert (v.addr_a, v.addr_b) == (HI, LO)
    assert (v.syn, v.synack, v.fin, v.rst, v.psh) == (0, 0, 0, 0, 0)


def test_tcp_flag_counts() -> None:
    a, b = (LO, 1000), (HI, 80)
    table = FlowTable()
    table.add_packets([
        pkt(0, *a, *b, flags=SYN), pkt(1, *a, *b, flags=SYN),  # retransmitted SYN
        pkt(2, *b, *a, flags=SYN | ACK), pkt(3, *a, *b, flags=ACK),
        pkt(4, *a, *b, flags=PSH | ACK), pkt(5, *b, *a, flags=PSH),
        pkt(6, *a, *b, flags=FIN | PSH | ACK), pkt(7, *b, *a, flags=RST),
        pkt(8, *b, *a, flags=RST | ACK), pkt(9, *a, *b, flags=FIN),
        pkt(10, *a, *b, flags=SYN | FIN | RST | PSH | ACK | 0xE0),  # all of them + ECN bits
    ])
    v = only(table.live_views())
    assert (v.syn, v.synack, v.fin, v.rst, v.psh) == (2, 2, 3, 3, 4)


def test_flags_of_other_protocols_are_not_tcp_flags() -> None:
    """The flags field holds the ICMP type for ICMP: echo request (8) is not PSH."""
    table = FlowTable()
    table.add_packets([pkt(0, LO, 0, HI, 0, proto=ICMP, flags=8),
                       pkt(1, HI, 0, LO, 0, proto=ICMP, flags=0),
                       pkt(2, LO, 0, HI, 0, proto=ICMP, flags=3),
                       pkt(3, "2001:db8::1", 0, "2001:db8::2", 0, proto=ICMPV6, flags=135),
                       pkt(4, LO, 9, HI, 9, proto=UDP, flags=0xFF)])
    for v in table.live_views():
        assert (v.syn, v.synack, v.fin, v.rst, v.psh) == (0, 0, 0, 0, 0)


def test_icmp_keyed_by_address_pair() -> None:
    table = FlowTable()
    table.add_packets([
        pkt(0, LO, 0, HI, 0, proto=ICMP, flags=8, size=98),
        pkt(1, HI, 0, LO, 0, proto=ICMP, flags=0, size=98),
        pkt(2, LO, 0, HI, 0, proto=ICMP, flags=8, size=98),  # another echo id: same flow
        pkt(3, "10.9.9.9", 0, LO, 0, proto=ICMP, flags=3, size=70),  # another pair
        pkt(4, LO, 0, HI, 0, proto=UDP, size=60),  # same pair, other protocol
    ])
    views = sorted(table.live_views(), key=lambda v: v.flow_id)
    assert [(v.proto, v.addr_a, v.port_a, v.addr_b, v.port_b, v.packets, v.bytes)
            for v in views] == [(ICMP, LO, 0, HI, 0, 3, 294), (ICMP, "10.9.9.9", 0, LO, 0, 1, 70),
                                (UDP, LO, 0, HI, 0, 1, 60)]
    assert (views[0].pkts_a2b, views[0].pkts_b2a) == (2, 1)


def test_ports_and_protocol_are_part_of_the_key() -> None:
    table = FlowTable()
    table.add_packets([
        pkt(0, LO, 1000, HI, 80), pkt(1, HI, 80, LO, 1000),  # one flow
        pkt(2, LO, 1001, HI, 80),  # other client port
        pkt(3, LO, 1000, HI, 81),  # other server port
        pkt(4, LO, 1000, HI, 80, proto=UDP),  # other protocol
        pkt(5, LO, 80, HI, 1000),  # ports swapped between the hosts: another pair
        pkt(6, LO, 7, LO, 7), pkt(7, LO, 7, LO, 7),  # talking to itself: one endpoint
        pkt(8, LO, 8, LO, 7), pkt(9, LO, 7, LO, 8),  # same address, ports decide
    ])
    views = sorted(table.live_views(), key=lambda v: v.flow_id)
    assert [v.packets for v in views] == [2, 1, 1, 1, 1, 2, 2]
    assert table.flows_seen == 7
    self_talk = views[5]
    assert (self_talk.pkts_a2b, self_talk.pkts_b2a) == (2, 0)  # lo == hi counts as a->b
    same_addr = views[6]
    assert (same_addr.port_a, same_addr.port_b, same_addr.pkts_a2b, same_addr.pkts_b2a) == (
        8, 7, 1, 1)


def test_ipv6_addresses() -> None:
    a, b = "2001:db8::1", "2001:db8:0:0:1::ff"
    table = FlowTable()
    table.add_packets([pkt(0, b, 5353, a, 53, proto=UDP, size=90),
                       pkt(0.5, a, 53, b, 5353, proto=UDP, size=300),
                       pkt(1, "fe80::1", 0, "ff02::1", 0, proto=ICMPV6, flags=134)])
    views = sorted(table.live_views(), key=lambda v: v.flow_id)
    assert (views[0].addr_a, views[0].port_a, views[0].addr_b, views[0].port_b) == (
        "2001:db8::1:0:0:ff", 5353, "2001:db8::1", 53)
    assert (views[0].bytes_a2b, views[0].bytes_b2a) == (90, 300)
    assert (views[1].addr_a, views[1].addr_b, views[1].proto) == ("fe80::1", "ff02::1", ICMPV6)


def test_ipv4_and_ipv6_flows_do_not_mix() -> None:
    table = FlowTable()
    table.add_packets([pkt(0, LO, 1, HI, 2), pkt(1, "::ffff:10.0.0.1", 1, "::ffff:10.0.0.200", 2)])
    assert len(table) == 2


# --- statistics ------------------------------------------------------------------------------


def _random_flow(rng: random.Random, n: int, t0: float = 1_700_000_000.0) -> list[tuple]:
    ts = t0 + np.cumsum([rng.expovariate(20.0) for _ in range(n)])
    out = []
    for t in ts:
        if rng.random() < 0.5:
            out.append(pkt(t, LO, 40000, HI, 443, size=rng.randint(60, 1514), flags=ACK))
        else:
            out.append(pkt(t, HI, 443, LO, 40000, size=rng.randint(60, 1514), flags=ACK))
    return out


def _split(items: list, rng: random.Random, max_batch: int) -> list[list]:
    out, i = [], 0
    while i < len(items):
        n = rng.randint(1, max_batch)
        out.append(items[i:i + n])
        i += n
    return out


@pytest.mark.parametrize("max_batch", [1, 3, 50, 10_000])
@pytest.mark.parametrize("n", [1, 2, 3, 9, 500])
def test_size_and_iat_statistics_match_numpy(n: int, max_batch: int) -> None:
    rng = random.Random(n * 1000 + max_batch)
    packets = _random_flow(rng, n)
    table = FlowTable(idle_timeout=1e9, active_timeout=1e9)
    for batch in _split(packets, rng, max_batch):
        table.add_packets(batch)
    v = only(table.live_views())
    sizes = np.array([p[1] for p in packets], dtype=np.float64)
    stamps = np.array([p[0] for p in packets])
    assert v.size_mean == pytest.approx(sizes.mean(), rel=1e-12)
    assert v.size_std == pytest.approx(sizes.std(), rel=1e-9, abs=1e-9)
    iats = np.diff(stamps)
    if n > 1:
        assert v.iat_mean == pytest.approx(iats.mean(), rel=1e-9)
        assert v.iat_std == pytest.approx(iats.std(), rel=1e-6, abs=1e-12)
    else:
        assert (v.iat_mean, v.iat_std) == (0.0, 0.0)
    assert v.first_epoch == stamps[0] and v.last_epoch == stamps[-1]


def test_statistics_of_a_flow_spanning_many_batches_with_other_flows() -> None:
    """Batches that mix flows, and flows missing from some batches, merge correctly."""
    rng = random.Random(7)
    flows: dict[int, list[tuple]] = defaultdict(list)
    packets = []
    t = 50.0
    for _ in range(3000):
        t += rng.expovariate(100.0)
        k = rng.randrange(12)
        size = rng.choice([60, 66, 1514]) if k % 2 else rng.randint(40, 9000)
        p = pkt(t, LO, 1000 + k, HI, 80, size=size) if rng.random() < 0.6 else \
            pkt(t, HI, 80, LO, 1000 + k, size=size)
        flows[1000 + k].append(p)
        packets.append(p)
    table = FlowTable(idle_timeout=1e9, active_timeout=1e9)
    for batch in _split(packets, rng, 200):
        table.add_packets(batch)
    for v in table.live_views():
        mine = flows[v.port_a if v.port_b == 80 else v.port_b]
        sizes = np.array([p[1] for p in mine], dtype=np.float64)
        iats = np.diff([p[0] for p in mine])
        assert v.packets == len(mine)
        assert v.size_mean == pytest.approx(sizes.mean(), rel=1e-12)
        assert v.size_std == pytest.approx(sizes.std(), rel=1e-9)
        assert v.iat_mean == pytest.approx(iats.mean(), rel=1e-9)
        assert v.iat_std == pytest.approx(iats.std(), rel=1e-6)


@pytest.mark.parametrize("cuts", [(), (1,), (2,), (3,), (1, 2, 3, 4), (2, 4)])
def test_out_of_order_timestamps_count_as_zero_gaps(cuts: tuple[int, ...]) -> None:
    """A packet older than its flow's latest one is a 0 s gap; the next one is measured
    from the latest time seen. So the gaps add up to last - first, and where batches
    split the stream does not matter."""
    stamps = [0.0, 10.0, 5.0, 6.0, 12.0]
    packets = [pkt(t, LO, 1, HI, 2) if i % 2 else pkt(t, HI, 2, LO, 1)
               for i, t in enumerate(stamps)]
    table = FlowTable()
    edges = [0, *cuts, len(packets)]
    for lo, hi in itertools.pairwise(edges):
        table.add_packets(packets[lo:hi])
    v = only(table.live_views())
    gaps = np.diff(np.maximum.accumulate(stamps))  # 10, 0, 0, 2
    assert (v.first_epoch, v.last_epoch) == (0.0, 12.0)
    assert v.iat_mean == pytest.approx(gaps.mean()) == 3.0
    assert v.iat_std == pytest.approx(gaps.std())
    assert v.iat_mean * (v.packets - 1) == pytest.approx(v.duration)


def test_constant_sizes_and_gaps_have_zero_std() -> None:
    table = FlowTable()
    for i in range(20):
        table.add_packets([pkt(1_700_000_000 + i * 0.25, LO, 1, HI, 2, size=1514)])
    v = only(table.live_views())
    assert v.size_mean == 1514 and v.size_std == 0
    assert v.iat_mean == pytest.approx(0.25) and v.iat_std == pytest.approx(0, abs=1e-9)


def test_first_sizes_at_most_eight_signed_by_initiator() -> None:
    a, b = (HI, 5000), (LO, 53)  # the initiator is the "hi" endpoint of the key
    table = FlowTable()
    sizes = [10, -20, 30, 40, -50, 60, -70, -80, 90, -100, 110]
    for i, s in enumerate(sizes):
        src, dst = (a, b) if s > 0 else (b, a)
        table.add_packets([pkt(i, *src, *dst, proto=UDP, size=abs(s))])
        assert only(table.live_views()).first_sizes == tuple(sizes[:min(i + 1, FIRST_SIZES)])


# --- expiry and the cap ----------------------------------------------------------------------


def test_idle_timeout_ends_flow_and_a_later_packet_starts_a_new_one() -> None:
    table = FlowTable(idle_timeout=5, active_timeout=1000)
    table.add_packets([pkt(10, LO, 1, HI, 2), pkt(12, HI, 2, LO, 1), pkt(11, LO, 3, HI, 4)])
    assert table.expire(15.5) == 0  # idle 3.5 s and 4.5 s
    assert len(table) == 2 and table.drain_finished() == []
    assert table.expire(16.5) == 1  # the second flow has been idle 5.5 s
    done = only(table.drain_finished())
    assert (done.port_a, done.packets, done.end_reason) == (3, 1, "idle-timeout")
    assert table.drain_finished() == []
    assert table.expire(100) == 1
    old = only(table.drain_finished())
    assert (old.port_a, old.packets, old.end_reason) == (1, 2, "idle-timeout")
    assert table.expired == 2 and len(table) == 0
    table.add_packets([pkt(101, HI, 2, LO, 1)])  # same key, after its flow ended
    new = only(table.live_views())
    assert new.flow_id != old.flow_id and new.packets == 1
    assert (new.addr_a, new.port_a) == (HI, 2)  # a new flow: the new first packet decides
    assert table.flows_seen == 3


def test_active_timeout_ends_busy_flows() -> None:
    table = FlowTable(idle_timeout=5, active_timeout=30)
    t = 0.0
    ended = []
    while t < 100:
        table.add_packets([pkt(t, LO, 1, HI, 2, size=100)])
        table.expire(t)
        ended += table.drain_finished()
        t += 1.0
    assert [v.end_reason for v in ended] == ["active-timeout"] * 3
    assert all(29 <= v.duration <= 30 for v in ended)
    assert all(v.flow_id == i + 1 for i, v in enumerate(ended))
    live = only(table.live_views())
    assert sum(v.packets for v in ended) + live.packets == 100
    assert table.expired == 3 and table.flows_seen == 4


def test_idle_beats_active_and_each_flow_is_ended_once() -> None:
    table = FlowTable(idle_timeout=5, active_timeout=30)
    # Flow 1 is both idle and too old: it is ended once, as idle.
    table.add_packets([pkt(0, LO, 1, HI, 2), pkt(5, LO, 3, HI, 4), pkt(40, LO, 3, HI, 4)])
    assert table.expire(41) == 2
    reasons = {v.port_a: v.end_reason for v in table.drain_finished()}
    assert reasons == {1: "idle-timeout", 3: "active-timeout"}
    assert table.expire(1000) == 0 and len(table) == 0


def test_end_all() -> None:
    table = FlowTable(idle_timeout=5)
    table.add_packets([pkt(0, LO, 1, HI, 2), pkt(9, LO, 3, HI, 4)])
    table.expire(8)
    done = table.end_all()
    assert sorted((v.port_a, v.end_reason) for v in done) == [(1, "idle-timeout"),
                                                             (3, "end-of-capture")]
    assert len(table) == 0 and table.live_views() == [] and table.end_all() == []


@pytest.mark.parametrize("batch", [1, 10, 1000])
def test_max_flows_evicts_least_recently_seen(batch: int) -> None:
    cap = 100
    table = FlowTable(max_flows=cap, idle_timeout=1e9, active_timeout=1e9)
    packets = [pkt(i, LO, 1000 + i, HI, 80) for i in range(cap)]
    # Flow 0 is seen again last of all, so it is the most recently seen.
    packets.append(pkt(cap, HI, 80, LO, 1000))
    packets += [pkt(cap + 1 + i, LO, 5000 + i, HI, 80) for i in range(5)]
    for i in range(0, len(packets), batch):
        table.add_packets(packets[i:i + batch])
        assert len(table) <= cap
    evicted = table.drain_finished()
    assert evicted and all(v.end_reason == "evicted" for v in evicted)
    assert table.evicted == len(evicted)
    live_ports = {v.port_a for v in table.live_views()}
    assert 1000 in live_ports  # refreshed, so spared
    assert {5000 + i for i in range(5)} <= live_ports  # the newest flows stay
    # Whatever was evicted is older than whatever stayed.
    assert max(v.last_epoch for v in evicted) < min(v.last_epoch for v in table.live_views())
    assert len(evicted) + len(table) == table.flows_seen == cap + 5
    assert sum(v.packets for v in evicted + table.live_views()) == len(packets)


def test_max_flows_of_one() -> None:
    table = FlowTable(max_flows=1)
    table.add_packets([pkt(0, LO, 1, HI, 2), pkt(1, LO, 3, HI, 4), pkt(2, LO, 1, HI, 2)])
    assert len(table) == 1 and table.evicted == 1  # the cap is enforced per batch
    assert only(table.live_views()).last_epoch == 2
    table.add_packets([pkt(3, LO, 5, HI, 6)])
    table.add_packets([pkt(4, LO, 7, HI, 8)])
    assert table.evicted == 3 and only(table.live_views()).port_a == 7
    with pytest.raises(ValueError):
        FlowTable(max_flows=0)


# --- batching and column views ---------------------------------------------------------------


def _random_stream(seed: int, n: int, keys: int, disorder: float = 0.0) -> list[tuple]:
    """Random packets over ``keys`` conversations (TCP, UDP, ICMP, v4 and v6)."""
    rng = random.Random(seed)
    hosts = ["10.0.0.1", "10.0.0.2", "192.168.1.9", "2001:db8::1", "2001:db8::2", "fe80::9"]
    pool = []
    for _ in range(keys):
        v6 = rng.random() < 0.3
        a, b = rng.sample(hosts[3:] if v6 else hosts[:3], 2)
        proto = rng.choice([TCP, TCP, UDP, ICMPV6 if v6 else ICMP])
        ports = (0, 0) if proto in (ICMP, ICMPV6) else (rng.randrange(1, 65536),
                                                        rng.choice([53, 80, 443]))
        pool.append((proto, a, ports[0], b, ports[1]))
    t = 1_700_000_000.0
    out = []
    for _ in range(n):
        t += rng.expovariate(50.0)
        ts = t - rng.random() * 0.5 if rng.random() < disorder else t
        proto, a, pa, b, pb = rng.choice(pool)
        if rng.random() < 0.5:
            a, pa, b, pb = b, pb, a, pa
        flags = rng.choice([SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST]) if proto == TCP \
            else rng.randrange(256) if proto in (ICMP, ICMPV6) else 0
        out.append(pkt(ts, a, pa, b, pb, proto=proto, size=rng.randint(42, 1514), flags=flags))
    return out


_EXACT = ("flow_id", "proto", "addr_a", "port_a", "addr_b", "port_b", "pkts_a2b", "bytes_a2b",
          "pkts_b2a", "bytes_b2a", "first_epoch", "last_epoch", "syn", "synack", "fin", "rst",
          "psh", "first_sizes", "end_reason", "size_mean")
_FLOAT = ("size_std", "iat_mean", "iat_std")


def assert_same_views(got: list[FlowView], want: list[FlowView]) -> None:
    """Counters equal exactly; float statistics equal to rounding (the merge order of
    Welford/Chan updates differs with batching, so the last bits may too)."""
    got = sorted(got, key=lambda v: v.flow_id)
    want = sorted(want, key=lambda v: v.flow_id)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert [getattr(g, f) for f in _EXACT] == [getattr(w, f) for f in _EXACT]
        for f in _FLOAT:
            assert getattr(g, f) == pytest.approx(getattr(w, f), rel=1e-7, abs=1e-9), f


@pytest.mark.parametrize("disorder", [0.0, 0.05], ids=["in-order", "out-of-order"])
def test_results_do_not_depend_on_batch_size(disorder: float) -> None:
    packets = _random_stream(11, 5000, 60, disorder)
    results = []
    for size in (1, 7, 1000, len(packets)):
        table = FlowTable(idle_timeout=1e9, active_timeout=1e9)
        for i in range(0, len(packets), size):
            table.add_packets(packets[i:i + size])
        results.append(table.live_views())
        assert (table.packets, table.bytes) == (len(packets), sum(p[1] for p in packets))
    for other in results[1:]:
        assert_same_views(other, results[0])


def test_columns_agree_with_views() -> None:
    table = FlowTable()
    for i in range(0, 3000, 250):
        table.add_packets(_random_stream(3, 3000, 40)[i:i + 250])
    slots = table.live_slots()
    views = table.views(slots)
    cols = table.columns(slots)
    assert len(views) == len(slots) == len(table) > 20
    for i, v in enumerate(views):
        for name in ("flow_id", "proto", "port_a", "port_b", "pkts_a2b", "bytes_a2b",
                     "pkts_b2a", "bytes_b2a", "syn", "synack", "fin", "rst", "psh"):
            assert int(cols[name][i]) == getattr(v, name), name
        assert cols["first"][i] == v.first_epoch and cols["last"][i] == v.last_epoch
        for name in ("size_mean", "size_std", "iat_mean", "iat_std"):
            assert cols[name][i] == pytest.approx(getattr(v, name), rel=1e-12), name
        row = tuple(int(x) for x in cols["first_sizes"][i])
        assert row[:len(v.first_sizes)] == v.first_sizes
        assert all(x == 0 for x in row[len(v.first_sizes):])
    assert cols["first_sizes"].shape == (len(slots), FIRST_SIZES)
    # A subset, in any order, gives the same rows.
    pick = slots[::-3]
    sub = table.columns(pick)
    assert list(sub["flow_id"]) == [v.flow_id for v in table.views(pick)]
    assert table.views([]) == []


def test_slot_reuse_does_not_leak_old_counters() -> None:
    table = FlowTable(idle_timeout=1, initial_capacity=16)
    table.add_packets([pkt(0, LO, i, HI, 80, size=1000, flags=SYN) for i in range(1, 40)])
    table.expire(10)
    table.drain_finished()
    table.add_packets([pkt(20, HI, 80, LO, 7, size=60, flags=SYN | ACK)])
    v = only(table.live_views())
    assert (v.packets, v.bytes, v.syn, v.synack) == (1, 60, 0, 1)
    assert (v.addr_a, v.port_a) == (LO, 7)
    assert v.first_sizes == (-60,) and v.iat_mean == 0 and v.size_std == 0


# --- property: every packet is accounted exactly once ----------------------------------------


def _key_of(p: tuple) -> tuple:
    _, _, proto, src, sport, dst, dport, _ = p
    return (proto, frozenset([(src, sport), (dst, dport)]))


def _view_key(v: FlowView) -> tuple:
    return (v.proto, frozenset([(ip(v.addr_a), v.port_a), (ip(v.addr_b), v.port_b)]))


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 600), keys=st.integers(1, 40),
       batches=st.lists(st.integers(1, 200), min_size=1, max_size=20),
       expiries=st.lists(st.floats(-2.0, 30.0), max_size=20),
       max_flows=st.sampled_from([1, 3, 10, 1000]), idle=st.sampled_from([0.05, 1.0, 1e9]),
       active=st.sampled_from([0.5, 5.0, 1e9]), disorder=st.sampled_from([0.0, 0.1]))
def test_totals_survive_any_batching_expiry_and_eviction(seed: int, n: int, keys: int,
                                                         batches: list[int],
                                                         expiries: list[float],
                                                         max_flows: int, idle: float,
                                                         active: float,
                                                         disorder: float) -> None:
    packets = _random_stream(seed, n, keys, disorder)
    table = FlowTable(max_flows=max_flows, idle_timeout=idle, active_timeout=active)
    finished: list[FlowView] = []
    i = 0
    step = 0
    while i < len(packets):
        size = batches[step % len(batches)]
        table.add_packets(packets[i:i + size])
        i += size
        assert len(table) <= max_flows
        if step < len(expiries):
            table.expire(table.latest_ts + expiries[step])
        if step % 3 == 0:
            finished += table.drain_finished()
        step += 1
    live = table.live_views()
    finished += table.drain_finished()
    views = finished + live

    want_pkts: Counter = Counter()
    want_bytes: Counter = Counter()
    want_sent: Counter = Counter()  # (key, sender endpoint) -> bytes
    for p in packets:
        k = _key_of(p)
        want_pkts[k] += 1
        want_bytes[k] += p[1]
        want_sent[k, (p[3], p[4])] += p[1]
    got_pkts: Counter = Counter()
    got_bytes: Counter = Counter()
    got_sent: Counter = Counter()
    for v in views:
        k = _view_key(v)
        got_pkts[k] += v.packets
        got_bytes[k] += v.bytes
        got_sent[k, (ip(v.addr_a), v.port_a)] += v.bytes_a2b
        got_sent[k, (ip(v.addr_b), v.port_b)] += v.bytes_b2a
        assert v.packets >= 1 and v.first_epoch <= v.last_epoch
        assert len(v.first_sizes) == min(v.packets, FIRST_SIZES)
    assert got_pkts == want_pkts and got_bytes == want_bytes
    assert +got_sent == +want_sent
    assert (table.packets, table.bytes) == (len(packets), sum(p[1] for p in packets))
    assert table.flows_seen == len(views) == len({v.flow_id for v in views})
    assert len(finished) == table.expired + table.evicted
    assert all(v.end_reason in ("idle-timeout", "active-timeout", "evicted") for v in finished)
