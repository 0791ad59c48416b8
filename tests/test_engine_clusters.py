"""Clustering inside the running engine: clusters in --json snapshots, every flow in
--flows-out carrying its cluster, --no-ports, and --reproducible replays."""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ROOT, captures_dir, run_netmon


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


def _udp_capture(path: Path, flows: int, spread: float) -> int:
    """``flows`` UDP flows of 3 packets each, started over ``spread`` seconds of capture
    time; returns the packet count."""
    from netmon.ingest.linktypes import LINKTYPE_ETHERNET
    from netmon.ingest.pcapwrite import PcapWriter
    from netmon.testing.frames import ethernet, ipv4, udp

    start = 1_700_000_000.0
    with path.open("wb") as fh:
        w = PcapWriter(fh, LINKTYPE_ETHERNET)
        for i in range(flows):
            for k in range(3):
                frame = ethernet(ipv4("10.0.0.1", "10.0.0.2", 17,
                                      udp(20000 + i, 53, b"q" * (20 + k))), 0x0800)
                w.write(start + i * spread / flows + k * 0.001, frame)
    return flows * 3


@pytest.mark.parametrize("how", [
    {},  # a fast replay: the first job is the last one, run at shutdown
    {"reproducible": True},  # jobs at capture ticks, waited for mid-run
    {"speed": 10.0, "tick": 0.1},  # paced: the failure arrives as a Deferred's errback
])
def test_a_bug_in_the_cluster_job_is_an_internal_error_not_a_silent_0(
        tmp_path: Path, how: dict) -> None:
    """A clusterer that raises (seed -1 reaches numpy only past the CLI's range check,
    so it stands for any programming error) keeps counting and writing flows, then
    ends the run with one line and exit code 1 instead of 0."""
    from netmon.core.errors import EXIT_INTERNAL
    from netmon.core.settings import Settings
    from netmon.engine.engine import Engine
    from netmon.sources.files import FileSource

    pcap, out = tmp_path / "t.pcap", tmp_path / "flows.jsonl"
    packets = _udp_capture(pcap, 40, 6.0)
    snaps: list = []
    engine = Engine(Settings(read=str(pcap), seed=-1, idle_timeout=1.0, flows_out=str(out),
                             **how), [FileSource(str(pcap), speed=how.get("speed"))],
                    snaps.append)
    engine.start()
    assert engine.join(60)
    err = io.StringIO()
    assert engine.result.report(str(out), err) == EXIT_INTERNAL == 1
    lines = err.getvalue().splitlines()
    assert lines[-1].startswith("netmon: internal error: clustering failed: ValueError:")
    assert not any("warning" in line for line in lines), lines  # said once, as the error
    assert snaps[-1].totals.packets == packets
    assert any("clustering failed" in w for w in snaps[-1].warnings)  # the screen says it
    flows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(flows) == 40 and all(f["cluster_id"] is None for f in flows)


def test_the_cli_reports_a_cluster_job_bug_with_exit_1(tmp_path: Path) -> None:
    """The same through the real command: a clusterer that cannot be built (no
    scikit-learn on the path) is a bug, not a silent success."""
    pcap = tmp_path / "t.pcap"
    _udp_capture(pcap, 10, 0.01)
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sklearn").mkdir()
    (blocker / "sklearn" / "__init__.py").write_text("raise ImportError('sklearn blocked')\n")
    env = {"PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}"}
    proc = run_netmon("--headless", "-r", str(pcap), env=env)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("netmon: internal error: clustering "
                                                   "failed: ImportError: sklearn blocked")


@pytest.mark.parametrize("name", ["02_tls_firefox.pcap", "15_quic_firefox_google.pcap"])
def test_a_capture_of_one_flow_gets_a_cluster(tmp_path: Path, name: str) -> None:
    final, flows = replay(tmp_path, name)
    assert len(flows) == 1 and flows[0]["cluster_id"] is not None and flows[0]["cluster_label"]
    assert [c["id"] for c in final["clusters"]] == [flows[0]["cluster_id"]]
    assert final["clusters"][0]["label"] == flows[0]["cluster_label"]


def test_labels_are_unique_on_a_real_capture_replay(tmp_path: Path) -> None:
    """A LAN capture with many look-alike clusters (HTTP on port 80 of several shapes):
    the final snapshot never shows one label twice, and in --flows-out one label
    always means one cluster; none is empty."""
    final, flows = replay(tmp_path, "04_mixed_lan_android_1kxun.pcap")
    shown = [c["label"] for c in final["clusters"]]
    assert len(shown) >= 2 and len(set(shown)) == len(shown) and all(shown), shown
    by_label: dict[str, set[int]] = {}
    for f in flows:
        assert f["cluster_id"] is not None and f["cluster_label"], f
        by_label.setdefault(f["cluster_label"], set()).add(f["cluster_id"])
    assert all(len(ids) == 1 for ids in by_label.values()), by_label
    assert any(" · " in label for label in by_label), by_label  # look-alikes told apart
