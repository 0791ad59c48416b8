"""Per-tick cost of attributing new flows to processes: ``python -m netmon.bench
procwire [--flows N] [--ticks T] [--known F]``.

Runs on the main thread. Each tick N new TCP flows (one SYN each, 127.0.0.0/8) enter
a :class:`~netmon.flows.table.FlowTable`; a fraction F of them has its client socket
in the :class:`~netmon.names.procs.ProcessTable` (as the resolver publishes it, with
10 k other sockets), the rest is unknown. Timed separately: counting the batch
(``add_batch``, the baseline every tick pays anyway), :meth:`ProcessAttributor.attribute`
for the tick's new flows (the first look-up), the same again after a table refresh
(the unknown ones are looked up again), a tick with nothing new, and
:meth:`ProcessAttributor.totals` (once per snapshot) at the table's size by then.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time

import numpy as np

from netmon.flows.procattr import ProcessAttributor
from netmon.flows.table import FlowTable
from netmon.ingest.batch import PacketBatch
from netmon.names.procs import ProcessInfo, ProcessTable
from netmon.names.proctext import TCP, tuple_key


def _batch(tick: int, n: int) -> tuple[PacketBatch, list[tuple[bytes, int]]]:
    """n SYNs from distinct clients 127.1.x.y:port to 127.0.0.1:8080."""
    i = np.arange(n) + tick * n
    src = np.zeros((n, 16), np.uint8)
    src[:, 12], src[:, 13] = 127, 1 + (i >> 16) % 200
    src[:, 14], src[:, 15] = (i >> 8) & 0xFF, i & 0xFF
    dst = np.zeros((n, 16), np.uint8)
    dst[:, 12:16] = (127, 0, 0, 1)
    sport = 1024 + (i % 60000)
    batch = PacketBatch(ts=np.full(n, float(tick)), wirelen=np.full(n, 74, np.int64),
                        proto=np.full(n, TCP, np.int64), fam=np.full(n, 4, np.int64),
                        src=src, sport=sport.astype(np.int64), dst=dst,
                        dport=np.full(n, 8080, np.int64), flags=np.full(n, 0x02, np.int64))
    clients = [(bytes(src[k]), int(sport[k])) for k in range(n)]
    return batch, clients


class _Source:
    def __init__(self) -> None:
        self.table = ProcessTable()

    def request_refresh(self) -> None:
        pass


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m netmon.bench procwire")
    ap.add_argument("--flows", type=int, default=10_000, help="new flows per tick")
    ap.add_argument("--ticks", type=int, default=10)
    ap.add_argument("--known", type=float, default=0.8,
                    help="share of new flows whose socket is in the process table")
    ap.add_argument("--window", type=float, default=3.0,
                    help="ticks an unknown flow is retried (the engine's 5 s at 1 s ticks "
                         "is 5; less when ticks are shorter)")
    args = ap.parse_args(argv)
    n = args.flows
    table = FlowTable(max_flows=max(1_000_000, 2 * n * args.ticks))
    attr = ProcessAttributor(table, window=args.window)
    src = _Source()
    attr.add_source(0, src)
    server = bytes(12) + socket.inet_aton("127.0.0.1")
    other = {tuple_key(TCP, server, 20000 + k, server, 30000 + k): ProcessInfo(9, "other")
             for k in range(10_000)}
    procs = [ProcessInfo(100 + k, f"proc{k}", "user", "") for k in range(50)]
    timings: dict[str, list[float]] = {"add_batch": [], "attribute": [], "retry": [],
                                       "idle": [], "totals": []}
    looked: dict[str, list[int]] = {"attribute": [], "retry": []}
    gen = 0
    for tick in range(args.ticks):
        batch, clients = _batch(tick, n)
        t0 = time.perf_counter()
        table.add_batch(batch)
        timings["add_batch"].append(time.perf_counter() - t0)
        known = int(n * args.known)
        conn = dict(other)
        for k, (addr, port) in enumerate(clients[:known]):
            conn[tuple_key(TCP, addr, port, server, 8080)] = procs[k % len(procs)]
        gen += 1
        src.table = ProcessTable(conn, {}, generation=gen)
        before = attr.lookups
        t0 = time.perf_counter()
        got = attr.attribute(float(tick))
        timings["attribute"].append(time.perf_counter() - t0)
        looked["attribute"].append(attr.lookups - before)
        assert got == known, (got, known)
        gen += 1
        src.table = ProcessTable(conn, {}, generation=gen)  # a refresh: retry the rest
        before = attr.lookups
        t0 = time.perf_counter()
        attr.attribute(float(tick))
        timings["retry"].append(time.perf_counter() - t0)
        looked["retry"].append(attr.lookups - before)
        t0 = time.perf_counter()
        attr.attribute(float(tick))
        timings["idle"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        attr.totals()
        timings["totals"].append(time.perf_counter() - t0)
    print(f"{n:,} new flows per tick, {args.ticks} ticks, {args.known:.0%} known; "
          f"{len(table):,} flows at the end, {attr.lookups:,} look-ups")
    for name, ts in timings.items():
        ms = [t * 1e3 for t in ts]
        extra = (f"   look-ups median {statistics.median(looked[name]):,.0f}"
                 if name in looked else "")
        print(f"  {name:10s} median {statistics.median(ms):7.2f} ms   max {max(ms):7.2f} ms"
              + extra)
    per = sum(timings["attribute"]) / max(sum(looked["attribute"]), 1) * 1e6
    print(f"  attribute: {per:.2f} us per look-up (numpy gather and writes included)")
    return 0
