"""Listener benchmark: ``python -m netmon.bench listener`` (or ``-m netmon.bench.listener``).

Runs on the main thread. A bounded loopback load generator (:func:`generate`: plain
non-blocking sockets, no Twisted, 127.0.0.1 only, stops after N connections or a
deadline) opens connections to

1. a bare Twisted server that accepts and discards (the baseline: what accepting
   costs on this machine), then
2. ``netmon --json --listen`` with the engine ticking and clustering,

and prints connections/s accepted, how many were recorded (each exactly once, or the
loss), the longest gap between snapshots, and memory: bytes per recorded connection
against bytes per captured flow, both in the netmon process and in a bare FlowTable,
as ratios against baselines measured in the same run (this machine is shared and
noisy: compare ratios, not absolutes).
"""

from __future__ import annotations

import argparse
import errno
import gc
import itertools
import json
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

from netmon.bench.memory import rss_bytes
from netmon.testing.ports import free_port

#: What the generator's connections send, in turn (classes: http, ssh, tls, text, none).
PAYLOADS = (b"GET /c/%d HTTP/1.0\r\n\r\n", b"SSH-2.0-loadgen_%d\r\n",
            b"\x16\x03\x01\x00\x40\x01\x00\x00\x3c\x03\x03%d", b"hello %d\n", b"")


def generate(port: int, total: int, *, concurrency: int = 200, rate: float = 0.0,
             hold: float = 0.05, deadline: float = 60.0, host: str = "127.0.0.1") -> dict:
    """Open ``total`` TCP connections to host:port, at most ``concurrency`` at once and
    ``rate`` per second (0 = as fast as they complete). Each sends a small payload,
    stays open ``hold`` seconds and closes. Returns counts and timing."""
    if host not in ("127.0.0.1", "::1"):
        raise ValueError("the load generator only targets loopback")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sel = selectors.DefaultSelector()
    holding: deque[tuple[float, socket.socket]] = deque()  # hold is constant: FIFO
    started = connected = failed = closed = peak = 0
    t0 = time.perf_counter()
    stop_at = t0 + deadline
    while closed + failed < total:
        now = time.perf_counter()
        if now > stop_at:
            break
        open_now = len(sel.get_map()) + len(holding)
        budget = total - started if not rate else min(total, int((now - t0) * rate) + 1) - started
        while budget > 0 and open_now < concurrency:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                failed += 1
            else:
                sel.register(s, selectors.EVENT_WRITE, started)
            started += 1
            budget -= 1
            open_now += 1
        peak = max(peak, open_now)
        wait = 0.005
        if holding:
            wait = min(wait, max(holding[0][0] - now, 0.0))
        for key, _ in sel.select(wait):
            s = key.fileobj
            sel.unregister(s)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                s.close()
                failed += 1
                continue
            connected += 1
            payload = PAYLOADS[key.data % len(PAYLOADS)]
            if payload:
                try:
                    s.send(payload.replace(b"%d", str(key.data).encode()))
                except OSError:
                    pass
            holding.append((time.perf_counter() + hold, s))
        now = time.perf_counter()
        while holding and holding[0][0] <= now:
            holding.popleft()[1].close()
            closed += 1
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    for _, s in holding:
        s.close()
    elapsed = time.perf_counter() - t0
    return {"started": started, "connected": connected, "failed": failed, "closed": closed,
            "peak_open": peak, "elapsed": elapsed, "rate": connected / max(elapsed, 1e-9)}


