"""Cluster rates that add up: every packet counts once, into its flow's cluster (short
and ended flows too) or into the row of traffic in no cluster, and the rows sum to the
header's rate tick by tick (issue: numbers you can trust on every screen)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from netmon.cluster.stats import ClusterStats
from netmon.flows.table import FlowTable
from netmon.testing.replay import counted_batches
from netmon.testing.synth import synthetic_pcap
from tests.conftest import captures_dir, run_netmon


def placed(ids: np.ndarray) -> np.ndarray:
    """The test's clusterer: even flows in 0, odd in 1, every fifth in none."""
    return np.where(ids % 5 == 0, -1, ids % 2)


def test_every_packet_counts_once_in_a_cluster_or_as_unclustered(tmp_path: Path) -> None:
    src = str(tmp_path / "in.pcap")
    synthetic_pcap(src, 6000, 300, seed=7)
    # A small table: flows are evicted (end) all the time, some before any cluster
    # took them, as short flows do between two clustering jobs.
    table = FlowTable(max_flows=40, idle_timeout=1e9, active_timeout=1e9)
    stats = ClusterStats(table)
    table.on_finish = stats.ending
    labels = {0: "even", 1: "odd"}
    by_flow: dict[int, int] = {}
    in_clusters = unclustered = 0
    for i, (_batch, fid, _a2b, _seq) in enumerate(counted_batches(src, 24 << 10, table)):
        for f, n in zip(*np.unique(fid, return_counts=True), strict=True):
            by_flow[int(f)] = by_flow.get(int(f), 0) + int(n)
        if i % 2:
            continue  # two batches per tick: flows start and end between ticks
        stats.mark()
        # The job: live flows get their clusters, and so do the flows that ended.
        live = table.live_slots()
        table.cluster[live] = placed(table.flow_id[live])
        for cols, _keys, _reason in table.take_finished():
            stats.ended_clustered(cols["flow_id"], placed(cols["flow_id"]))
        views = stats.views(1.0, labels, set(), 1.0)
        got = sum(v.pkt_rate for v in views)
        pk, _by, _flows, _ended = stats.unclustered
        # Each tick: the rows and the unclustered row hold what the table counted up
        # to the mark (packets of flows ended after it count in the next tick).
        in_clusters += got
        unclustered += pk
        assert {v.cluster_id for v in views} <= {0, 1}
    table.end_live()
    for cols, _keys, _reason in table.take_finished():
        stats.ended_clustered(cols["flow_id"], placed(cols["flow_id"]))
    views = stats.views(1.0, labels, set(), 1.0)
    in_clusters += sum(v.pkt_rate for v in views)
    unclustered += stats.unclustered[0]
    assert table.packets == sum(by_flow.values())
    assert table.evicted > 100  # most flows ended mid-run
    assert in_clusters + unclustered == table.packets  # every packet once
    assert unclustered == sum(n for f, n in by_flow.items() if f % 5 == 0)


def ticks(capture: str) -> list[dict]:
    proc = run_netmon("--json", "-r", str(captures_dir() / capture), "--speed", "1")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_cluster_rows_add_up_to_the_header_on_a_scan_and_dns_at_capture_speed() -> None:
    for capture in ("06_nmap_synscan.pcapng", "08_dns_edns_v4v6.pcap"):
        snaps = ticks(capture)
        assert len(snaps) >= 10
        clustered_ticks = 0
        for s in snaps:
            if s["elapsed"] < 1.0:
                continue
            rows = sum(c["pkt_rate"] for c in s["clusters"])
            total = rows + s["unclustered"]["pkt_rate"]
            assert abs(total - s["pkt_rate"]) <= 0.05 * s["pkt_rate"] + 0.2, (capture, s)
            if s["clusters"] and s["pkt_rate"] > 0:
                # Once the clusterer is warm, the short flows' packets are in their
                # clusters' rates, not left out.
                assert rows >= 0.95 * s["pkt_rate"] - 0.2, (capture, s)
                clustered_ticks += 1
        assert clustered_ticks >= 3, capture


