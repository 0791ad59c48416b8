"""Clustering quality on labelled mixes of real captures: one true class per capture.

Runs in the main thread of its own process (``python -m netmon.bench clustermix``), or
in the test runner's thread when a test calls :func:`evaluate_mix` (pure replay: no
capture, no reactor). Each capture of a mix is decoded by its own PcapStreamDecoder into
its own FlowTable (so a 5-tuple seen in two captures stays two flows), its clock shifted
to start with the others and its idle gaps longer than :data:`MAX_GAP` shortened (some
shared captures are merges whose timestamps span years). Tick by tick, the flows that
changed in every table go to one OnlineClusterer together, each flow's true class being
the capture it came from; :class:`netmon.bench.cluster.Evaluation` scores them.

Printed per mix, with ports and without: clusters per true class (max, mean), duplicate
labels, macro purity, NMI, and every cluster with its label and members.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from netmon.bench.cluster import Evaluation
from netmon.bench.labelled import CaptureError, duplicate_labels, read_records
from netmon.cluster.online import OnlineClusterer, Tuning
from netmon.flows.table import FlowTable

#: Where the shared real captures live (``../shared/captures`` beside the checkout).
CAPTURES = Path(__file__).resolve().parents[2].parent / "shared" / "captures"
#: Labelled mixes: name -> captures, each of one kind of traffic (01 holds its page's DNS
#: lookups too: two kinds). "issue14" is the mix issue 14 describes; "other" shares only
#: the scan, brute force and redis with it and brings DNS, VLAN/MPLS HTTP and NFLOG.
MIXES: dict[str, tuple[str, ...]] = {
    "issue14": ("01_http_espn.pcapng", "02_tls_firefox.pcap", "03_ipv6_tls_reddit.pcap",
                "06_nmap_synscan.pcapng", "07_ssh_bruteforce_sshguess.pcap",
                "09_icmp_traceroute.pcapng", "12_linux_sll_redis_lo.pcap",
                "15_quic_firefox_google.pcap"),
    "other": ("08_dns_edns_v4v6.pcap", "06_nmap_synscan.pcapng",
              "07_ssh_bruteforce_sshguess.pcap", "10_vlan_mpls_mixed.pcap",
              "12_linux_sll_redis_lo.pcap", "13_nflog_http.pcap", "03_ipv6_tls_reddit.pcap"),
}
#: Longest quiet gap kept inside one capture, in seconds (longer ones are shortened).
MAX_GAP = 5.0
#: Flow ids of capture i start at i * ID_STRIDE, so flows of two tables never share one.
ID_STRIDE = 1 << 40


def load_records(path: Path) -> list[tuple]:
    """A capture's decoded packet records, in time order, gaps over MAX_GAP shortened,
    the first at time 0."""
    records = read_records(str(path))
    records.sort(key=lambda r: r[0])
    if not records:
        return []
    stamps = np.array([r[0] for r in records], dtype=np.float64)
    gaps = np.minimum(np.diff(stamps, prepend=stamps[0]), MAX_GAP)
    new = np.cumsum(gaps)
    return [(t, *r[1:]) for t, r in zip(new.tolist(), records, strict=True)]


def replay_mix(paths: Sequence[Path], evaluations: Sequence[Evaluation], *,
               tick: float = 0.5) -> int:
    """Feed the captures, side by side, to the evaluations; returns the tick count."""
    recs = [load_records(p) for p in paths]
    tables = [FlowTable(idle_timeout=60.0) for _ in paths]
    end = max((r[-1][0] for r in recs if r), default=0.0)
    ticks = int(end / tick) + 2
    starts = [0] * len(paths)
    bounds = [np.searchsorted(np.array([x[0] for x in r]), tick * np.arange(1, ticks + 1),
                              side="left") for r in recs]

    def columns(i: int, slots: np.ndarray) -> dict[str, np.ndarray]:
        cols = tables[i].columns(slots)
        cols["flow_id"] = cols["flow_id"] + i * ID_STRIDE
        return cols

    for n in range(ticks):
        parts, truth, live, live_truth = [], [], [], []
        for i, table in enumerate(tables):
            stop = int(bounds[i][n])
            table.add_packets(recs[i][starts[i]:stop])
            starts[i] = stop
            table.expire((n + 1) * tick)
            slots = np.flatnonzero(table.dirty & table.live)
            table.dirty[:] = False
            mine = [columns(i, slots)]
            # Flows that ended this tick go to the clusterer too, as in the engine.
            mine += [dict(c, flow_id=c["flow_id"] + i * ID_STRIDE)
                     for c, _, _ in table.take_finished()]
            parts += mine
            truth += [np.full(len(c["flow_id"]), i, dtype=np.int64) for c in mine]
            live.append(columns(i, table.live_slots()))
            live_truth.append(np.full(len(live[-1]["flow_id"]), i, dtype=np.int64))
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        live_cols = {k: np.concatenate([p[k] for p in live]) for k in live[0]}
        for ev in evaluations:
            ev.tick(n, cols, np.concatenate(truth), live_cols)
    # The engine's last job (ClusterJob.finish, final=True) clusters whatever a short
    # run saw; do the same so a mix shorter than the warm-up is still scored.
    for ev in evaluations:
        if not ev.cl.warm:
            ev.tick(ticks, live_cols, np.concatenate(live_truth), live_cols, final=True)
    return ticks


def evaluate_mix(files: Sequence[str], *, ports: bool = True, seed: int = 0,
                 tick: float = 0.5, tuning: Tuning | None = None,
                 captures: Path = CAPTURES) -> dict:
    """Score one clusterer on a mix of shared captures (see the module docstring)."""
    names = [Path(f).name.split(".")[0] for f in files]
    ev = Evaluation(OnlineClusterer(ports=ports, seed=seed, tuning=tuning), names=names)
    ticks = replay_mix([captures / f for f in files], [ev], tick=tick)
    out = ev.report()
    out["ticks"] = ticks
    # Every remembered cluster's label: flows may show a retired cluster's too.
    out["labels"] = {str(k): v for k, v in ev.cl.all_labels().items()}
    out["duplicate_labels"] = duplicate_labels(ev.cl.all_labels())
    return out


def _print(mix: str, key: str, r: dict) -> None:
    print(f"\nmix {mix} ({key}): {r['flows']} flows of {r['classes']} classes -> "
          f"{r['clusters']} clusters")
    print(f"  clusters per class: max {r['max_clusters_per_class']}, mean "
          f"{r['mean_clusters_per_class']:.2f} (target max <= 2)")
    print(f"  duplicate labels: {r['duplicate_labels']} (target 0)")
    print(f"  macro purity {r['macro_purity']:.3f} (>= 0.90), NMI {r['nmi']:.3f} (>= 0.8), "
          f"purity {r['purity']:.3f}, ARI {r['ari']:.3f}")
    print("  per class: " + ", ".join(
        f"{k} {v:.2f}/{r['clusters_per_class'][k]}" for k, v in r["per_class"].items()))
    for cid, members in r["members"].items():
        print(f"    #{cid:<4} {r['labels'].get(cid, '(retired)'):<60} {members}")


def main(argv: list[str]) -> int:
    """Run the benchmark on every mix (or those named); returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m netmon.bench clustermix",
                                description=__doc__.split("\n")[0])
    p.add_argument("mixes", nargs="*", help=f"mixes to run (all: {', '.join(MIXES)})")
    p.add_argument("--seed", type=int, default=0, help="clusterer seed (0)")
    p.add_argument("--tick", type=float, default=0.5, help="capture seconds per tick (0.5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and 2
    unknown = [m for m in args.mixes if m not in MIXES]
    if unknown:
        print(f"netmon bench clustermix: unknown mix {unknown[0]!r} "
              f"(known: {', '.join(MIXES)})", file=sys.stderr)
        return 2
    if not CAPTURES.is_dir():
        print(f"netmon bench clustermix: no shared captures at {CAPTURES}", file=sys.stderr)
        return 77
    res: dict[str, dict] = {}
    try:
        for mix in args.mixes or list(MIXES):
            for key, ports in (("ports", True), ("no_ports", False)):
                res.setdefault(mix, {})[key] = evaluate_mix(
                    MIXES[mix], ports=ports, seed=args.seed, tick=args.tick)
    except CaptureError as exc:
        print(f"netmon bench clustermix: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res, indent=1, default=float))
    else:
        for mix, by_key in res.items():
            for key, r in by_key.items():
                _print(mix, key, r)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
