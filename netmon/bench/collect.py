"""``python -m netmon.bench collect``: flow records/s the collector takes without loss.

Runs on the main thread; the receivers are child processes, run the way a user runs
them. A sender process paces IPFIX datagrams (24 records each, distinct 5-tuples,
sequence numbers set) to 127.0.0.1 at a stepped rate for a few seconds; each
receiver counts what arrived, so loss is exact (sent - received; the exporters'
sequence numbers tell netmon the same). Receivers, each at every rate:

- ``netmon --json --collect`` (decode, flow table, clustering, ticks: the product),
- a bare Twisted ``DatagramProtocol`` that only counts datagrams (the baseline: the
  most a Twisted collector in Python receives on this machine).

Prints, per rate, records/s sent and received, loss and netmon's CPU per record,
then the highest lossless rate of each and their ratio. Target: >= 50 k records/s
with no loss.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import psutil

from netmon.testing.nfexport import Flow, ipfix_datagrams
from netmon.testing.ports import free_port

PER_DATAGRAM = 24
_BARE = """
import signal, socket, sys
PER_DATAGRAM = int(sys.argv[2])
from twisted.internet import reactor, protocol
class Count(protocol.DatagramProtocol):
    n = 0
    def datagramReceived(self, data, addr):
        Count.n += 1
p = reactor.listenUDP(int(sys.argv[1]), Count(), interface="127.0.0.1", maxPacketSize=65535)
p.socket.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE, as netmon asks
def stop(*_):
    print(Count.n * PER_DATAGRAM, flush=True)
    reactor.stop()
signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(stop))
print("ready", flush=True)
reactor.run(installSignalHandlers=False)
"""


def build_pool(flows: int) -> list[bytearray]:
    """IPFIX datagrams for ``flows`` distinct flows (template in the first one only)."""
    now = float(int(time.time()))
    recs = [Flow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "10.200.0.1",
                 1024 + i % 60000, (443, 53, 80, 22)[i % 4], (6, 17, 6, 6)[i % 4],
                 1 + i % 40, 60 + (i * 37) % 60000, now - 30, now - 1, 0x1b)
            for i in range(flows)]
    grams = ipfix_datagrams(recs, per_datagram=PER_DATAGRAM, with_template=False, now=now)
    return [bytearray(g) for g in grams]


def template_datagram() -> bytes:
    """One record with the template: what every data datagram after it refers to."""
    now = float(int(time.time()))
    return ipfix_datagrams([Flow("10.0.0.1", "10.0.0.2", 1, 2, 6, 1, 40, now, now)],
                           now=now)[0]


def sender(port: int, rate: float, seconds: float, pool: list[bytearray],
           out: mp.Queue) -> None:
    """Send at ``rate`` records/s for ``seconds``, in 2 ms slices; report datagrams."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = ("127.0.0.1", port)
    s.sendto(template_datagram(), addr)  # one record; the template comes with it
    seq = 1
    per_s = rate / PER_DATAGRAM
    sent = 0
    t0 = time.perf_counter()
    i = 0
    n = len(pool)
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
        due = int(elapsed * per_s) - sent
        for _ in range(due):
            g = pool[i]
            struct.pack_into("!I", g, 8, seq & 0xFFFFFFFF)
            s.sendto(g, addr)
            seq += PER_DATAGRAM
            sent += 1
            i = i + 1 if i + 1 < n else 0
        time.sleep(0.002)
    out.put((sent * PER_DATAGRAM + 1, time.perf_counter() - t0))


def _drive(port: int, rate: float, seconds: float, pool: list[bytearray]) -> tuple[int, float]:
    q: mp.Queue = mp.Queue()
    p = mp.Process(target=sender, args=(port, rate, seconds, pool, q))
    p.start()
    sent, took = q.get(timeout=seconds + 60)
    p.join()
    return sent, took


def run_netmon(rate: float, seconds: float, pool: list[bytearray]) -> dict:
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen([sys.executable, "-m", "netmon", "--json", "--collect",
                             f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    last: dict = {}

    def read() -> None:
        for line in proc.stdout:
            last.update(json.loads(line))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while not last.get("sources") or last["sources"][0]["state"] != "running":
        time.sleep(0.05)
    ps = psutil.Process(proc.pid)
    cpu0 = sum(ps.cpu_times()[:2])
    sent, took = _drive(port, rate, seconds, pool)
    # Let what is queued drain: wait until the count stops moving.
    prev = -1
    while last["sources"][0]["collector"]["records"] != prev:
        prev = last["sources"][0]["collector"]["records"]
        time.sleep(1.0)
    cpu = sum(ps.cpu_times()[:2]) - cpu0
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    reader.join(timeout=5)
    col = last["sources"][0]["collector"]
    return {"sent": sent, "received": col["records"], "seq_lost": col["lost"],
            "rate": sent / took, "cpu_per_record_us": cpu / max(col["records"], 1) * 1e6,
            "flows": last.get("flows_seen", 0)}


def run_bare(rate: float, seconds: float, pool: list[bytearray]) -> dict:
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen([sys.executable, "-c", _BARE, str(port), str(PER_DATAGRAM)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    sent, took = _drive(port, rate, seconds, pool)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    received = int(proc.stdout.readline())
    proc.wait(timeout=10)
    return {"sent": sent, "received": received - PER_DATAGRAM + 1, "rate": sent / took}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netmon.bench collect")
    ap.add_argument("--rates", default="50000,100000,200000,300000",
                    help="records/s to try, comma-separated (ascending)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--flows", type=int, default=48_000, help="distinct 5-tuples sent")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    pool = build_pool(args.flows)
    rates = [float(r) for r in args.rates.split(",")]
    best = {"netmon": 0.0, "bare": 0.0}
    rows = []
    print(f"IPFIX, {PER_DATAGRAM} records per datagram, {args.flows:,} distinct flows, "
          f"{args.seconds:.0f} s per step, 127.0.0.1 (cpus: {os.cpu_count()})")
    for rate in rates:
        for name, fn in (("netmon", run_netmon), ("bare", run_bare)):
            r = fn(rate, args.seconds, pool)
            lost = r["sent"] - r["received"]
            extra = (f"  seq-lost {r['seq_lost']:,}  cpu {r['cpu_per_record_us']:.1f} us/record"
                     f"  flows {r['flows']:,}" if name == "netmon" else "")
            print(f"  {name:6s} asked {rate:>9,.0f}/s sent {r['rate']:>9,.0f}/s  "
                  f"received {r['received']:>9,} of {r['sent']:>9,}  lost {lost:,}{extra}")
            rows.append({"receiver": name, "asked": rate, **r, "lost": lost})
            if lost == 0:
                best[name] = max(best[name], r["rate"])
    print(f"highest lossless rate: netmon {best['netmon']:,.0f} records/s, bare Twisted "
          f"counter {best['bare']:,.0f} records/s (ratio "
          f"{best['netmon'] / max(best['bare'], 1):.2f}); target >= 50,000")
    if args.json:
        print(json.dumps({"rows": rows, "best": best}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