def test_ended_counts_go_to_the_figures_and_clusters_they_belong_to() -> None:
    from netmon.cluster.endedcounts import EndedCounts

    e = EndedCounts()
    ids = np.array([1, 2, 3])
    # Flow 1 placed in 7; flows 2 and 3 ended before any cluster took them.
    e.add(ids, np.array([7, -1, -1]), e.gen, np.array([5, 4, 3]), np.array([50, 40, 30]))
    e.add(ids, np.array([7, -1, -1]), e.gen + 1, np.array([1, 2, 0]),
          np.array([10, 20, 0]))
    e.clustered(np.array([2]), np.array([8]))  # the job placed flow 2, not flow 3
    assert e.take() == {7: [5, 50], 8: [4, 40], -1: [3, 30]}  # flow 3 was due: none
    e.clustered(np.array([3]), np.array([9]))  # too late for flow 3: already counted
    assert e.take() == {7: [1, 10], 8: [2, 20]}
    assert e.take() == {}


def tsv_flows(path: Path) -> int:
    """Conversations of a capture's flows5.tsv, less the keys tshark gives non-first
    IP fragments (UDP/TCP with ports 0 and 0): netmon counts those in their
    datagram's flow, as tshark's conversation table does (captures README)."""
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    return sum(1 for r in rows if not (r[0] in ("6", "17") and r[2] == r[4] == "0"))


def test_a_finished_replay_lists_every_flow_of_the_file_with_its_cluster() -> None:
    names = sorted(p.name for p in captures_dir().iterdir()
                   if p.suffix in (".pcap", ".pcapng"))
    assert len(names) >= 15
    for name in names:
        proc = run_netmon("--json", "-r", str(captures_dir() / name))
        assert proc.returncode == 0, proc.stderr
        final = json.loads(proc.stdout.splitlines()[-1])
        assert final["finished"]
        listed = sum(c["flows_total"] for c in final["clusters"])
        expected = tsv_flows(captures_dir() / f"{name}.flows5.tsv")
        assert listed + final["unclustered"]["flows_total"] == expected, name
        assert all(c["flows_total"] >= c["flows"] for c in final["clusters"])
        if expected >= 100:  # clustered, all of them
            assert final["unclustered"]["flows_total"] == 0, name
        if name.startswith("04_"):  # 29 live at the end: the ended ones are listed too
            assert sum(c["flows"] for c in final["clusters"]) < listed / 2
        # On the capture's clock: the rates are the whole file's averages over the time
        # it spans (jumps between merged traces left out), and add up.
        assert final["clock"] == "capture", name
        span = capture_span(captures_dir() / name)
        assert 0 < final["elapsed"] <= span + 1e-3, name
        if span < 3600:  # one trace: its whole span
            assert final["elapsed"] > span - 1e-3, name
        assert final["averaged"], name
        # (elapsed is rounded to the millisecond in JSON: a 4 ms capture's 0.5 ms)
        slack = 0.0006 * final["pkt_rate"] + 0.01 * final["ip_packets"] + 0.01
        assert abs(final["pkt_rate"] * final["elapsed"] - final["ip_packets"]) <= slack, name
        in_rows = sum(c["packets"] for c in final["clusters"])
        rows_rate = sum(c["pkt_rate"] for c in final["clusters"])
        assert abs(rows_rate * final["elapsed"] - in_rows) <= slack, name
        if not final["unclustered"]["flows_total"]:
            assert in_rows <= final["ip_packets"], name  # tunnels' outer frames once
            assert in_rows >= 0.95 * final["ip_packets"], name
        assert final["history_times"][-1] == pytest.approx(final["elapsed"], abs=1e-3)


def capture_span(path: Path) -> float:
    """Last minus first packet time, from the capture's flows5.tsv oracle."""
    lines = Path(f"{path}.flows5.tsv").read_text().splitlines()
    head, rows = lines[0].split("\t"), [line.split("\t") for line in lines[1:]]
    first, last = head.index("first_epoch"), head.index("last_epoch")
    return max(float(r[last]) for r in rows) - min(float(r[first]) for r in rows)
