"""``python -m netmon.bench ssh``: CPU per packet of four --ssh sources vs one local capture.

Runs on the main thread, from a source checkout (it borrows the tests' throwaway
sshd, ``netmon/testing/sshd.py``, as the four "remote" hosts: all on 127.0.0.1). A
sender process paces UDP datagrams to 127.0.0.1 for a fixed time; netmon runs headless

- once with ``-i lo`` (one local capture: dumpcap as its child), the baseline, and
- once with four ``--ssh`` sources capturing ``lo`` through that sshd,

with the same filter, so each SSH source sees every packet (four times the packets
in all: CPU is compared per packet counted). netmon's own CPU (user + system of the
netmon process, read from /proc) per packet is the figure the target is about; the
local children's CPU (dumpcap, or the four ssh clients decrypting) and the remote
side's (sshd + dumpcap) are printed beside it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from netmon.testing.ports import free_port


def sender(port: int, rate: float, seconds: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"x" * 200
    sent = 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        due = int(elapsed * rate) - sent
        for i in range(due):
            s.sendto(payload, ("127.0.0.1", port + (sent + i) % 4))
        sent += max(due, 0)
        time.sleep(0.002)


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def measure(args: list[str], port: int, rate: float, seconds: float,
            remote_pids: callable = lambda: []) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "netmon", "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last: dict = {}

    def read() -> None:
        for line in proc.stdout:
            last.update(json.loads(line))
    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 30
    while not (last.get("sources") and all(s["state"] == "running"
                                           for s in last["sources"])):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"bench ssh: netmon did not start: {proc.stderr.read()[-500:]}")
        time.sleep(0.05)
    time.sleep(1.0)  # let start-up costs settle before measuring
    me = psutil.Process(proc.pid)
    kids = me.children(recursive=True)
    remote = [psutil.Process(p) for p in remote_pids()]
    pk0 = last["ip_packets"]
    c0 = (_cpu(me), sum(_cpu(k) for k in kids), sum(_cpu(r) for r in remote))
    gen = mp.Process(target=sender, args=(port, rate, seconds))
    gen.start()
    gen.join()
    time.sleep(1.5)  # what is in flight arrives
    c1 = (_cpu(me), sum(_cpu(k) for k in kids), sum(_cpu(r) for r in remote))
    packets = last["ip_packets"] - pk0
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    per = [(b - a) / max(packets, 1) * 1e6 for a, b in zip(c0, c1, strict=True)]
    return {"packets": packets, "netmon_us": per[0], "children_us": per[1],
            "remote_us": per[2], "sources": len(last["sources"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netmon.bench ssh")
    ap.add_argument("--rate", type=float, default=5000, help="datagrams/s sent")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--sources", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each (best kept)")
    args = ap.parse_args(argv)
    from netmon.testing.sshd import Sshd
    port = free_port(socket.SOCK_DGRAM)
    bpf = f"udp and dst portrange {port}-{port + 3}"
    with tempfile.TemporaryDirectory() as tmp, Sshd(Path(tmp)) as sshd:
        ssh_args: list[str] = []
        for _ in range(args.sources):
            ssh_args += ["--ssh", f"{sshd.user}@{sshd.host}:lo"]
        for opt in sshd.client_options():
            ssh_args += ["--ssh-option", opt]

        def remote() -> list[int]:
            return [p.pid for p in psutil.process_iter(["ppid"])
                    if _under(p, sshd.proc.pid)]
        results: dict[str, dict] = {}
        runs = (("local", ["-i", "lo"], args.rate, lambda: []),
                # the same packet count as the SSH run: fixed costs spread equally
                ("local_same", ["-i", "lo"], args.rate * args.sources, lambda: []),
                ("ssh", ssh_args, args.rate, remote))
        for _ in range(args.repeat):
            for name, extra, rate, rp in runs:
                r = measure([*extra, "-f", bpf], port, rate, args.seconds, rp)
                if name not in results or r["netmon_us"] < results[name]["netmon_us"]:
                    results[name] = r
    loc, same, far = results["local"], results["local_same"], results["ssh"]
    n = args.sources
    print(f"UDP to 127.0.0.1 for {args.seconds:.0f} s; best of {args.repeat}")
    for name, r in ((f"1 local, {args.rate:,.0f}/s", loc),
                    (f"1 local, {args.rate * n:,.0f}/s", same),
                    (f"{n} ssh, {args.rate:,.0f}/s", far)):
        print(f"  {name:18s} packets {r['packets']:>8,}  netmon {r['netmon_us']:5.1f} us/pkt"
              f"  its children {r['children_us']:5.1f} us/pkt"
              f"  remote side {r['remote_us']:5.1f} us/pkt")
    print(f"netmon CPU per packet, {n} ssh sources vs 1 local capture of the same packets/s:"
          f" {far['netmon_us'] / max(same['netmon_us'], 1e-9):.2f}x; vs 1 local capture "
          f"at one source's rate: {far['netmon_us'] / max(loc['netmon_us'], 1e-9):.2f}x "
          "(target <= 1.00)")
    return 0


def _under(p: psutil.Process, root: int) -> bool:
    try:
        return any(a.pid == root for a in p.parents())
    except psutil.Error:
        return False


if __name__ == "__main__":
    sys.exit(main())
