"""Follow stream and packet export through the real engine's link: an Engine reading
01_http_espn.pcapng (all packets kept) answers ``follow`` with the text tshark's
``-z follow,tcp,ascii`` prints, and ``export_packets`` writes a pcapng that capinfos
and tshark read with the expected packet count."""

from __future__ import annotations

import os
import subprocess

from netmon.core.link import FlowQuery, PacketExportRequest
from netmon.core.values import PROTO_TCP, PROTO_UDP
from tests.conftest import captures_dir
from tests.test_engine_link import HTTP_CAPTURE, ask, running_engine  # noqa: F401 (fixture)
from tests.test_follow import as_tshark, tshark_follow


def tcp_stream_of(path: str, flow) -> int:
    """tshark's tcp.stream number of the flow's connection."""
    out = subprocess.run(
        ["tshark", "-r", path, "-Y", f"tcp.port == {flow.port_a} && tcp.port == "
         f"{flow.port_b} && ip.addr == {flow.addr_a} && ip.addr == {flow.addr_b}",
         "-T", "fields", "-e", "tcp.stream"],
        capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def test_follow_through_the_engine_equals_tshark_and_export_writes_a_pcapng(
        running_engine, tmp_path) -> None:  # noqa: F811
    _engine, link, snaps, _end = running_engine
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
