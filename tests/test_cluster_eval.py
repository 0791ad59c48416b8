"""A short labelled-traffic run: real Twisted servers and clients on loopback, a real
dumpcap capture on ``lo``, replayed through the clusterer; purity and stability floors.

Runs ``python -m netmon.bench.cluster`` in a subprocess (it owns a reactor and a
capture process; a subprocess keeps both out of the test runner). Skipped with the
reason when dumpcap is missing or may not capture here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netmon.demo.traffic.plan import CLASSES, TrafficPlan, TrafficStats, class_of
from netmon.demo.traffic.run import start_traffic

ROOT = Path(__file__).resolve().parent.parent
DURATION, SCALE, SEED = 12, 0.5, 7


def _dumpcaps_capturing(bpf: str) -> list[int]:
    """PIDs of dumpcap processes running with this capture filter."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"dumpcap") and bpf.encode() in argv:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def report() -> dict:
    if shutil.which("dumpcap") is None:
        pytest.skip("dumpcap is not installed (apt-get install tshark)")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "netmon.bench.cluster", "--duration", str(DURATION),
           "--scale", str(SCALE), "--seed", str(SEED), "--cost-flows", "2000", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env,
                          cwd=ROOT, check=False)
    if proc.returncode == 77:
        pytest.skip(f"cannot capture on lo here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_no_capture_process_is_left_behind(report: dict) -> None:
    assert _dumpcaps_capturing(TrafficPlan(duration=DURATION, scale=SCALE, seed=SEED).bpf()) == []


@pytest.mark.parametrize("mode", ["ports", "no_ports"])
def test_purity_and_cluster_count_floors(report: dict, mode: str) -> None:
    r = report[mode]
    assert r["classes"] >= 6, r["per_class"]  # icmp may be skipped without raw sockets
    floor = 0.85 if mode == "ports" else 0.75
    assert r["macro_purity"] >= floor, r["members"]
    assert r["purity"] >= 0.90, r["members"]
    assert r["ari"] >= 0.7 and r["nmi"] >= 0.7
    assert r["clusters"] <= 2 * r["classes"], r["members"]


@pytest.mark.parametrize("mode", ["ports", "no_ports"])
def test_id_stability_floor(report: dict, mode: str) -> None:
    assert report[mode]["stability"] >= 0.98
    # Flows that changed in consecutive ticks: their first look may be revised once.
    assert report[mode]["stability_changed_flows"] >= 0.85


def test_labels_name_the_behaviours(report: dict) -> None:
    labels = set(report["ports"]["labels"].values())
    for part in ("bulk download", "request-response", "SYN-only probes", "constant-rate"):
        assert any(part in label for label in labels), labels


def test_class_of_and_capture_filter() -> None:
    plan = TrafficPlan()
    assert plan.subnet("bulk") == "127.0.101" and plan.subnet("cbr") == "127.0.107"
    assert class_of("127.0.103.5") == "dns" and class_of("127.0.105.1") == "scan"
    assert class_of("127.0.0.1") is None and class_of("10.0.101.1") is None
    assert class_of("::1") is None
    assert plan.bpf().count("net 127.0.1") == len(CLASSES)


def test_traffic_runs_and_stops_by_itself() -> None:
    """All classes start on a private reactor, ``done`` fires by itself, and nothing is
    left scheduled or open on the reactor afterwards."""
    from twisted.internet.epollreactor import EPollReactor

    reactor = EPollReactor()
    plan = TrafficPlan(duration=2.0, scale=0.25, grace=3.0)
    handle = start_traffic(reactor, plan)
    results: list[TrafficStats] = []
    handle.done.addCallback(results.append)
    handle.done.addCallback(lambda _: reactor.callLater(0.2, reactor.stop))
    watchdog = reactor.callLater(plan.duration + plan.grace + 5, reactor.stop)
    reactor.run(installSignalHandlers=False)
    assert results, "traffic did not finish by itself"
    stats = results[0]
    expected = set(CLASSES) - {n.split(":")[0] for n in stats.notes}
    assert set(stats.started) == expected, stats
    assert watchdog.active()
    watchdog.cancel()
    assert not [c for c in reactor.getDelayedCalls() if c.active()]
    assert not (set(reactor.getReaders()) | set(reactor.getWriters())) - {reactor.waker}


# ------------------------------------------------------------ mixes of real captures
#: Measured (bench clustermix, seed 0) with ports: issue14 macro purity 0.998, NMI 0.930,
#: at most 4 clusters per capture (the SYN scan: open ports answer); other 0.998, 0.880,
#: at most 6 (08's DNS over UDP, TCP, v4, v6 and fragments). Without ports: 0.793/0.877
#: and 0.807/0.863. Floors sit a margin below.
MIX_FLOORS = {("issue14", True): (0.95, 0.88, 5), ("other", True): (0.95, 0.84, 7),
              ("issue14", False): (0.75, 0.83, 4), ("other", False): (0.75, 0.82, 7)}


@pytest.mark.parametrize(("mix", "ports"), list(MIX_FLOORS))
def test_mixes_of_real_captures(mix: str, ports: bool) -> None:
    from netmon.bench.clustermix import CAPTURES, MIXES, evaluate_mix

    if not CAPTURES.is_dir():
        pytest.skip(f"real captures not found at {CAPTURES}")
    r = evaluate_mix(MIXES[mix], ports=ports)
    purity, nmi, spread = MIX_FLOORS[(mix, ports)]
    assert r["classes"] == len(MIXES[mix])  # every capture's flows were scored
    assert r["duplicate_labels"] == 0, r["labels"]
    assert r["macro_purity"] >= purity, r["members"]
    assert r["nmi"] >= nmi, r["members"]
    assert r["max_clusters_per_class"] <= spread, r["clusters_per_class"]
    assert all(r["labels"].values())
