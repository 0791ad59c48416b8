"""``python -m netmon.bench flowsout [--flows N]``: how fast ``--flows-out`` writes.

Runs on the main thread. Builds N synthetic flows as the flow table's columns
(:func:`netmon.testing.synth.synthetic_flow_columns`), then writes them, in the same
run, with the writer netmon uses (:class:`netmon.export.flowsout.FlowsOutWriter`:
bulk rendering into a nameless file published at the end) and with the per-flow
writer it replaced (a FlowView and ``json.dumps`` per flow, kept here only as the
baseline); and, as the disk's floor, the same number of bytes written raw and fsynced
(what no formatter can beat). Prints seconds and flows/s for each, the ratios, and
whether the two files hold the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence

from netmon.export.flowsout import FlowsOutWriter
from netmon.flows.views import views_from_columns
from netmon.testing.synth import synthetic_flow_columns

CHUNK = 50_000  # flows per write: as the engine hands over ended flows
OBSERVERS = ["live eth0", "ssh web1:any", "exporter 10.0.0.1"]
LABELS = {i: f"TCP/443 bulk download #{i}" for i in range(12)}


def old_per_flow_writer(path: str, chunks: Sequence[tuple[dict, list[bytes]]],
                        reason: str) -> int:
    """BASELINE ONLY: the ``--flows-out`` writer before bulk rendering (a FlowView and
    a dict per flow, ``json.dumps`` each); ~20 us a flow."""
    count = 0
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as fh:
        for cols, keys in chunks:
            for flow in views_from_columns(cols, keys, reason, LABELS, OBSERVERS):
                fh.write(json.dumps(flow.to_json(), separators=(",", ":")))
                fh.write("\n")
                count += 1
        fh.flush()
        os.fsync(fh.fileno())
    return count


def bulk_writer(path: str, chunks: Sequence[tuple[dict, list[bytes]]], reason: str) -> int:
    writer = FlowsOutWriter(path)
    for cols, keys in chunks:
        writer.write(cols, keys, reason, LABELS, OBSERVERS)
    return writer.commit()


def raw_write_floor(path: str, size: int) -> float:
    """The disk's floor for the same output: ``size`` bytes written in 8 MB blocks and
    fsynced, as ``dd bs=8M conv=fsync`` would; no formatting at all. Seconds."""
    block = bytes(8 << 20)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        left = size
        while left > 0:
            left -= os.write(fd, block[:min(left, len(block))])
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netmon.bench flowsout",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=4_000_000, help="flows (4000000)")
    parser.add_argument("--baseline-flows", type=int, default=0, metavar="N",
                        help="flows for the old writer (default: all; it takes ~20 us a "
                        "flow, so a smaller N is timed and its rate compared)")
    args = parser.parse_args(argv)
    cols, keys = synthetic_flow_columns(args.flows, seed=7)
    chunks = [({k: v[i:i + CHUNK] for k, v in cols.items()}, keys[i:i + CHUNK])
              for i in range(0, args.flows, CHUNK)]
    base_n = args.baseline_flows or args.flows
    base_chunks = [({k: v[:base_n] for k, v in cols.items()}, keys[:base_n])] \
        if base_n < args.flows else chunks
    with tempfile.TemporaryDirectory(prefix="netmon-bench-flowsout-") as tmp:
        new_path, old_path = os.path.join(tmp, "new.jsonl"), os.path.join(tmp, "old.jsonl")
        t0 = time.perf_counter()
        n_new = bulk_writer(new_path, chunks, "idle-timeout")
        t_new = time.perf_counter() - t0
        size = os.path.getsize(new_path)
        t_floor = raw_write_floor(os.path.join(tmp, "floor.bin"), size)
        os.unlink(os.path.join(tmp, "floor.bin"))
        t0 = time.perf_counter()
        n_old = old_per_flow_writer(old_path, base_chunks, "idle-timeout")
        t_old = time.perf_counter() - t0
        with open(new_path, "rb") as fa, open(old_path, "rb") as fb:
            head = fa.read(os.path.getsize(old_path))
            same = head == fb.read()
    rate_new, rate_old = n_new / t_new, n_old / t_old
    print(f"--flows-out of {n_new:,} flows ({size / 1e6:,.0f} MB)")
    print(f"  bulk writer (netmon)        {t_new:8.2f} s  {rate_new:12,.0f} flows/s")
    print(f"  raw write of as many bytes  {t_floor:8.2f} s  (the disk's floor: "
          f"netmon {t_new / t_floor:.2f}x of it)")
    print(f"  per-flow writer (baseline)  {t_old:8.2f} s  {rate_old:12,.0f} flows/s"
          f"  ({n_old:,} flows)")
    print(f"  speed-up {rate_new / rate_old:.1f}x; the first {n_old:,} lines "
          f"{'identical' if same else 'DIFFER'}")
    return 0 if same else 1
