"""``python -m netmon.bench names``: speed of the passive name parsers and the name cache.

Runs on the main thread only. Prints, each as the best of ``--repeat`` runs:
- DNS responses parsed per second (every UDP DNS response of the shared captures, read
  with tshark when both are here, else built ones), and address records per second;
- the same responses over TCP through DnsStream, in 512-byte chunks;
- NameCache: adds per second, and lookups per second for 50 k addresses (half of them
  known), vectorised (``lookup_many``) beside one ``get`` per address in the same run;
- HTTP first requests and SSH banners parsed per second.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from netmon.names.cache import NameCache
from netmon.names.dns import TYPE_A, TYPE_AAAA, TYPE_CNAME, DnsStream, parse_dns
from netmon.names.http import parse_http_request
from netmon.names.ssh import parse_ssh_banner
from netmon.testing.names import dns_response, tcp_framed

CAPTURES = Path(__file__).resolve().parents[3] / "shared" / "captures"  # ../shared
T0 = 1_700_000_000.0
HTTP = (b"GET /r/popular/?geo_filter=GLOBAL HTTP/1.1\r\nHost: www.reddit.com\r\nUser-Agent: "
        b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: "
        b"text/html\r\nAccept-Language: en-US,en;q=0.5\r\nConnection: keep-alive\r\n\r\n")
SSH = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


def dns_payloads() -> tuple[list[bytes], str]:
    """UDP DNS responses of the shared captures (via tshark), or built ones."""
    if CAPTURES.is_dir() and shutil.which("tshark"):
        out = []
        for path in sorted(CAPTURES.iterdir()):
            if path.suffix in (".pcap", ".pcapng") and not path.name.startswith("14_"):
                run = subprocess.run(["tshark", "-r", str(path), "-Y",
                                      "dns.flags.response==1 && udp", "-T", "fields", "-e",
                                      "udp.payload"], capture_output=True, text=True,
                                     timeout=120)
                out += [bytes.fromhex(h) for h in run.stdout.split()]
        if out:
            return out, "the shared captures' UDP DNS responses"
    rng = random.Random(1)
    built = [dns_response([(f"www.site{i}.example", TYPE_A)], [
        (f"www.site{i}.example", TYPE_CNAME, 300, f"edge{i}.cdn.example"),
        *[(f"edge{i}.cdn.example", TYPE_A, 60, rng.randbytes(4)) for _ in range(4)],
        (f"edge{i}.cdn.example", TYPE_AAAA, 60, rng.randbytes(16))]) for i in range(100)]
    return built, "built responses (no ../shared captures or tshark here)"


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netmon.bench names")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--addresses", type=int, default=50_000)
    args = parser.parse_args(argv)
    rep = max(1, args.repeat)

    payloads, origin = dns_payloads()
    msgs = [parse_dns(p) for p in payloads]
    records = sum(len(m.names) for m in msgs if m)
    rounds = max(1, 20_000 // len(payloads))
    work = payloads * rounds
    def parse_all() -> None:
        for p in work:  # results dropped as they come, as the ingest path would
            parse_dns(p)
    t = best(parse_all, rep)
    print(f"DNS: {len(payloads)} responses from {origin}, {records} address records")
    print(f"  parse_dns: {len(work) / t:,.0f} responses/s, {records * rounds / t:,.0f} "
          f"address records/s ({1e6 * t / len(work):.1f} us per response)")
    stream = tcp_framed(payloads)
    chunks = [stream[i: i + 512] for i in range(0, len(stream), 512)]

    def over_tcp() -> None:
        s = DnsStream()
        for c in chunks:
            s.feed(c)
    t = best(over_tcp, rep)
    print(f"  DnsStream (TCP, 512-byte chunks): {len(payloads) / t:,.0f} responses/s")

    n = args.addresses
    rng = np.random.default_rng(14)
    addrs = np.zeros((n, 16), np.uint8)
    addrs[:, 12:] = rng.integers(0, 256, (n, 4), dtype=np.uint8)
    fams = np.full(n, 4, np.uint8)
    six = rng.random(n) < 0.2  # a fifth IPv6
    addrs[six] = rng.integers(0, 256, (int(six.sum()), 16), dtype=np.uint8)
    fams[six] = 6
    rows = [(bytes(a), int(f)) for a, f in zip(addrs, fams, strict=True)]
    cache = NameCache()

    def fill() -> None:
        for i, (a, f) in enumerate(rows[::2]):
            cache.add(a, f, f"host{i}.example", "dns", 3600, T0)
    t_add = best(fill, rep)
    out = cache.lookup_many(addrs, fams, T0 + 1)
    hits = sum(e is not None for e in out)
    t_many = best(lambda: cache.lookup_many(addrs, fams, T0 + 1), rep)
    t_get = best(lambda: [cache.get(a, f, T0 + 1) for a, f in rows], rep)
    print(f"NameCache: {len(cache):,} entries, {n:,} addresses looked up ({hits:,} known)")
    print(f"  add: {n // 2 / t_add:,.0f}/s")
    print(f"  lookup_many: {n / t_many:,.0f} lookups/s ({1e3 * t_many:.1f} ms for {n:,})")
    print(f"  get, one by one (baseline): {n / t_get:,.0f} lookups/s "
          f"({1e3 * t_get:.1f} ms; lookup_many is {t_get / t_many:.1f}x faster)")

    reqs = [HTTP] * 20_000
    t = best(lambda: [parse_http_request(r) for r in reqs], rep)
    print(f"HTTP: {len(reqs) / t:,.0f} first requests/s ({len(HTTP)} bytes each)")
    banners = [SSH] * 20_000
    t = best(lambda: [parse_ssh_banner(b) for b in banners], rep)
    print(f"SSH: {len(banners) / t:,.0f} banners/s")
    return 0
