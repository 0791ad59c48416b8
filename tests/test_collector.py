"""--collect: the real netmon command receiving NetFlow v5, v9 and IPFIX on loopback UDP.

Datagrams come from netmon.testing.nfexport (checked against the decoder in test_netflow.py
and against softflowd/nfdump in test_softflowd.py). Every 5-tuple's packets and bytes
must come out of --flows-out exactly as sent, from every version at once, with
malformed and truncated datagrams counted and dropped in between.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pytest

from netmon.netflow.decoder import NetflowDecoder
from netmon.testing.nfexport import Flow, ipfix_datagrams, v5_datagrams, v9_datagrams
from netmon.testing.ports import free_port
from tests.conftest import run_netmon
from tests.test_live import read_until, start_netmon

pytestmark = pytest.mark.live


def key5(proto: int, a: str, pa: int, b: str, pb: int) -> tuple:
    import ipaddress

    ends = sorted([(ipaddress.ip_address(a).packed, pa, a), (ipaddress.ip_address(b).packed,
                                                              pb, b)])
    return (proto, ends[0][2], ends[0][1], ends[1][2], ends[1][1])


def make_flows(now: float) -> tuple[list[Flow], list[Flow]]:
    """(IPv4 flows, IPv6 flows): request/response pairs of several kinds."""
    v4, v6 = [], []
    for i in range(120):
        client, server = f"10.1.{i // 200}.{i % 200 + 1}", "10.9.0.1"
        start = now - 20 + i * 0.01
        v4.append(Flow(client, server, 40000 + i, 443, 6, 10 + i % 7, 1200 + 13 * i,
                       start, start + 3, 0x1b))
        v4.append(Flow(server, client, 443, 40000 + i, 6, 20 + i % 5, 90_000 + 7 * i,
                       start + 0.001, start + 3, 0x1b))
    for i in range(60):
        v4.append(Flow("10.2.0.5", "10.0.0.53", 50000 + i, 53, 17, 1, 70, now - 5, now - 5))
    v4.append(Flow("10.3.0.1", "10.3.0.2", 0, 0, 1, 4, 336, now - 4, now - 1))
    for i in range(40):
        v6.append(Flow("fd00::10", f"fd00::{i + 100:x}", 33000 + i, 8080, 6, 8, 2000,
                       now - 9, now - 2, 0x13))
    return v4, v6


def expected_totals(flows: list[Flow]) -> dict[tuple, list[int]]:
    out: dict[tuple, list[int]] = {}
    for f in flows:
        acc = out.setdefault(key5(f.proto, f.src, f.sport, f.dst, f.dport), [0, 0])
        acc[0] += f.packets
        acc[1] += f.octets
    return out


def flows_out_totals(path: Path) -> tuple[dict[tuple, list[int]], list[dict]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    out: dict[tuple, list[int]] = {}
    for r in rows:
        acc = out.setdefault(key5(r["proto"], r["addr_a"], r["port_a"], r["addr_b"],
                                  r["port_b"]), [0, 0])
        acc[0] += r["pkts_a2b"] + r["pkts_b2a"]
        acc[1] += r["bytes_a2b"] + r["bytes_b2a"]
    return out, rows


def test_every_version_at_once_counts_exactly_and_survives_garbage(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    out = tmp_path / "flows.jsonl"
    proc = start_netmon("--json", "--collect", f"127.0.0.1:{port}", "--flows-out", str(out),
                        "--duration", "60")
    now = float(int(time.time()))
    v4, v6 = make_flows(now)
    good = (v5_datagrams(v4[:100], now=now)
            + v9_datagrams(v4[100:200] + v6[:20], now=now, source_id=7)
            + ipfix_datagrams(v4[200:] + v6[20:], now=now, domain=3))
    # IPFIX data before its template (the template comes later: buffered, then counted).
    late = ipfix_datagrams(v4[:10], now=now, domain=9, with_template=False)
    late_template = ipfix_datagrams(v4[:10], now=now, domain=9, seq_start=10)
    bad = [b"", b"\x00", b"\x00\x05\x00\x01" + bytes(10), b"\x00\x0a\xff\xff" + bytes(12),
           bytes(range(256)) * 3, good[0][:30], good[-1][:-7], b"\x00\x09" + good[5][2:40]]
    try:
        snap = read_until(proc, lambda s: s["sources"][0]["state"] == "running")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in late:
                s.sendto(d, ("127.0.0.1", port))
            for i, d in enumerate(good):
                s.sendto(d, ("127.0.0.1", port))
                if i < len(bad):
                    s.sendto(bad[i], ("127.0.0.1", port))
            for d in late_template:
                s.sendto(d, ("127.0.0.1", port))
        want_records = len(v4) + len(v6) + 20
        snap = read_until(proc, lambda s: s["sources"][0]["collector"]["records"]
                          >= want_records)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    col = snap["sources"][0]["collector"]
    assert col["records"] == want_records
    assert col["malformed"] == len(bad)  # (an empty UDP datagram arrives too)
    assert col["lost"] == 0 and col["unknown_dropped"] == 0
    assert col["exporters"] == 4  # v5 (domain 0), v9 source 7, IPFIX domains 3 and 9
    assert set(col["versions"]) == {"5", "9", "10"}
    got, rows = flows_out_totals(out)
    want = expected_totals(v4 + v6 + v4[:10] + v4[:10])
    # The exporters are four observation points: sum them per 5-tuple.
    assert got == want
    assert {r["observer"] for r in rows} == {"exporter 127.0.0.1", "exporter 127.0.0.1/7",
                                             "exporter 127.0.0.1/3", "exporter 127.0.0.1/9"}
    assert all(r["exported"] and r["cluster_id"] is not None for r in rows)
    # Both directions of a connection meet in one flow, the earlier sender as initiator.
    https = [r for r in rows if r["port_b"] == 443 and r["observer"] == "exporter 127.0.0.1"]
    assert https and all(r["pkts_a2b"] and r["pkts_b2a"] and r["addr_b"] == "10.9.0.1"
                         for r in https)


def test_port_in_use_is_one_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        proc = run_netmon("--headless", "--collect", f"127.0.0.1:{port}", "--duration", "1",
                          timeout=30)
    assert proc.returncode == 8
    assert proc.stderr.strip().splitlines()[-1] == (
        f"netmon: cannot listen on udp 127.0.0.1:{port}: the port is already in use "
        "(choose another, or stop what holds it)")


def test_bad_collect_address_is_a_usage_error() -> None:
    proc = run_netmon("--headless", "--collect", "nowhere:2055", timeout=30)
    assert proc.returncode == 2 and "invalid --collect 'nowhere:2055'" in proc.stderr


def test_records_and_packets_of_one_5_tuple_stay_apart() -> None:
    """A flow record and a captured packet of the same 5-tuple are different
    observation points: two flows, not one with mixed units."""
    from netmon.flows.table import FlowTable

    now = time.time()
    t = FlowTable()
    t.observer_id("live lo")
    exp = t.observer_id("exporter 10.0.0.1")
    dec = NetflowDecoder()
    [(_, recs)] = dec.decode(v5_datagrams([Flow("10.0.0.1", "10.0.0.2", 1000, 80, 6, 3, 300,
                                                 now - 2, now - 1)], now=now)[0],
                             "10.0.0.1", now)
    import numpy as np

    t.add_records(recs, np.full(len(recs), exp, dtype=np.uint16), now)
    t.add_packets([(now, 60, 6, bytes([10, 0, 0, 1]), 1000, bytes([10, 0, 0, 2]), 80, 0x02)])
    views = sorted(t.live_views(), key=lambda v: v.observer)
    assert [(v.observer, v.packets, v.exported) for v in views] == [
        ("exporter 10.0.0.1", 3, True), ("live lo", 1, False)]


def test_same_millisecond_records_still_find_the_initiator() -> None:
    """Exporters stamp both directions of short flows with one millisecond, in any
    order: the SYN-without-ACK side, or else the side not answering from the lower
    port, opens the flow (a scan of a high port included)."""
    import numpy as np

    from netmon.flows.table import FlowTable

    now = float(int(time.time()))
    t = FlowTable()
    t.observer_id("exporter 10.0.0.1")
    flows = [
        # a scan of port 50000 from port 40000: the answer (RST) comes from the higher port
        Flow("10.9.9.9", "10.0.0.5", 50000, 40000, 6, 1, 40, now - 1, now - 1, 0x14),
        Flow("10.0.0.5", "10.9.9.9", 40000, 50000, 6, 1, 44, now - 1, now - 1, 0x02),
        # a web request: both sides SYN|ACK, the server listed first
        Flow("10.9.9.9", "10.0.0.6", 80, 41000, 6, 5, 9000, now - 2, now - 1, 0x1b),
        Flow("10.0.0.6", "10.9.9.9", 41000, 80, 6, 4, 500, now - 2, now - 1, 0x1b),
    ]
    [(_, recs)] = NetflowDecoder().decode(v5_datagrams(flows, now=now)[0], "10.0.0.1", now)
    t.add_records(recs, np.zeros(len(recs), dtype=np.uint16), now)
    views = {v.port_b: v for v in t.live_views()}
    scan, web = views[50000], views[80]
    assert (scan.addr_a, scan.syn, scan.synack, scan.rst) == ("10.0.0.5", 1, 0, 1)
    assert (web.addr_a, web.pkts_a2b, web.bytes_b2a) == ("10.0.0.6", 4, 9000)


def test_datagrams_the_kernel_drops_count_as_shed() -> None:
    """Datagrams dropped by the kernel because netmon did not read them in time (its
    receive buffer full) show in the collector's stats as shed, never as nothing."""
    from netmon.sources.collector import CollectorSource

    src = CollectorSource("127.0.0.1", 0)
    try:
        assert src._sock is not None
        src._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # nobody reads it
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(300):
                s.sendto(b"x" * 1000, ("127.0.0.1", src.port))
        src.read_kernel_drops()
        st = src.stats()
        status = src.status()
    finally:
        src.stop()
    assert src.kernel_drops > 200  # a few fit in 4 KB (doubled by the kernel)
    assert st.shed == src.kernel_drops and dict(st.shed_reasons) == {"kernel": st.shed}
    assert f"{st.shed:,} shed" in st.summary()
    assert status.dropped == st.shed
    assert status.to_json()["collector"]["shed"] == st.shed