def serve_bare(port: int, seconds: float) -> None:
    """The baseline: a Twisted server that accepts and discards, for ``seconds``."""
    from twisted.internet import protocol, reactor

    class Discard(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:
            pass

    factory = protocol.Factory.forProtocol(Discard)
    factory.noisy = False
    reactor.listenTCP(port, factory, backlog=1024, interface="127.0.0.1")
    reactor.callLater(seconds, reactor.stop)
    print("ready", flush=True)
    reactor.run()


def table_memory(kind: str, n: int) -> float:
    """Bytes of RSS per flow after accounting ``n`` flows in a fresh FlowTable: captured
    single-packet TCP flows (``kind`` "captured") or listener records ("connections")."""
    import numpy as np

    from netmon.core.values import ConnectionRecord
    from netmon.flows.table import FlowTable

    table = FlowTable(max_flows=n * 2, idle_timeout=1e9, active_timeout=1e9)
    gc.collect()
    before = rss_bytes()
    ts = 1_700_000_000.0
    local = bytes([127, 0, 0, 1])
    for start in range(0, n, 8192):
        ids = np.arange(start, min(n, start + 8192)).tolist()
        peers = [(0x0A000000 + i // 50).to_bytes(4, "big") for i in ids]
        if kind == "captured":
            table.add_packets([(ts + i * 1e-6, 60, 6, p, 1024 + i % 50 * 1000, local, 8080, 2)
                               for i, p in zip(ids, peers, strict=True)])
        else:
            table.add_connections([ConnectionRecord(
                ts + i * 1e-6, ts + i * 1e-6 + 0.01, p, 1024 + i % 50 * 1000, local, 8080, 20,
                0, 1, 0, "client-closed", "http", "GET / HTTP/1.0", 400.0, 0.0, 0.0, (20,))
                for i, p in zip(ids, peers, strict=True)])
    gc.collect()
    after = rss_bytes()
    assert len(table) == n
    return (after - before) / n


def _child_table_memory(kind: str, n: int) -> float:
    code = (f"from netmon.bench.listener import table_memory; "
            f"print(table_memory({kind!r}, {n}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=600).stdout
    return float(out.strip().splitlines()[-1])


def run_bare(args: argparse.Namespace) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "netmon.bench.listener", "bare-server",
                             str(port), str(args.deadline + 10)],
                            stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        return generate(port, args.connections, concurrency=args.concurrency, rate=args.rate,
                        hold=args.hold, deadline=args.deadline)
    finally:
        proc.kill()
        proc.wait()


class _Netmon:
    """A ``netmon --json`` child whose snapshots a thread reads as they come (a pipe
    left unread would stall its output)."""

    def __init__(self, args: list[str], stdin: int | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "netmon", "--json", "--tick", "0.5",
                                      *args], stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.snaps: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.snaps.append(json.loads(line))

    def wait_for(self, done: Callable[[dict], bool], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.snaps and done(self.snaps[-1]):
                return self.snaps[-1]
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        err = (self.proc.stderr.read().decode(errors="replace")
               if self.proc.poll() is not None else "")
        raise SystemExit(f"bench: netmon did not get there {err[-300:]}")

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def finish(self) -> dict:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        else:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.snaps[-1]


def _recorded(snap: dict) -> int:
    return sum(snap["sources"][0]["listener"]["ended"].values())


def run_netmon(args: argparse.Namespace) -> dict:
    """Generator against ``netmon --listen``: rate, loss, tick gaps, memory growth."""
    port = free_port()
    child = _Netmon(["--listen", f"127.0.0.1:{port}",
                     "--listen-max-per-source", str(args.connections),
                     "--listen-max-conns", str(max(1000, args.concurrency * 2)),
                     "--duration", str(args.deadline * 2 + 60)])
    try:
        child.wait_for(lambda s: s["sources"][0]["state"] == "running", 30)
        warm = max(args.connections // 10, 1)
        generate(port, warm, concurrency=args.concurrency, hold=args.hold)
        child.wait_for(lambda s: _recorded(s) >= warm and s["flows_seen"] >= warm, 30)
        time.sleep(1.0)
        rss0 = child.rss()
        first_snap = len(child.snaps)
        load = generate(port, args.connections, concurrency=args.concurrency, rate=args.rate,
                        hold=args.hold, deadline=args.deadline)
        total = warm + load["connected"]
        child.wait_for(lambda s: _recorded(s) >= total and s["flows_seen"] >= total, 30)
        time.sleep(1.0)
        rss1 = child.rss()
        during = [s["time"] for s in child.snaps[first_snap:]]
    finally:
        final = child.finish()
    lis = final["sources"][0]["listener"]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    return {"load": load, "warm": warm, "accepted": lis["accepted"] - warm,
            "recorded": _recorded(final) - warm, "refused": lis["refused"],
            "flows_seen": final["flows_seen"] - warm, "ended": lis["ended"],
            "classes": lis["classes"], "max_tick_gap": max(gaps) if gaps else 0.0,
            "rss_growth": rss1 - rss0}


def _connections_pcap(first: int, count: int, port: int, t0: float, rate: float) -> bytes:
    """pcap records (no header) of ``count`` TCP connections to 127.0.0.1:port, each
    handshake, 20 bytes of request and close: what a capture of the load would hold."""
    from netmon.ingest.pcapwrite import pcap_record
    from netmon.testing.frames import ethernet, ipv4, tcp

    out = []
    for i in range(first, first + count):
        client = f"127.0.{1 + i // 40000}.1"
        cport = 20000 + i % 40000
        ts = t0 + i / rate
        segments = ((True, 0x02, b""), (False, 0x12, b""), (True, 0x18, b"x" * 20),
                    (True, 0x11, b""), (False, 0x11, b""))
        for k, (up, flags, payload) in enumerate(segments):
            if up:
                packet = ipv4(client, "127.0.0.1", 6, tcp(cport, port, flags=flags,
                                                           payload=payload))
            else:
                packet = ipv4("127.0.0.1", client, 6, tcp(port, cport, flags=flags))
            out.append(pcap_record(ts + k * 1e-4, ethernet(packet, 0x0800)))
    return b"".join(out)


def run_capture_baseline(args: argparse.Namespace) -> dict:
    """The same number of connections as captured flows, piped into ``netmon -r -``:
    the process's memory growth per captured flow, measured like the listener's."""
    from netmon.ingest.linktypes import LINKTYPE_ETHERNET
    from netmon.ingest.pcapwrite import pcap_header

    n = args.connections
    warm = max(n // 10, 1)
    t0 = time.time()
    child = _Netmon(["-r", "-"], stdin=subprocess.PIPE)
    try:
        child.proc.stdin.write(pcap_header(LINKTYPE_ETHERNET) +
                               _connections_pcap(0, warm, 8080, t0, 3000.0))
        child.proc.stdin.flush()
        child.wait_for(lambda s: s["flows_seen"] >= warm, 60)
        time.sleep(1.0)
        rss0 = child.rss()
        child.proc.stdin.write(_connections_pcap(warm, n, 8080, t0, 3000.0))
        child.proc.stdin.flush()
        child.wait_for(lambda s: s["flows_seen"] >= warm + n, 60)
        time.sleep(1.0)
        rss1 = child.rss()
    finally:
        child.finish()
    return {"flows": n, "rss_growth": rss1 - rss0}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bare-server"]:
        serve_bare(int(argv[1]), float(argv[2]))
        return 0
    p = argparse.ArgumentParser(prog="python -m netmon.bench listener")
    p.add_argument("--connections", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--rate", type=float, default=0.0, help="connections/s (0: unpaced)")
    p.add_argument("--hold", type=float, default=0.03, help="seconds each stays open")
    p.add_argument("--deadline", type=float, default=60.0)
    p.add_argument("--table-flows", type=int, default=200_000,
                   help="flows for the FlowTable memory comparison")
    p.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = p.parse_args(argv)

    bare = run_bare(args)
    print(f"baseline, bare Twisted accept-and-discard server: {bare['rate']:,.0f} conn/s "
          f"({bare['connected']:,} connections, peak {bare['peak_open']} open)")
    res = run_netmon(args)
    load = res["load"]
    lost = load["connected"] - res["recorded"]
    print(f"netmon --listen (engine ticking every 0.5 s, clustering on): "
          f"{load['rate']:,.0f} conn/s accepted ({load['connected']:,} connections, "
          f"peak {load['peak_open']} open, {load['failed']} failed to connect)")
    print(f"  recorded {res['recorded']:,} connections, {res['flows_seen']:,} flows, "
          f"lost {lost}, refused {res['refused']}; ends since start (with "
          f"{res['warm']:,} warm-up connections) {res['ended']}")
    print(f"  longest gap between snapshots: {res['max_tick_gap']:.2f} s (tick 0.5 s)")
    ratio = load["rate"] / bare["rate"]
    print(f"  ratio netmon / bare server = {ratio:.2f}x; target >= 2,000 conn/s with no loss: "
          f"{'met' if load['rate'] >= 2000 and lost == 0 else 'NOT met'}")

    per_flow = _child_table_memory("captured", args.table_flows)
    per_conn = _child_table_memory("connections", args.table_flows)
    per_rec_proc = res["rss_growth"] / max(res["recorded"], 1)
    cap = run_capture_baseline(args)
    per_flow_proc = cap["rss_growth"] / cap["flows"]
    print(f"memory, FlowTable alone ({args.table_flows:,} flows): {per_conn:,.0f} B per "
          f"recorded connection vs {per_flow:,.0f} B per captured flow = "
          f"{per_conn / per_flow:.2f}x (target <= 1.0x)")
    print(f"memory, netmon process growth: {per_rec_proc:,.0f} B per recorded connection "
          f"(--listen) vs {per_flow_proc:,.0f} B per captured flow (the same connections as a "
          f"pcap piped into -r -) = {per_rec_proc / max(per_flow_proc, 1):.2f}x")
    if args.json:
        print(json.dumps({"bare_rate": bare["rate"], "rate": load["rate"], "lost": lost,
                          "recorded": res["recorded"], "flows_seen": res["flows_seen"],
                          "max_tick_gap": res["max_tick_gap"],
                          "bytes_per_captured_flow": per_flow,
                          "bytes_per_connection_table": per_conn,
                          "bytes_per_connection_process": per_rec_proc,
                          "bytes_per_captured_flow_process": per_flow_proc}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
