"""The on-disk ring remembers each flow's cluster: ``netmon packets DIR --cluster ID``.

Pure parts (the ``.clus`` lines, carried across segments, read back from untrusted
files) and the whole path: a replay with ``--keep-packets`` and ``--flows-out``, whose
flow records say which cluster each flow ended in, against what the CLI exports.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np

from netmon.core.errors import EXIT_USAGE
from netmon.flows.table import FlowTable
from netmon.ingest.diskclusters import ClusterNote, Memberships, read_clusters
from netmon.ingest.diskindex import DiskReader, list_segments
from netmon.ingest.diskring import DiskRing
from netmon.testing.replay import counted_batches
from netmon.testing.synth import synthetic_pcap
from tests.conftest import captures_dir, run_netmon
from tests.test_diskring import HTTP_CAPTURE, TSHARK, dir_bytes

#: 197 flows of a LAN (DNS, SSDP, DHCP, NetBIOS, HTTP apps): a dozen clusters.
MIXED_CAPTURE = "04_mixed_lan_android_1kxun.pcap"


def note(flows: list[int], clusters: list[int], labels: dict[int, str]) -> ClusterNote:
    return ClusterNote(np.array(flows), np.array(clusters), labels)


def test_lines_carry_labels_once_and_only_flows_on_disk(tmp_path: Path) -> None:
    m = Memberships()
    present = {1: 1, 2: 1, 3: 1}
    first = m.note(note([1, 2, 9], [5, 6, 5], {5: "web", 6: "dns"}), present)
    rec = json.loads(first)
    assert rec == {"flow": [1, 2], "cluster": [5, 6], "labels": {"5": "web", "6": "dns"}}
    # Same labels again: not repeated; a renamed cluster is written anew.
    again = m.note(note([3], [5], {5: "web", 6: "dns"}), present)
    assert json.loads(again)["labels"] == {}
    renamed = m.note(note([3], [5], {5: "web · example.org"}), present)
    assert json.loads(renamed)["labels"] == {"5": "web · example.org"}
    # Flow 9 has nothing on disk yet: its line comes with its packets, in the segment
    # that gets them, as do a flow's clusters in every later segment.
    m.opened()
    joined = m.joined([9, 2, 8])
    assert json.loads(joined) == {"flow": [9, 2], "cluster": [5, 6],
                                  "labels": {"5": "web · example.org", "6": "dns"}}
    # An ended flow's last word is written, then it is forgotten (bounded memory).
    last = m.note(ClusterNote(np.array([2]), np.array([7]), {7: "x"}, ended=True), present)
    assert json.loads(last) == {"flow": [2], "cluster": [7], "labels": {"7": "x"}}
    assert m.cluster == {1: 5, 3: 5, 9: 5} and m.joined([2]) == b""
    a, b = tmp_path / "a.clus", tmp_path / "b.clus"
    a.write_bytes(first + again + renamed)
    b.write_bytes(joined + last)
    cluster, labels = read_clusters([str(a), str(b), str(tmp_path / "gone.clus")])
    assert cluster == {1: 5, 2: 7, 3: 5, 9: 5}
    assert labels == {5: "web · example.org", 6: "dns", 7: "x"}


def test_hostile_or_cut_lines_are_skipped_and_labels_made_safe(tmp_path: Path) -> None:
    path = tmp_path / "x.clus"
    good = (b'{"flow":[1],"cluster":[2],"labels":{"2":"evil\\u001b[2J\\u0007' + b"A" * 500
            + b'"}}\n')
    path.write_bytes(b"not json\n" + b'{"flow":[1,2],"cluster":[3]}\n'
                     + b'{"flow":[1,2],"cluster":[3],"labels":{}}\n'  # lengths differ
                     + b'{"flow":["1"],"cluster":[3],"labels":{}}\n'
                     + b'{"flow":[true],"cluster":[3],"labels":{}}\n'
                     + b'{"flow":[4],"cluster":[3],"labels":{"x":"y"}}\n'
                     + good + b'{"flow":[1],"cluster":[9],"lab')  # cut by a crash
    cluster, labels = read_clusters([str(path)])
    assert cluster == {1: 2}
    assert set(labels) == {2}
    assert "\x1b" not in labels[2] and "\x07" not in labels[2] and len(labels[2]) <= 200


def test_clusters_survive_the_segments_that_recorded_them(tmp_path: Path) -> None:
    """Notes are written once, into the segment open then; that segment is deleted
    long before some of the flows' packets are: later segments carry them."""
    src = str(tmp_path / "in.pcap")
    synthetic_pcap(src, 20_000, 300, seed=5)
    keep = str(tmp_path / "ring")
    cap = 1 << 20
    ring = DiskRing(keep, cap, segment_bytes=96 << 10, queue_bytes=1 << 30)
    ring.start()
    noted: set[int] = set()
    for batch, fid, a2b, seq in counted_batches(src, 48 << 10, FlowTable(idle_timeout=1e9)):
        ring.append(batch, fid, a2b, seq)
        new = np.setdiff1d(fid, np.fromiter(noted, dtype=np.int64))
        if len(new):  # each flow's cluster noted once, when first seen
            ring.note_clusters(new, new % 7, {c: f"kind {c}" for c in range(7)})
            noted.update(new.tolist())
    ring.close()
    assert not ring.error and dir_bytes(keep) <= cap
    segs = list_segments(keep)
    assert len(segs) >= 4 and all("clus" in s.files for s in segs)
    flows = DiskReader(keep).flows()
    assert len(flows) > 50
    assert all(f.cluster == f.flow_id % 7 and f.label == f"kind {f.cluster}" for f in flows)


