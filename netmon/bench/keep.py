"""``python -m netmon.bench keep``: what ``--keep-packets`` costs on a local disk.

Runs on the main thread, spawning netmon as child processes, as a user runs it. The
bench file of ``netmon.bench ingest`` (a synthetic pcap, 1 M packets over 50 k flows by
default) is replayed headless with and without ``--keep-packets DIR`` (DIR in a
fresh temporary directory each time, the cap above the file's size so nothing is
deleted), alternating, ``--repeat`` times each (medians kept): the ratio of the two,
MB written to DIR, and the packets not written (the writer fell behind; netmon says so
in a warning line). A replay never drops (it waits for the writer), so the count
should be 0.

Then, in this process, the cost of a packet-list query (``DiskReader.packets_of``, what
the flow screen asks on the reactor thread) while the open segment is ``--segment-mb``
big: the ring's own reader searches the index rows the writer keeps in memory; a
reader without them (another process, or the code before) reads the whole unsorted
``.idx`` file each time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _dir_bytes(path: str) -> int:
    return sum(e.stat().st_size for e in os.scandir(path) if e.is_file())


def _cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _replay(pcap: str, keep: str | None) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system: steadier than wall time on a busy
    machine) and stderr of one headless replay."""
    cmd = [sys.executable, "-m", "netmon", "--headless", "--no-cluster", "-r", pcap]
    if keep:
        cmd += ["--keep-packets", keep, "--keep-size", "64G"]
    c0, t0 = _cpu_children(), time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall, cpu = time.perf_counter() - t0, _cpu_children() - c0
    if done.returncode != 0:
        raise SystemExit(f"bench: netmon failed ({done.returncode}): {done.stderr[-300:]}")
    return wall, cpu, done.stderr


def query_open_segment(pcap: str, workdir: str, seg_mb: int, queries: int) -> dict:
    """Fill one open segment of ``seg_mb`` MB from ``pcap``; time packet-list queries
    of random flows with the ring's reader and with a reader that reads files only."""
    import numpy as np

    from netmon.ingest.diskindex import DiskReader
    from netmon.ingest.diskring import DiskRing
    from netmon.testing.replay import counted_batches

    seg = seg_mb << 20
    ring = DiskRing(os.path.join(workdir, "query"), 4 * seg, segment_bytes=seg,
                    queue_bytes=1 << 40)
    ring.start()
    try:
        for batch, fid, a2b, seq in counted_batches(pcap):
            ring.append(batch, fid, a2b, seq)
            if ring.bytes_written + ring.queued >= seg * 0.98:
                break
        while ring.queued:  # the writer writes it all; the segment stays open
            time.sleep(0.01)
        stem, rows, _ = ring.open_index
        flows = np.unique(rows["flow"])
        pick = np.random.default_rng(1).choice(flows, min(queries, len(flows)),
                                               replace=False).tolist()
        shared, files = ring.reader(), DiskReader(ring.directory, ring.run)
        res = {"segment_mb": os.path.getsize(os.path.join(ring.directory,
                                                          f"{stem}.pcapng")) / 1e6,
               "rows": len(rows), "flows": len(flows)}
        for name, reader in (("memory", shared), ("file", files)):
            times, kept = [], 0
            for f in pick:
                t0 = time.perf_counter()
                kept += len(reader.packets_of(f))
                times.append(time.perf_counter() - t0)
            res[f"{name}_ms"] = statistics.median(times) * 1e3
            res[f"{name}_packets"] = kept
        if res["memory_packets"] != res["file_packets"]:
            raise SystemExit("bench: the two readers disagree")
        return res
    finally:
        ring.close()


def bench_keep(args: argparse.Namespace) -> dict:
    from netmon.testing.synth import synthetic_pcap

    workdir = tempfile.mkdtemp(prefix="netmon-bench-keep-")
    try:
        pcap = os.path.join(workdir, "synthetic.pcap")
        info = synthetic_pcap(pcap, args.packets, args.flows, seed=args.seed)
        size = os.path.getsize(pcap)
        print(f"synthetic pcap: {info['packets']:,} packets, {info['flows']:,} flows, "
              f"{size / 1e6:.0f} MB (on {workdir})")
        plain, kept, written, not_written = [], [], [], []
        plain_cpu, kept_cpu = [], []
        for i in range(args.repeat):
            wall, cpu, _ = _replay(pcap, None)
            plain.append(wall)
            plain_cpu.append(cpu)
            keep = os.path.join(workdir, f"ring{i}")
            wall, cpu, err = _replay(pcap, keep)
            kept.append(wall)
            kept_cpu.append(cpu)
            written.append(_dir_bytes(keep))
            m = re.search(r"(\d+) packets were not written", err)
            not_written.append(int(m.group(1)) if m else 0)
            shutil.rmtree(keep)
        res = {"packets": info["packets"], "file_mb": size / 1e6,
               "plain_s": statistics.median(plain), "keep_s": statistics.median(kept),
               "written_mb": statistics.median(written) / 1e6,
               "not_written": max(not_written), "plain_cpu_s": statistics.median(plain_cpu),
               "keep_cpu_s": statistics.median(kept_cpu)}
        res["ratio"] = res["keep_s"] / res["plain_s"]
        res["written_mb_s"] = res["written_mb"] / res["keep_s"]
        print(f"headless --no-cluster replay, median of {args.repeat}: "
              f"{res['plain_s']:.2f} s without, {res['keep_s']:.2f} s with --keep-packets "
              f"({res['ratio']:.2f}x; {info['packets'] / res['plain_s']:,.0f} vs "
              f"{info['packets'] / res['keep_s']:,.0f} pkt/s end to end)")
        print(f"CPU (user + system), median: {res['plain_cpu_s']:.2f} s without, "
              f"{res['keep_cpu_s']:.2f} s with ({res['keep_cpu_s'] / res['plain_cpu_s']:.2f}x; "
              f"{(res['keep_cpu_s'] - res['plain_cpu_s']) / info['packets'] * 1e6:.2f} us "
              "per packet kept)")
        print(f"--keep-packets wrote {res['written_mb']:.0f} MB (segments and index; "
              f"{res['written_mb'] * 1e6 / info['packets']:.0f} bytes per packet, the "
              f"file is {res['file_mb']:.0f} MB); packets not written: "
              f"{res['not_written']:,} (worst run); {res['written_mb_s']:.0f} MB/s "
              "written end to end")
        if args.segment_mb:
            q = query_open_segment(pcap, workdir, args.segment_mb, args.queries)
            res["query"] = q
            print(f"packet-list query at an open {q['segment_mb']:.0f} MB segment "
                  f"({q['rows']:,} packets, {q['flows']:,} flows), median of "
                  f"{args.queries}: {q['memory_ms']:.2f} ms from the writer's index in "
                  f"memory, {q['file_ms']:.2f} ms reading the .idx file "
                  f"({q['file_ms'] / q['memory_ms']:.0f}x)")
        return res
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netmon.bench keep",
                                     description="the cost of --keep-packets")
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--flows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (medians kept)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--segment-mb", type=int, default=256,
                        help="open segment size for the query timing (0: skip it)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = parser.parse_args(argv)
    res = bench_keep(args)
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
