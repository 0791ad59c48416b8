"""Follow stream and packet export through the real engine's link: an Engine reading
01_http_espn.pcapng answers ``follow`` with the text tshark's ``-z follow,tcp,ascii``
prints for every flow whose packets are all kept (in memory: flows of up to 64 packets;
with --keep-packets: every flow), says how much is missing for the others, and
``export_packets`` writes a pcapng that capinfos and tshark read with the expected
packet count."""

from __future__ import annotations

import os
import subprocess

import pytest

from netmon.core.link import FlowQuery, PacketExportRequest
from netmon.core.settings import Settings
from netmon.core.values import PROTO_TCP, PROTO_UDP
from netmon.ingest.packetstore import FIRST, RECENT
from tests.conftest import captures_dir
from tests.test_engine_link import (  # noqa: F401 (fixture)
    HTTP_CAPTURE,
    ask,
    engine_on_pipe,
    running_engine,
)
from tests.test_follow import as_tshark, tshark_follow


def tcp_stream_of(path: str, flow) -> int:
    """tshark's tcp.stream number of the flow's connection."""
    out = subprocess.run(
        ["tshark", "-r", path, "-Y", f"tcp.port == {flow.port_a} && tcp.port == "
         f"{flow.port_b} && ip.addr == {flow.addr_a} && ip.addr == {flow.addr_b}",
         "-T", "fields", "-e", "tcp.stream"],
        capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


@pytest.fixture
def keeping_engine(tmp_path):
    """The same engine keeping every frame on disk (--keep-packets)."""
    yield from engine_on_pipe(Settings(read="-", tick=0.1,
                                       keep_packets=str(tmp_path.parent / f"{tmp_path.name}-keep")))


def test_follow_in_memory_equals_tshark_where_all_is_kept_and_counts_the_rest(
        running_engine) -> None:  # noqa: F811
    _engine, link, snaps, _end = running_engine
    snaps.wait_for(lambda s: s.totals.ip_packets == 956 and s.clusters)
    path = str(captures_dir() / HTTP_CAPTURE)
    flows = ask(link.query_flows, FlowQuery(filter="tcp and port 80", limit=1000)).flows
    whole = [f for f in flows if f.packets <= FIRST + RECENT]
    assert len(whole) >= 4
    for flow in sorted(whole, key=lambda f: -f.bytes)[:4]:
        stream = ask(link.follow, flow.flow_id)
        assert not stream.error and stream.packets_not_kept == 0
        assert as_tshark(stream.chunks) == tshark_follow(path, "tcp",
                                                         tcp_stream_of(path, flow))[1]
    big = max(flows, key=lambda f: f.packets)
    assert big.packets > FIRST + RECENT
    stream = ask(link.follow, big.flow_id)
    assert not stream.error and stream.packets_used == FIRST + RECENT
    assert stream.packets_not_kept == big.packets - FIRST - RECENT
    # The gap between the first and the recent packets is said, not glossed over.
    assert stream.missing_a2b + stream.missing_b2a > 0
    assert any(c.missing or c.packets for c in stream.chunks)


def test_follow_through_the_engine_equals_tshark_and_export_writes_a_pcapng(
        keeping_engine, tmp_path) -> None:
    _engine, link, snaps, _end = keeping_engine
    snaps.wait_for(lambda s: s.totals.ip_packets == 956 and s.clusters)
    path = str(captures_dir() / HTTP_CAPTURE)
    flows = ask(link.query_flows, FlowQuery(filter="tcp and port 80", limit=1000)).flows
    checked = 0
    for flow in sorted(flows, key=lambda f: -f.bytes)[:4]:
        stream = ask(link.follow, flow.flow_id)
        assert not stream.error and stream.flow.flow_id == flow.flow_id
        assert stream.packets_used == flow.packets and stream.packets_not_kept == 0
        nodes, expected = tshark_follow(path, "tcp", tcp_stream_of(path, flow))
        assert nodes[0] == f"{flow.addr_a}:{flow.port_a}"
        assert as_tshark(stream.chunks) == expected
        assert stream.bytes_a2b == sum(len(c.data) for c in stream.chunks if c.direction > 0)
        checked += 1
    assert checked == 4

    udp = ask(link.query_flows, FlowQuery(filter="udp", limit=1000)).flows
    assert udp
    dns = ask(link.follow, udp[0].flow_id)
    assert not dns.error and dns.chunks and all(c.data for c in dns.chunks)
    assert {c.direction for c in dns.chunks} <= {1, -1}

    # -- export: one flow, then a whole cluster
    flow = max(flows, key=lambda f: f.bytes)
    result = ask(link.export_packets, PacketExportRequest(str(tmp_path), flow_id=flow.flow_id))
    assert not result.error, result.error
    assert (result.packets, result.flows, result.not_kept) == (flow.packets, 1, 0)
    assert os.path.dirname(result.path) == str(tmp_path) and result.path.endswith(".pcapng")
    info = subprocess.run(["capinfos", "-c", "-M", result.path], capture_output=True,
                          text=True, check=True).stdout
    assert f"Number of packets:   {flow.packets}" in info
    count = subprocess.run(["tshark", "-r", result.path, "-T", "fields", "-e", "frame.number"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert len(count) == flow.packets
    members = ask(link.query_flows, FlowQuery(cluster_id=flow.cluster_id, limit=1000)).flows
    cluster = ask(link.export_packets, PacketExportRequest(str(tmp_path),
                                                          cluster_id=flow.cluster_id))
    assert not cluster.error
    assert cluster.packets == sum(f.packets for f in members) and cluster.not_kept == 0
    assert cluster.flows == len(members) and cluster.path != result.path
    tshark = subprocess.run(["tshark", "-r", cluster.path, "-T", "fields", "-e",
                             "frame.time_epoch"], capture_output=True, text=True, check=True)
    times = [float(t) for t in tshark.stdout.split()]
    assert len(times) == cluster.packets and times == sorted(times)

    # -- errors are one line, nothing written
    bad = ask(link.export_packets, PacketExportRequest(str(tmp_path / "nope"),
                                                       flow_id=flow.flow_id))
    assert "no such directory" in bad.error and not bad.path
    assert "no live flows" in ask(link.export_packets,
                                  PacketExportRequest(str(tmp_path), cluster_id=999)).error
    assert "has ended" in ask(link.follow, 10**9).error
    icmp = [f for f in ask(link.query_flows, FlowQuery(limit=1000)).flows
            if f.proto not in (PROTO_TCP, PROTO_UDP)]
    if icmp:
        assert "only TCP and UDP" in ask(link.follow, icmp[0].flow_id).error
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p)
                                                  for p in (result.path, cluster.path))
