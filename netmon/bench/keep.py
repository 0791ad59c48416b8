"""``python -m netmon.bench keep``: what ``--keep-packets`` costs on a local disk.

Runs on the main thread, spawning netmon as child processes, as a user runs it. The
bench file of ``netmon.bench ingest`` (a synthetic pcap, 1 M packets over 50 k flows by
default) is replayed headless with and without ``--keep-packets DIR`` (DIR in a
fresh temporary directory each time, the cap above the file's size so nothing is
deleted), alternating, ``--repeat`` times each (medians kept): the ratio of the two,
MB written to DIR, and the packets not written (the writer fell behind; netmon says so
in a warning line).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _dir_bytes(path: str) -> int:
    return sum(e.stat().st_size for e in os.scandir(path) if e.is_file())


def _replay(pcap: str, keep: str | None) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "netmon", "--headless", "--no-cluster", "-r", pcap]
    if keep:
        cmd += ["--keep-packets", keep, "--keep-size", "64G"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"bench: netmon failed ({done.returncode}): {done.stderr[-300:]}")
    return wall, done.stderr


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
        for i in range(args.repeat):
            plain.append(_replay(pcap, None)[0])
            keep = os.path.join(workdir, f"ring{i}")
            wall, err = _replay(pcap, keep)
            kept.append(wall)
            written.append(_dir_bytes(keep))
            m = re.search(r"(\d+) packets were not written", err)
            not_written.append(int(m.group(1)) if m else 0)
            shutil.rmtree(keep)
        res = {"packets": info["packets"], "file_mb": size / 1e6,
               "plain_s": statistics.median(plain), "keep_s": statistics.median(kept),
               "written_mb": statistics.median(written) / 1e6,
               "not_written": max(not_written)}
        res["ratio"] = res["keep_s"] / res["plain_s"]
        print(f"headless --no-cluster replay, median of {args.repeat}: "
              f"{res['plain_s']:.2f} s without, {res['keep_s']:.2f} s with --keep-packets "
              f"({res['ratio']:.2f}x; {info['packets'] / res['plain_s']:,.0f} vs "
              f"{info['packets'] / res['keep_s']:,.0f} pkt/s end to end)")
        print(f"--keep-packets wrote {res['written_mb']:.0f} MB (segments and index; "
              f"{res['written_mb'] * 1e6 / info['packets']:.0f} bytes per packet, the "
              f"file is {res['file_mb']:.0f} MB); packets not written: "
              f"{res['not_written']:,} (worst run)")
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
    parser.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = parser.parse_args(argv)
    res = bench_keep(args)
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
