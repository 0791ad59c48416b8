"""Labelled loopback traffic for the clustering benchmarks: capture it, score against it.

Not a benchmark itself: ``bench cluster`` and ``bench exported`` share it. Runs in the
main thread of the benchmark's own process. :func:`capture_labelled` runs
:mod:`netmon.demo.traffic`'s real servers and clients on a private Twisted reactor (one
behaviour class per 127.0.N.0/24, so a flow's true class is its address) while
``dumpcap`` captures them on ``lo`` into a pcap. dumpcap is spawned with an argument
list, stopped and reaped in a ``finally`` however the run ends (SIGINT/SIGTERM/SIGHUP
end the run cleanly), and told to stop by itself after the plan's duration plus a
margin (``-a duration:``) should this process be killed. :func:`cluster_metrics`
scores a cluster assignment against those true classes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from typing import IO

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from twisted.internet.base import ReactorBase

from netmon.demo.traffic.plan import CLASSES, TrafficPlan, TrafficStats
from netmon.demo.traffic.run import start_traffic
from netmon.ingest.pcapstream import PcapStreamDecoder


class CaptureError(Exception):
    """Capture cannot run here; the message is one line for the user."""


def read_records(path: str) -> list[tuple]:
    """Every packet record of the capture at ``path``, as decoded (CaptureError when it
    cannot be read)."""
    decoder = PcapStreamDecoder()
    records: list[tuple] = []
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            records.extend(decoder.feed(chunk))
    records.extend(decoder.close())
    if decoder.error:
        raise CaptureError(f"cannot read {path}: {decoder.error}")
    return records


# --------------------------------------------------------------------------- capture
def _private_reactor() -> ReactorBase:
    try:
        from twisted.internet.epollreactor import EPollReactor
        return EPollReactor()
    except ImportError:  # not Linux
        from twisted.internet.selectreactor import SelectReactor
        return SelectReactor()


def capture_labelled(plan: TrafficPlan, path: str, *, interface: str = "lo",
                     ready_timeout: float = 10.0) -> TrafficStats:
    """Generate ``plan``'s traffic while dumpcap writes it to ``path`` (pcap)."""
    tool = shutil.which("dumpcap")
    if tool is None:
        raise CaptureError("dumpcap not found (install wireshark-common / tshark)")
    # -a duration: dumpcap stops by itself even if this process is killed outright.
    limit = int(plan.duration + plan.grace + 30)
    argv = [tool, "-q", "-i", interface, "-P", "-s", "160", "-B", "32", "-a",
            f"duration:{limit}", "-w", path, "-f", plan.bpf()]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
        try:
            _wait_ready(proc, path, err, interface, ready_timeout)
            return _run_traffic(plan)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # dumpcap flushes and exits
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _wait_ready(proc: subprocess.Popen, path: str, err: IO[bytes], interface: str,
                timeout: float) -> None:
    """Return once dumpcap has written the file header; raise if it gave up."""
    deadline = time.monotonic() + timeout
    while not (os.path.exists(path) and os.path.getsize(path) >= 24):
        if proc.poll() is not None or time.monotonic() > deadline:
            err.seek(0)
            lines = [ln for ln in err.read().decode(errors="replace").splitlines()
                     if ln.strip() and not ln.startswith("Capturing on")]
            raise CaptureError(f"dumpcap could not capture on {interface}: "
                               f"{lines[-1] if lines else 'no output'}")
        time.sleep(0.05)
    time.sleep(0.3)  # the header is written first; let the capture settle


def _run_traffic(plan: TrafficPlan) -> TrafficStats:
    """Run the plan's traffic on a private reactor until it is done or a signal comes."""
    reactor = _private_reactor()
    caught: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        caught.append(signum)
        reactor.callFromThread(reactor.stop)
    old = {sig: signal.signal(sig, on_signal)
           for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        handle = start_traffic(reactor, plan)
        handle.done.addCallback(lambda _: reactor.callLater(0.5, reactor.stop))
        reactor.run(installSignalHandlers=False)
        handle.stop()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt
    return handle.stats


# --------------------------------------------------------------------------- scoring
def cluster_metrics(pred: np.ndarray, truth: np.ndarray,
                    names: Sequence[str] = CLASSES) -> dict:
    """Flow-weighted purity, macro purity, ARI, NMI and counts for one assignment
    (``names``: true class index -> name), with how many clusters each true class is
    spread over (every cluster holding one of its flows counts)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if not len(pred):
        return {"flows": 0}
    majority, good = {}, 0
    for c in np.unique(pred):
        counts = np.bincount(truth[pred == c])
        majority[int(c)] = int(np.argmax(counts))
        good += int(counts.max())
    classes = np.unique(truth)
    per_class = {names[k]: float(np.mean([majority[int(p)] == k for p in pred[truth == k]]))
                 for k in classes}
    spread = {names[k]: len(np.unique(pred[truth == k])) for k in classes}
    return {"flows": len(pred), "purity": good / len(pred),
            "macro_purity": float(np.mean(list(per_class.values()))),
            "ari": float(adjusted_rand_score(truth, pred)),
            "nmi": float(normalized_mutual_info_score(truth, pred)),
            "clusters": len(majority), "classes": len(classes), "per_class": per_class,
            "clusters_per_class": spread, "max_clusters_per_class": max(spread.values()),
            "mean_clusters_per_class": float(np.mean(list(spread.values())))}


def duplicate_labels(labels: dict[int, str]) -> int:
    """How many clusters carry a label another cluster also carries (0 when all differ)."""
    counts = Counter(labels.values())
    return sum(n for n in counts.values() if n > 1)
