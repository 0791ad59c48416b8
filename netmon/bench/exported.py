"""``python -m netmon.bench exported``: do flows from NetFlow/IPFIX records cluster by
behaviour as captured flows do?

Runs on the main thread; netmon and softflowd are child processes. Steps:

1. Labelled loopback traffic (:mod:`netmon.demo.traffic`, one behaviour class per
   127.0.N.0/24) is captured on ``lo`` into a pcap (as ``bench cluster`` does), or
   ``--pcap`` names one made earlier (``bench cluster --keep``).
2. For each export version, softflowd (a real exporter) reads the capture and sends
   the records to ``netmon --json --collect`` on 127.0.0.1; netmon decodes, counts and
   clusters them like any flow and writes ``--flows-out``.
3. Each flow's true class comes from its addresses; printed per version: purity,
   macro purity, ARI, NMI, clusters vs classes, and each cluster's label and classes.

The baseline is ``bench cluster`` on the same capture (captured flows, all features).
Exit 77 when softflowd or capture is unavailable.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from netmon.bench.labelled import CaptureError, capture_labelled, cluster_metrics
from netmon.demo.traffic.plan import CLASSES, TrafficPlan, class_of
from netmon.testing.ports import free_port


def _softflowd() -> str:
    """softflowd's path (it lives in /usr/sbin, often not on a user's PATH)."""
    return shutil.which("softflowd") or shutil.which("softflowd", path="/usr/sbin:/sbin") or ""


def export_and_collect(pcap: str, version: str, out: Path) -> int:
    """softflowd exports ``pcap`` to a netmon collector writing ``out``; returns the
    number of records softflowd says it sent (all of them arrive: checked)."""
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen([sys.executable, "-m", "netmon", "--json", "--collect",
                             f"127.0.0.1:{port}", "--flows-out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if json.loads(line)["sources"][0]["state"] == "running":
                break
        with tempfile.TemporaryDirectory() as tmp:
            # -a: flow times from the capture; -c none: no control socket (with -r a
            # control socket makes softflowd wait forever at the end).
            args = [_softflowd(), "-r", pcap, "-n", f"127.0.0.1:{port}", "-v", version, "-d",
                    "-a", "-c", "none", "-p", str(Path(tmp) / "pid")]
            done = subprocess.run(args + ([] if version == "5" else ["-6"]), cwd=tmp,
                                  capture_output=True, text=True, timeout=120)
        sent = int(done.stdout.split("Flows exported: ")[1].split("(")[1].split()[0]) \
            if "Flows exported: " in done.stdout else 0
        while True:
            snap = json.loads(proc.stdout.readline())
            if snap["sources"][0]["collector"]["records"] >= sent:
                break
        time.sleep(2.0)  # a few ticks: the clusterer warms up and assigns every flow
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    return sent


def score(path: Path) -> tuple[dict, dict[int, tuple[str, Counter]]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    truth, pred = [], []
    clusters: dict[int, tuple[str, Counter]] = defaultdict(lambda: ("", Counter()))
    for r in rows:
        c = class_of(r["addr_a"]) or class_of(r["addr_b"])
        if c is None or r["cluster_id"] is None:
            continue
        truth.append(CLASSES.index(c))
        pred.append(r["cluster_id"])
        members = clusters[r["cluster_id"]][1]
        members[c] += 1
        clusters[r["cluster_id"]] = (r["cluster_label"], members)
    return cluster_metrics(np.array(pred), np.array(truth)), dict(clusters)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netmon.bench exported")
    ap.add_argument("--pcap", help="a capture of trafficgen traffic (bench cluster --keep)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of traffic (30)")
    ap.add_argument("--versions", default="5,9,10")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not _softflowd():
        print("bench exported: softflowd is not installed (apt-get install softflowd)",
              file=sys.stderr)
        return 77
    results = {}
    with tempfile.TemporaryDirectory(prefix="netmon-exported-") as tmp:
        pcap = args.pcap
        if not pcap:
            pcap = str(Path(tmp) / "labelled.pcap")
            try:
                capture_labelled(TrafficPlan(duration=args.duration), pcap)
            except CaptureError as exc:
                print(f"bench exported: cannot capture here: {exc}", file=sys.stderr)
                return 77
        for version in args.versions.split(","):
            out = Path(tmp) / f"flows-v{version}.jsonl"
            sent = export_and_collect(pcap, version, out)
            metrics, clusters = score(out)
            results[version] = {"records": sent, **metrics}
            print(f"v{version}: {sent:,} records -> {metrics['flows']:,} flows of "
                  f"{metrics['classes']} classes in {metrics['clusters']} clusters: purity "
                  f"{metrics['purity']:.3f}, macro purity {metrics['macro_purity']:.3f}, "
                  f"ARI {metrics['ari']:.3f}, NMI {metrics['nmi']:.3f}")
            for cid in sorted(clusters):
                label, members = clusters[cid]
                print(f"    #{cid:<3} {label:40s} {dict(members)}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
