"""``python -m netmon.bench packets``: the packet store's memory and what it costs ingest.

Main thread of the benchmark's process (engines run their own reactor threads).

(a) The store alone under many flows: a synthetic pcap of ``--flows`` flows (1 M by
    default) decoded and counted as the engine does, every batch appended to a
    :class:`~netmon.ingest.packetstore.PacketStore` with the default budget; prints the
    store's bytes against its budget, its compactions and what they dropped, the time
    spent in ``append`` per packet, and the process's RSS.
(b) Ingest speed in the same run: the engine replaying the ingest benchmark's file
    (1 M packets over 50 k flows) with the store on (default budget) and off (0),
    ``--repeat`` runs each (5: one slow run in three moved the median by 0.1), interleaved,
    each in a fresh process (:func:`replay_apart`), medians compared.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from netmon.bench.memory import rss_bytes
from netmon.core.settings import Settings
from netmon.engine.engine import Engine
from netmon.flows.table import FlowTable
from netmon.ingest.packetstore import DEFAULT_MB, PacketStore
from netmon.ingest.pcapstream import PcapStreamDecoder
from netmon.sources.files import FileSource
from netmon.testing.synth import synthetic_pcap

CHUNK = 1 << 20  # bytes per decoder feed, as the file source reads


def store_alone(path: str, budget: int) -> dict:
    """Decode ``path`` into a flow table and a store; time the store's appends."""
    gc.collect()
    before = rss_bytes()
    decoder = PcapStreamDecoder()
    table = FlowTable(max_flows=8_000_000, idle_timeout=1e9, active_timeout=1e9)
    store = PacketStore(budget)
    spent = 0.0
    packets = 0
    peak = 0
    with open(path, "rb") as fh:
        while data := fh.read(CHUNK):
            batch = decoder.feed_batch(data)
            slots, lo_first, seq = table.add_batch(batch)
            t0 = time.perf_counter()
            store.append(batch, table.flow_id[slots], lo_first == table.a_is_lo[slots], seq,
                         table.pkts_ab[slots] + table.pkts_ba[slots])
            spent += time.perf_counter() - t0
            packets += len(batch)
            peak = max(peak, store.nbytes)
    flows = len(table)
    kept_flows = len(store.flows())
    table_rss = rss_bytes()
    del table
    gc.collect()
    return {"packets": packets, "flows": flows, "kept_flows": kept_flows,
            "store_bytes": store.nbytes, "store_peak": peak, "used": store.used_bytes,
            "rows": len(store), "compactions": store.compactions,
            "dropped": dict(store.dropped), "append_s": spent,
            "rss_growth": table_rss - before, "rss_after_table": rss_bytes() - before}


def engine_replay(path: str, packet_mb: int) -> float:
    """Seconds for the engine to replay ``path`` (counting only, no clustering), in
    this process."""
    settings = Settings(read=path, cluster=False, packet_mb=packet_mb)
    engine = Engine(settings, [FileSource(path)], lambda _snap: None)
    t0 = time.perf_counter()
    engine.start()
    if not engine.join(600):
        engine.stop()
        raise SystemExit("bench: the replay did not end in 10 minutes")
    return time.perf_counter() - t0


def replay_apart(path: str, packet_mb: int) -> float:
    """:func:`engine_replay` in a process of its own, as a user runs netmon: a process
    that already ran replays (or part a) reuses heap pages the store would otherwise
    fault in, and its timings varied 1.06-1.19 from one run of this benchmark to the
    next against 1.11-1.12 apart."""
    done = subprocess.run([sys.executable, "-m", "netmon.bench.packets", "--replay-one",
                           path, str(packet_mb)], capture_output=True, text=True,
                          timeout=600)
    if done.returncode:
        raise SystemExit(f"bench: a replay failed: {done.stderr.strip()[-500:]}")
    return float(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netmon.bench packets",
                                     description="packet store memory and ingest cost")
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--flow-packets", type=int, default=3_000_000,
                        help="packets of the many-flows file (a)")
    parser.add_argument("--packets", type=int, default=1_000_000, help="ingest file (b)")
    parser.add_argument("--ingest-flows", type=int, default=50_000)
    parser.add_argument("--mb", type=int, default=DEFAULT_MB, help="store budget (MB)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="engine replays each way (b); medians: this machine is noisy")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replay-one", nargs=2, metavar=("PCAP", "MB"),
                        help=argparse.SUPPRESS)  # one timed replay (replay_apart)
    args = parser.parse_args(argv)
    if args.replay_one:
        print(engine_replay(args.replay_one[0], int(args.replay_one[1])))
        return 0
    workdir = tempfile.mkdtemp(prefix="netmon-bench-packets-")
    try:
        many = os.path.join(workdir, "many.pcap")
        info = synthetic_pcap(many, args.flow_packets, args.flows, seed=args.seed)
        budget = args.mb << 20
        r = store_alone(many, budget)
        os.unlink(many)
        mb = 1 << 20
        print(f"(a) store alone: {r['packets']:,} packets over {r['flows']:,} flows "
              f"({info['bytes'] / 1e6:.0f} MB of frames)")
        print(f"    store {r['store_bytes'] / mb:.1f} MB (peak {r['store_peak'] / mb:.1f} MB) "
              f"of a {args.mb} MB budget; {r['used'] / mb:.1f} MB in use, {r['rows']:,} rows "
              f"of {r['kept_flows']:,} flows; {r['compactions']} compactions dropped "
              + ", ".join(f"{k} {v:,}" for k, v in r["dropped"].items()))
        print(f"    append: {r['append_s'] * 1e9 / r['packets']:.0f} ns/packet "
              f"({r['append_s']:.2f} s in all); RSS growth {r['rss_growth'] / mb:.0f} MB with "
              f"the flow table, {r['rss_after_table'] / mb:.0f} MB once it is freed")

        path = os.path.join(workdir, "ingest.pcap")
        synthetic_pcap(path, args.packets, args.ingest_flows, seed=args.seed)
        on, off = [], []
        for _ in range(args.repeat):  # interleaved: machine noise hits both alike
            off.append(replay_apart(path, 0))
            on.append(replay_apart(path, args.mb))
        m_on, m_off = statistics.median(on), statistics.median(off)
        print(f"(b) engine replay of {args.packets:,} packets over {args.ingest_flows:,} "
              f"flows, median of {args.repeat}: store off {args.packets / m_off:,.0f} pkt/s "
              f"({m_off:.2f} s), store on ({args.mb} MB) {args.packets / m_on:,.0f} pkt/s "
              f"({m_on:.2f} s): on/off time = {m_on / m_off:.3f} (target <= 1.15)")
        print("    runs off: " + " ".join(f"{t:.2f}" for t in off)
              + " · on: " + " ".join(f"{t:.2f}" for t in on))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
