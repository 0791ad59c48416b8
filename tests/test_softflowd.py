"""A real exporter: softflowd reads the shared captures and exports NetFlow v5, v9 and
IPFIX over loopback, to netmon --collect and to nfcapd (nfdump's collector) at once.

One softflowd run sends byte-identical datagrams to both collectors, so nfdump is an
independent second reading of the very same export: netmon's per-5-tuple packet and
byte totals must equal nfdump's, and the record count must equal what softflowd says
it exported. For the captures softflowd tracks fully, packets per 5-tuple must also
equal tshark's own flow table (flows5.tsv; bytes differ by design: NetFlow octets
exclude the link header, captures count frames). Beside a hostile sender's crafted
datagrams (issue 19), netmon must still lose nothing softflowd sent, and keep ticking.
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from netmon.testing.nfexport import crafted_shapes
from netmon.testing.ports import free_port
from tests.conftest import captures_dir
from tests.netflow_oracle import (
    flows5_totals,
    key5,
    need_nfdump,
    need_softflowd,
    nfcapd_collector,
    nfdump_totals_from,
    softflowd_run,
)
from tests.test_live import read_until, start_netmon

pytestmark = pytest.mark.live

CAPTURES = ("01_http_espn.pcapng", "03_ipv6_tls_reddit.pcap",
            "05_mixed_services_std_ports.pcap", "08_dns_edns_v4v6.pcap",
            "12_linux_sll_redis_lo.pcap")


def netmon_totals(path: Path, observer: str | None = None
                  ) -> tuple[dict[tuple, tuple[int, int]], list[dict]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    if observer is not None:
        rows = [r for r in rows if r["observer"] == observer]
    out: dict[tuple, tuple[int, int]] = {}
    for r in rows:
        k = key5(r["proto"], r["addr_a"], r["port_a"], r["addr_b"], r["port_b"])
        p, b = out.get(k, (0, 0))
        out[k] = (p + r["pkts_a2b"] + r["pkts_b2a"], b + r["bytes_a2b"] + r["bytes_b2a"])
    return out, rows


@pytest.mark.parametrize("version", ["5", "9", "10"])
def test_softflowd_export_matches_nfdump_and_tshark(version: str, tmp_path: Path) -> None:
    need_softflowd()
    need_nfdump()
    caps = captures_dir()
    port = free_port(__import__("socket").SOCK_DGRAM)
    out = tmp_path / "flows.jsonl"
    proc = start_netmon("--json", "--collect", f"127.0.0.1:{port}", "--flows-out", str(out),
                        "--duration", "120")
    runs = []
    try:
        read_until(proc, lambda s: s["sources"][0]["state"] == "running")
        with tempfile.TemporaryDirectory(prefix="nfcapd-") as nf:
            with nfcapd_collector(Path(nf)) as nf_port:
                for name in CAPTURES:
                    runs.append(softflowd_run(caps / name, [port, nf_port], version))
            oracle = nfdump_totals_from(Path(nf))
        sent = sum(r.records for r in runs)
        snap = read_until(proc, lambda s: s["sources"][0]["collector"]["records"] >= sent)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    col = snap["sources"][0]["collector"]
    assert col["records"] == sent and col["malformed"] == 0 and col["unknown_dropped"] == 0
    assert col["lost"] == 0, col
    assert sent > 100
    got, rows = netmon_totals(out)
    assert got == oracle
    assert all(r["exported"] and r["observer"] == "exporter 127.0.0.1" for r in rows)


def test_softflowd_packets_equal_tsharks_flow_table(tmp_path: Path) -> None:
    """IPFIX of the IPv6 capture: every 5-tuple's packets as tshark counts them."""
    need_softflowd()
    cap = captures_dir() / "03_ipv6_tls_reddit.pcap"
    port = free_port(__import__("socket").SOCK_DGRAM)
    out = tmp_path / "flows.jsonl"
    proc = start_netmon("--json", "--collect", f"127.0.0.1:{port}", "--flows-out", str(out),
                        "--duration", "120")
    try:
        read_until(proc, lambda s: s["sources"][0]["state"] == "running")
        run = softflowd_run(cap, port, "10")
        read_until(proc, lambda s: s["sources"][0]["collector"]["records"] >= run.records)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    got, rows = netmon_totals(out)
    tsv = cap.with_name(cap.name + ".flows5.tsv")
    tshark = flows5_totals(tsv)
    assert {k: p for k, (p, _) in got.items()} == {k: p for k, (p, _) in tshark.items()}
    # Octets are IP bytes: frame bytes less the 14-byte Ethernet header per packet.
    assert {k: b for k, (_, b) in got.items()} == {k: b - 14 * p for k, (p, b) in tshark.items()}
    # Times: softflowd sends uptime offsets and its init time in options data; flows
    # start and end when tshark says, to the exporter's millisecond.
    span: dict[tuple, list[float]] = {}
    for r in rows:
        k = key5(r["proto"], r["addr_a"], r["port_a"], r["addr_b"], r["port_b"])
        s = span.setdefault(k, [r["first_epoch"], r["last_epoch"]])
        s[0], s[1] = min(s[0], r["first_epoch"]), max(s[1], r["last_epoch"])
    lines = tsv.read_text().splitlines()
    head = lines[0].split("\t")
    for line in lines[1:]:
        row = dict(zip(head, line.split("\t"), strict=True))
        k = key5(int(row["proto"]), row["addr_a"], int(row["port_a"] or 0), row["addr_b"],
                 int(row["port_b"] or 0))
        assert abs(span[k][0] - float(row["first_epoch"])) < 0.002, k
        assert abs(span[k][1] - float(row["last_epoch"])) < 0.002, k