def test_cli_exports_a_whole_cluster_as_the_flow_records_name_it(tmp_path: Path) -> None:
    path = captures_dir() / MIXED_CAPTURE
    keep, records = tmp_path / "ring", tmp_path / "flows.jsonl"
    done = run_netmon("--headless", "-r", str(path), "--keep-packets", str(keep),
                      "--flows-out", str(records))
    assert done.returncode == 0, done.stderr
    members: dict[int, list[dict]] = defaultdict(list)
    for line in records.read_text().splitlines():
        rec = json.loads(line)
        members[rec["cluster_id"]].append(rec)
    assert len(members) >= 3
    listing = run_netmon("packets", str(keep))
    assert listing.returncode == 0, listing.stderr
    listed = {int(r.split()[0]): r for r in listing.stdout.splitlines()[2:]}
    for cid, recs in sorted(members.items(), key=lambda kv: -len(kv[1]))[:3]:
        label = recs[0]["cluster_label"]
        assert all(listed[r["flow_id"]].endswith(f"  {cid} {label}") for r in recs)
        out = tmp_path / f"c{cid}.pcapng"
        got = run_netmon("packets", str(keep), "--cluster", str(cid), "-w", str(out))
        assert got.returncode == 0, got.stderr
        packets = sum(r["pkts_a2b"] + r["pkts_b2a"] for r in recs)
        assert (f"wrote {packets} packets of {len(recs)} flows of cluster {cid} ({label})"
                in got.stdout), got.stdout
        if TSHARK:
            frames = subprocess.run([TSHARK, "-r", str(out), "-T", "fields", "-e",
                                     "frame.number"], capture_output=True, text=True,
                                    check=True).stdout.split()
            assert len(frames) == packets
    bad = run_netmon("packets", str(keep), "--cluster", "999", "-w", str(tmp_path / "n"))
    assert bad.returncode == EXIT_USAGE and "is in cluster 999" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "n")


def test_a_run_without_clustering_says_so(tmp_path: Path) -> None:
    keep = tmp_path / "ring"
    done = run_netmon("--headless", "-r", str(captures_dir() / HTTP_CAPTURE), "--no-cluster",
                      "--keep-packets", str(keep))
    assert done.returncode == 0, done.stderr
    bad = run_netmon("packets", str(keep), "--cluster", "1")
    assert bad.returncode == EXIT_USAGE and "recorded no clusters" in bad.stderr, bad.stderr
