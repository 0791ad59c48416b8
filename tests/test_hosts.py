"""Hosts view: per-source aggregation against a brute-force count, and host groups
that separate scanners, chatty clients, bulk clients and quiet hosts, for captured
flows and listener connections alike."""

from __future__ import annotations

import random
import socket
from collections import defaultdict

import numpy as np
import pytest

from netmon.cluster import hosts
from netmon.cluster.hosts import cluster_hosts, host_features, host_stats, host_views
from netmon.core.values import ConnectionRecord
from netmon.flows.table import FlowTable

NOW = 1_700_000_000.0
SERVER = "192.168.1.1"


def ip(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def conn(host: str, sport: int, dport: int, start: float, dur: float, nbytes: int,
         server: str = SERVER) -> ConnectionRecord:
    return ConnectionRecord(start, start + dur, ip(host), sport, ip(server), dport, nbytes, 0,
                            1 if nbytes else 0, 0, "client-closed", "http" if nbytes else "none")


def population(rng: random.Random) -> tuple[list[ConnectionRecord], dict[str, str]]:
    """Listener-style records of known kinds of host: address -> kind."""
    recs: list[ConnectionRecord] = []
    kind: dict[str, str] = {}
    for h in range(2):  # scanners: hundreds of ports, empty connections
        addr = f"10.0.0.{h + 1}"
        kind[addr] = "scanner"
        for p in range(300):
            recs.append(conn(addr, 40000 + p, 1 + p * 7 + h, NOW - 30 + p * 0.05, 0.001, 0))
    for h in range(6):  # chatty: a request every ~0.3 s to one port
        addr = f"10.0.1.{h + 1}"
        kind[addr] = "chatty"
        for i in range(150):
            recs.append(conn(addr, 30000 + i, 80, NOW - 50 + i * 0.3, 0.05,
                             rng.randint(100, 400)))
    for h in range(4):  # bulk: few, long, many megabytes
        addr = f"10.0.2.{h + 1}"
        kind[addr] = "bulk"
        for i in range(3):
            recs.append(conn(addr, 20000 + i, 443, NOW - 45 + i * 12, 10.0,
                             rng.randint(2_000_000, 9_000_000)))
    for h in range(25):  # quiet: one or two small sessions
        addr = f"10.0.3.{h + 1}"
        kind[addr] = "quiet"
        for i in range(1 + h % 2):
            recs.append(conn(addr, 10000 + i, 22, NOW - 20 - 5 * i, 2.0, rng.randint(500, 5000)))
    rng.shuffle(recs)
    return recs, kind


def table_of(records: list[ConnectionRecord]) -> FlowTable:
    table = FlowTable(idle_timeout=300)
    table.add_connections(records)
    return table


def test_aggregates_match_a_brute_force_count() -> None:
    rng = random.Random(3)
    table = FlowTable(idle_timeout=120)
    recs = []
    for i in range(400):
        host = f"10.9.{rng.randint(0, 3)}.{rng.randint(1, 9)}"
        server = f"172.16.0.{rng.randint(1, 5)}"
        start = NOW - rng.uniform(0, 110)
        recs.append(conn(host, 1024 + i, rng.choice([22, 80, 443, 8080]), start,
                         rng.uniform(0, 10), rng.randint(0, 10_000), server=server))
    table.add_connections(recs)
    # Captured packets from some of the same hosts join the same aggregation.
    packets = [(NOW - 5 + k * 0.01, 100, 17, ip("10.9.0.1"), 5353 + k % 3, ip("224.0.0.251"),
                5353, 0) for k in range(30)]
    table.add_packets(packets)

    expect: dict[str, dict] = defaultdict(lambda: {"flows": 0, "recent": 0, "ports": set(),
                                                   "peers": set(), "out": 0, "durs": []})
    for r in recs:
        e = expect[socket.inet_ntop(socket.AF_INET, r.peer)]
        e["flows"] += 1
        e["recent"] += r.start >= NOW - 60
        e["ports"].add(r.local_port)
        e["peers"].add(r.local)
        e["out"] += r.bytes_in
        e["durs"].append(r.end - r.start)
    e = expect["10.9.0.1"]
    for _ in range(3):  # three source ports
        e["flows"] += 1
        e["recent"] += 1
        e["ports"].add(5353)
        e["peers"].add(ip("224.0.0.251"))
        e["out"] += 10 * 100
        e["durs"].append(0.27)

    stats = host_stats(table, NOW, window=60)
    assert sorted(stats.addr) == sorted(expect)
    for i, addr in enumerate(stats.addr):
        e = expect[addr]
        assert stats.flows[i] == e["flows"], addr
        assert stats.conns_per_min[i] == pytest.approx(e["recent"]), addr
        assert stats.ports[i] == len(e["ports"]), addr
        assert stats.peers[i] == len(e["peers"]), addr
        assert stats.bytes_out[i] == e["out"], addr
        assert stats.bytes_in[i] == 0
        assert stats.dur_mean[i] == pytest.approx(np.mean(e["durs"]), abs=1e-6), addr
        assert stats.dur_std[i] == pytest.approx(np.std(e["durs"]), abs=1e-5), addr
        assert stats.dur_max[i] == pytest.approx(max(e["durs"]), abs=1e-6), addr


def test_per_minute_uses_the_idle_timeout_when_shorter() -> None:
    table = FlowTable(idle_timeout=20)
    table.add_connections([conn("10.0.0.1", 1000 + i, 80, NOW - 15 + i, 0.1, 10)
                           for i in range(10)])
    stats = host_stats(table, NOW)
    assert stats.conns_per_min[0] == pytest.approx(10 * 60 / 20)


def test_groups_separate_scanners_chatty_bulk_and_quiet_hosts() -> None:
    recs, kind = population(random.Random(7))
    views = host_views(table_of(recs), NOW, top=1000)
    assert {v.addr for v in views} == set(kind)
    by_cluster: dict[int, set[str]] = defaultdict(set)
    for v in views:
        assert v.label == kind[v.addr], (v.addr, v.label)
        by_cluster[v.cluster_id].add(kind[v.addr])
    assert all(len(kinds) == 1 for kinds in by_cluster.values())  # purity 1
    ids = {k: {v.cluster_id for v in views if kind[v.addr] == k} for k in set(kind.values())}
    assert all(len(c) == 1 for c in ids.values())  # each kind one group
    order = sorted(ids, key=lambda k: next(iter(ids[k])))
    assert order == ["scanner", "bulk", "chatty", "quiet"]  # ids follow the label order


def test_captured_port_scan_is_a_scanner() -> None:
    table = FlowTable()
    syns = [(NOW - 10 + p * 0.001, 74, 6, ip("10.6.6.6"), 55555, ip(SERVER), p, 0x02)
            for p in range(1, 1001)]
    rsts = [(NOW - 10 + p * 0.001 + 1e-4, 60, 6, ip(SERVER), p, ip("10.6.6.6"), 55555, 0x14)
            for p in range(1, 1001)]
    web = [(NOW - 5 + k * 0.01, 1500, 6, ip("10.7.7.7"), 40000, ip(SERVER), 443, 0x10)
           for k in range(200)]
    table.add_packets(sorted(syns + rsts + web))
    views = {v.addr: v for v in host_views(table, NOW)}
    assert views["10.6.6.6"].label == "scanner" and views["10.6.6.6"].ports == 1000
    assert views["10.7.7.7"].label == "bulk"
    assert views["10.6.6.6"].cluster_id != views["10.7.7.7"].cluster_id


def test_top_hosts_still_show_every_group() -> None:
    recs, kind = population(random.Random(11))
    views = host_views(table_of(recs), NOW, top=3)
    assert {v.label for v in views} == set(kind.values())
    assert [v.flows for v in views[:3]] == sorted((v.flows for v in views[:3]), reverse=True)


def test_more_hosts_than_are_fitted_join_the_nearest_group(monkeypatch) -> None:
    monkeypatch.setattr(hosts, "MAX_FIT", 8)
    recs, kind = population(random.Random(5))
    stats = host_stats(table_of(recs), NOW)
    ids, labels = cluster_hosts(host_features(stats), stats.flows.astype(float))
    assert len(ids) == len(stats) and ids.min() >= 1 and ids.max() == len(labels)
    for i, addr in enumerate(stats.addr):
        if kind[addr] in ("scanner", "bulk"):  # far from the rest whatever was fitted
            assert labels[ids[i] - 1] == kind[addr]


def test_ipv6_hosts_and_empty_tables() -> None:
    assert host_views(FlowTable(), NOW) == ()
    table = table_of([conn("2001:db8::5", 1000, 80, NOW - 1, 0.1, 100, server="2001:db8::1")])
    (view,) = host_views(table, NOW)
    assert view.addr == "2001:db8::5" and view.flows == 1 and view.label == "quiet"
    assert view.to_json()["addr"] == "2001:db8::5"


def test_pure_modules_load_neither_twisted_nor_textual() -> None:
    from tests.test_layering import loaded_after_import

    loaded = loaded_after_import(["netmon.cluster.hosts", "netmon.sources.firstbytes"])
    assert not {"twisted", "textual", "sklearn"} & loaded  # sklearn only when clustering