def crafted_load(port: int, count: int, sent: list[int]) -> None:
    """Send ``count`` crafted datagrams (the shapes of a few datagrams, in turn) from
    127.0.0.2 to ``port``, 100 a second (~40 Mbit/s: most are 65,507 bytes)."""
    shapes = [d for ds in crafted_shapes(int(time.time())).values() if len(ds) <= 41
              for d in ds]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        for i in range(count):
            s.sendto(shapes[i % len(shapes)], ("127.0.0.1", port))
            sent[0] += 1
            time.sleep(0.01)


def test_crafted_load_beside_softflowd_loses_nothing_softflowd_sent(tmp_path: Path) -> None:
    """softflowd's IPFIX export of a capture, sent while another sender floods the
    same port with crafted datagrams: netmon's totals of softflowd's flows equal
    nfdump's (which got softflowd's datagrams only), nothing was dropped by the
    kernel, the crafted ones were cut and counted as shed, and the snapshots kept
    coming at the tick rate throughout."""
    need_softflowd()
    need_nfdump()
    port = free_port(socket.SOCK_DGRAM)
    out = tmp_path / "flows.jsonl"
    proc = start_netmon("--json", "--collect", f"127.0.0.1:{port}", "--flows-out", str(out),
                        "--duration", "120", "--tick", "0.5")
    snaps: list[dict] = []
    sent = [0]
    try:
        read_until(proc, lambda s: s["sources"][0]["state"] == "running")
        load = threading.Thread(target=crafted_load, args=(port, 400, sent))
        with tempfile.TemporaryDirectory(prefix="nfcapd-") as nf:
            with nfcapd_collector(Path(nf)) as nf_port:
                load.start()
                time.sleep(1.0)  # the load first: softflowd's datagrams arrive amid it
                run = softflowd_run(captures_dir() / "05_mixed_services_std_ports.pcap",
                                    [port, nf_port], "10")
                load.join(timeout=30)
            oracle = nfdump_totals_from(Path(nf))
        want = run.datagrams + sent[0]
        snap = read_until(proc, lambda s: snaps.append(s) is None
                          and s["sources"][0]["collector"]["datagrams"] >= want, 30)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert sent[0] == 400 and run.records > 50
    col = snap["sources"][0]["collector"]
    assert col["datagrams"] == want and "kernel" not in col["shed_reasons"]
    assert col["shed"] >= sent[0] // 10 and col["exporters"] >= 2  # (one shape in ~5 is cut)
    got, _ = netmon_totals(out, "exporter 127.0.0.1")
    assert got == oracle
    # Snapshots every 0.5 s of netmon's clock, the whole time (the load took ~4 s).
    times = [s["elapsed"] for s in snaps]
    assert times[-1] - times[0] > 3.5
    assert max(b - a for a, b in itertools.pairwise(times)) < 1.5, times
