"""Clustering inside the running engine: clusters in --json snapshots, every flow in
--flows-out carrying its cluster, --no-ports, and --reproducible replays."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tests.conftest import captures_dir, run_netmon


def replay(tmp_path: Path, name: str, *extra: str) -> tuple[dict, list[dict]]:
    out = tmp_path / f"{name}.jsonl"
    proc = run_netmon("--json", "-r", str(captures_dir() / name), "--flows-out", str(out),
                      *extra)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    final = json.loads(proc.stdout.splitlines()[-1])
    return final, [json.loads(line) for line in out.read_text().splitlines()]


def test_scan_capture_is_one_labelled_cluster_and_every_flow_is_clustered(
        tmp_path: Path) -> None:
    final, flows = replay(tmp_path, "06_nmap_synscan.pcapng")
    assert all(f["cluster_id"] is not None and f["cluster_label"] for f in flows)
    by_cluster = Counter(f["cluster_label"] for f in flows)
    label, count = by_cluster.most_common(1)[0]
    assert "SYN-only probes" in label
    assert count >= 0.95 * len(flows)
    assert final["clusters"], "the final snapshot lists clusters"
    top = max(final["clusters"], key=lambda c: c["flows"])
    assert {"id", "label", "flows", "hosts", "pkt_rate", "byte_rate", "share", "top_ports",
            "top_hosts", "history", "outliers", "new"} <= set(top)
    assert "SYN-only probes" in top["label"] and top["hosts"] == 2


def test_dns_and_http_separate(tmp_path: Path) -> None:
    _, flows = replay(tmp_path, "01_http_espn.pcapng")
    dns = {f["cluster_id"] for f in flows if f["proto"] == 17}
    http = {f["cluster_id"] for f in flows if f["proto"] == 6}
    assert dns and http and not dns & http
    assert all("UDP/53" in f["cluster_label"] for f in flows if f["proto"] == 17)


def test_no_ports_still_clusters_by_behaviour(tmp_path: Path) -> None:
    _, flows = replay(tmp_path, "06_nmap_synscan.pcapng", "--no-ports")
    label, count = Counter(f["cluster_label"] for f in flows).most_common(1)[0]
    assert "SYN-only probes" in label and count >= 0.95 * len(flows)


def test_reproducible_replay_gives_identical_clusters(tmp_path: Path) -> None:
    name = "04_mixed_lan_android_1kxun.pcap"
    runs = []
    for i in range(2):
        sub = tmp_path / str(i)
        sub.mkdir()
        _, flows = replay(sub, name, "--reproducible")
        runs.append(sorted((f["flow_id"], f["cluster_id"], f["cluster_label"]) for f in flows))
    assert runs[0] == runs[1]
    assert len({c for _, c, _ in runs[0]}) >= 3


def test_no_cluster_leaves_flows_unclustered(tmp_path: Path) -> None:
    final, flows = replay(tmp_path, "01_http_espn.pcapng", "--no-cluster")
    assert final["clusters"] == []
    assert all(f["cluster_id"] is None for f in flows)
