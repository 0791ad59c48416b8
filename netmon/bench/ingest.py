"""``python -m netmon.bench ingest``: replay throughput and memory per flow.

Runs on the main thread, spawning netmon and tshark as child processes so each is
measured the way a user runs it. Every figure is paired with a baseline measured in
the same run (this machine is shared and noisy: compare ratios, not absolutes).

ingest: a synthetic pcap (1 M packets over 50 k flows by default) replayed by
  - netmon headless (end to end: read, decode, flow table, ticks, exit),
  - ``tshark -r F -w -`` (no dissection: the ceiling for any reader),
  - ``tshark -r F -T fields`` (what a dissect-every-packet design gets),
and the flow table's memory per live flow at 1 M live flows.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from netmon.bench.memory import rss_bytes
from netmon.flows.table import FlowTable


def _run_timed(cmd: list[str], stdout: int | None = subprocess.DEVNULL) -> tuple[float, int, str]:
    """Run ``cmd``; return (wall seconds, peak RSS in bytes, stdout text)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if stdout is None else stdout,
                            stderr=subprocess.PIPE)
    out = proc.stdout.read().decode() if stdout is None else ""
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd[:4])}... failed ({proc.returncode}): "
                         f"{err.strip()[-300:]}")
    return wall, usage.ru_maxrss * 1024, out


def memory_per_flow(flows: int) -> float:
    """Bytes of resident memory per live flow with ``flows`` live flows."""
    import numpy as np

    table = FlowTable(max_flows=flows * 2, idle_timeout=1e9, active_timeout=1e9)
    gc.collect()
    before = rss_bytes()
    batch = 8192
    ts = 1_700_000_000.0
    for start in range(0, flows, batch):
        n = min(batch, flows - start)
        ids = np.arange(start, start + n)
        # Distinct client address and port per flow, a few hundred servers: the shape
        # of a busy server's (or a scanner's) table.
        recs = [(ts + i * 1e-6, 60 + (i & 1023), 6,
                 (0x0A000000 + i // 50).to_bytes(4, "big"), 1024 + i % 50 * 1000,
                 (0xC0A80000 + i % 512).to_bytes(4, "big"), 443, 0x02)
                for i in ids.tolist()]
        table.add_packets(recs)
    del recs
    gc.collect()
    after = rss_bytes()
    assert len(table) == flows
    return (after - before) / flows


def bench_ingest(args: argparse.Namespace) -> dict:
    from netmon.testing.synth import synthetic_pcap

    tshark = shutil.which("tshark")
    workdir = tempfile.mkdtemp(prefix="netmon-bench-")
    path = os.path.join(workdir, "synthetic.pcap")
    try:
        t0 = time.perf_counter()
        info = synthetic_pcap(path, args.packets, args.flows, seed=args.seed)
        gen = time.perf_counter() - t0
        size = os.path.getsize(path)
        print(f"synthetic pcap: {info['packets']:,} packets, {info['flows']:,} flows, "
              f"{size / 1e6:.0f} MB (made in {gen:.1f} s)")
        results: dict = {"packets": info["packets"], "flows": info["flows"]}

        def replay(*extra: str) -> tuple[float, int, float, dict]:
            # --json, because the final snapshot has the counts to check; it also makes
            # netmon compute the hosts view, which plain --headless skips.
            runs = []
            for _ in range(args.repeat):
                wall, rss, out = _run_timed([sys.executable, "-m", "netmon", "--json", "-r",
                                             path, *extra], stdout=None)
                final = json.loads(out.strip().splitlines()[-1])
                assert final["ip_packets"] == info["packets"], final
                runs.append((wall, rss, final["elapsed"], final))
            return min(runs, key=lambda r: r[0])

        plain = min(_run_timed([sys.executable, "-m", "netmon", "--headless", "--no-cluster",
                                "-r", path])[0] for _ in range(args.repeat))
        results["netmon_plain_pps"] = info["packets"] / plain
        print(f"netmon --headless --no-cluster replay: {results['netmon_plain_pps']:,.0f} "
              f"pkt/s end to end ({plain:.2f} s incl. start-up)")

        wall, rss, engine_s, final = replay("--no-cluster")
        results["netmon_pps"] = info["packets"] / wall
        results["netmon_engine_pps"] = info["packets"] / engine_s
        results["netmon_peak_rss_mb"] = rss / 1e6
        print(f"netmon headless replay, counting only (--no-cluster): "
              f"{results['netmon_pps']:,.0f} pkt/s end to end ({wall:.2f} s incl. start-up; "
              f"engine alone {results['netmon_engine_pps']:,.0f} pkt/s), peak RSS "
              f"{rss / 1e6:.0f} MB, {final['flows_seen']:,} flows (idle timeouts split some)")
        wall_c, rss_c, _, final_c = replay()
        results["netmon_clustered_pps"] = info["packets"] / wall_c
        print(f"netmon headless replay with clustering (the default): "
              f"{results['netmon_clustered_pps']:,.0f} pkt/s end to end ({wall_c:.2f} s), "
              f"peak RSS {rss_c / 1e6:.0f} MB, {len(final_c['clusters'])} clusters")

        if tshark:
            raw = min(_run_timed([tshark, "-r", path, "-w", "-"])[0]
                      for _ in range(args.repeat))
            results["tshark_raw_pps"] = info["packets"] / raw
            print(f"tshark -r F -w - (no dissection): {results['tshark_raw_pps']:,.0f} pkt/s")
            n = min(args.fields_packets, info["packets"])
            fields_wall, _, _ = _run_timed([tshark, "-r", path, "-c", str(n), "-T", "fields",
                                            "-e", "frame.time_epoch", "-e", "frame.len",
                                            "-e", "ip.src", "-e", "ip.dst", "-e", "ip.proto",
                                            "-e", "tcp.srcport", "-e", "tcp.dstport",
                                            "-e", "udp.srcport", "-e", "udp.dstport"])
            results["tshark_fields_pps"] = n / fields_wall
            print(f"tshark -T fields (dissect everything, first {n:,} packets): "
                  f"{results['tshark_fields_pps']:,.0f} pkt/s")
            best = max(results["netmon_pps"], results["netmon_plain_pps"])
            results["ratio_vs_raw"] = best / results["tshark_raw_pps"]
            results["ratio_vs_fields"] = best / results["tshark_fields_pps"]
            print(f"ratios (counting only): netmon / tshark raw = {results['ratio_vs_raw']:.2f}x "
                  f"(target >= 0.3x); netmon / tshark fields = "
                  f"{results['ratio_vs_fields']:.1f}x (target >= 10x)")
            clustered = results["netmon_clustered_pps"]
            print(f"ratios (with clustering): / tshark raw = "
                  f"{clustered / results['tshark_raw_pps']:.2f}x; / tshark fields = "
                  f"{clustered / results['tshark_fields_pps']:.1f}x")
        else:
            print("tshark not installed: baselines skipped (apt-get install tshark)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    per_flow = memory_per_flow(args.live_flows)
    results["bytes_per_live_flow"] = per_flow
    print(f"memory per live flow at {args.live_flows:,} live flows: {per_flow:,.0f} bytes "
          f"(target <= 1024)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"bench process peak RSS: {peak / 1e6:.0f} MB")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netmon.bench ingest",
                                     description="replay throughput and memory per flow")
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--flows", type=int, default=50_000)
    parser.add_argument("--live-flows", type=int, default=1_000_000)
    parser.add_argument("--fields-packets", type=int, default=200_000,
                        help="packets for the slow tshark -T fields baseline")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (best kept)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = parser.parse_args(argv)
    results = bench_ingest(args)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
