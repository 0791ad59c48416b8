"""``python -m netmon.bench fuzz``: a long mutation-fuzz run of every parser that reads
untrusted bytes, printing iterations, inputs per second and crashes.

Runs on the main thread only. Targets:
- ``pcap``: PcapStreamDecoder (feed and feed_batch, whole and in random 1-64 byte
  chunks) and the FlowTable behind it, seeded with the shared real captures (when
  ``../shared/captures`` exists) and synthetic pcap/pcapng files;
- ``firstbytes``: the listener's first-bytes classifier, fed in random chunks;
- ``filter``: the UI filter language parser (only FilterError may come out);
- ``netflow``: the NetFlow v5/v9/IPFIX decoder (nothing may come out) and the flow
  table's record path, seeded with v5, v9 and IPFIX datagrams of IPv4 and IPv6 flows,
  templates, options templates and withdrawals;
- ``names``: the passive name parsers (DNS/mDNS messages whole and over TCP in random
  chunks, HTTP first requests, SSH banners): chunked answers must equal whole ones and
  every string must be capped and printable.

``--collector-shapes`` runs :mod:`netmon.bench.collector_shapes` instead: the decoder's
worst cost per crafted datagram against normal datagrams of the same size.

A "crash" is any exception other than the ones a parser documents. The property
tests in tests/ run the same targets for a few seconds on every CI run; this
benchmark runs them for minutes.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from netmon.flows.table import FlowTable
from netmon.ingest.pcapstream import PcapStreamDecoder

CAPTURES = Path(__file__).resolve().parents[3] / "shared" / "captures"  # ../shared


def _synthetic_seeds() -> list[bytes]:
    from netmon.ingest import pcapwrite
    from netmon.testing.frames import ethernet, ipv4, ipv6, tcp, udp

    seeds = [
        ethernet(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1234, 80, flags=0x02)), 0x0800),
        ethernet(ipv6("2001:db8::1", "2001:db8::2", 17, udp(5353, 53, b"q" * 30)), 0x86DD,
                 vlans=[7]),
        ethernet(ipv4("10.0.0.1", "10.0.0.3", 17, udp(1, 2, b"x" * 600), mf=True, ident=9),
                 0x0800),
    ]
    pcap = pcapwrite.pcap_header(1) + b"".join(pcapwrite.pcap_record(1.5 + i, f)
                                              for i, f in enumerate(seeds))
    ng = (pcapwrite.pcapng_shb() + pcapwrite.pcapng_idb(1)
          + b"".join(pcapwrite.pcapng_epb(0, 2.0 + i, f) for i, f in enumerate(seeds)))
    return [pcap, ng]


def pcap_seeds(max_bytes: int = 16_000) -> list[bytes]:
    seeds = _synthetic_seeds()
    if CAPTURES.is_dir():
        for p in sorted(CAPTURES.iterdir()):
            if p.suffix in (".pcap", ".pcapng"):
                seeds.append(p.read_bytes()[:max_bytes])
    return seeds


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few random edits: flips, overwrites with edge values, inserts, deletes, cuts."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not buf:
            buf.extend(rng.randbytes(rng.randint(1, 64)))
            continue
        op = rng.randrange(6)
        i = rng.randrange(len(buf))
        if op == 0:
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            edge = rng.choice((b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\xff",
                               b"\x00\x00\x00\x00", b"\x00\x00\x01\x00"))
            buf[i:i + len(edge)] = edge
        elif op == 2:
            buf[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            del buf[i:i + rng.randint(1, 32)]
        elif op == 4:
            del buf[i:]
        else:
            j = rng.randrange(len(buf))
            buf[i:i + 4] = buf[j:j + 4]
    return bytes(buf)


def _chunks(rng: random.Random, data: bytes, top: int) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, top)
        out.append(data[i:i + n])
        i += n
    return out


def run_pcap(rng: random.Random, data: bytes) -> None:
    whole = PcapStreamDecoder()
    table = FlowTable(max_flows=64)
    table.add_batch(whole.feed_batch(data))
    whole.close()
    chunked = PcapStreamDecoder()
    records = []
    for piece in _chunks(rng, data, 64):
        records.extend(chunked.feed(piece))
    chunked.close()
    table.add_packets(records)
    table.expire(float(rng.randrange(2**31)))
    table.end_all()
    if len(records) > chunked.frames:
        raise AssertionError("more records than frames")


def run_firstbytes(rng: random.Random, data: bytes) -> None:
    from netmon.sources.firstbytes import FirstBytes, escape

    fb = FirstBytes()
    for piece in _chunks(rng, data, 9):
        fb.feed(piece)
    cls = fb.finish()
    text = fb.preview + escape(data)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise AssertionError(f"unescaped control character in preview of {cls}")


def run_filter(rng: random.Random, data: bytes) -> None:
    from netmon.flows.filter import FilterError, compile_filter

    words = ["host", "port", "proto", "cluster", "and", "or", "not", "(", ")", "tcp", "udp",
             "10.0.0.1", "::1", "80", "-1", "99999", "icmp", "x", "", "256.1.1.1"]
    text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 8)))
    if rng.random() < 0.3:
        text = data[:40].decode("latin-1")
    try:
        compile_filter(text)
    except FilterError:
        pass


def netflow_seeds() -> list[bytes]:
    from netmon.testing.nfexport import (
        Flow,
        ipfix_datagrams,
        ipfix_withdrawal,
        v5_datagrams,
        v9_datagrams,
    )

    now = 1_700_000_000.0
    flows = [Flow("10.0.0.1", "10.0.0.2", 1000 + i, 443, 6, 5, 900, now - 3, now, 0x1b)
             for i in range(6)]
    v6 = [Flow("2001:db8::1", "2001:db8::2", 5353, 53, 17, 1, 80, now - 1, now)]
    return [*v5_datagrams(flows, now=now), *v9_datagrams(flows + v6, now=now, per_datagram=4),
            *ipfix_datagrams(flows + v6, now=now, per_datagram=4),
            *ipfix_datagrams(flows, now=now, with_template=False), ipfix_withdrawal(256)]


_NETFLOW: dict = {}


def run_netflow(rng: random.Random, data: bytes) -> None:
    import numpy as np

    from netmon.netflow.decoder import NetflowDecoder

    # One decoder across inputs (templates learnt from earlier ones apply to later
    # ones, as from a real exporter), renewed now and then so state stays varied.
    if "dec" not in _NETFLOW or rng.random() < 0.01:
        _NETFLOW["dec"] = NetflowDecoder(unknown_max=50)
        _NETFLOW["table"] = FlowTable(max_flows=256)
    dec, table = _NETFLOW["dec"], _NETFLOW["table"]
    now = 1_700_000_000.0 + rng.random() * 100
    for _, recs in dec.decode(data, rng.choice(("10.0.0.1", "::1")), now):
        table.add_records(recs, np.zeros(len(recs), dtype=np.uint16), now)
    if rng.random() < 0.05:
        dec.expire(now + 60)
        table.expire(now + rng.random() * 1000)


def names_seeds() -> list[bytes]:
    from netmon.names.dns import TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_PTR
    from netmon.testing.names import dns_response

    return [
        dns_response([("www.reddit.com", TYPE_A)], [
            ("www.reddit.com", TYPE_CNAME, 300, "reddit.map.fastly.net"),
            ("reddit.map.fastly.net", TYPE_A, 30, bytes([151, 101, 1, 140])),
            ("reddit.map.fastly.net", TYPE_AAAA, 30, bytes(15) + b"\x01")], [],
            [("ns1.fastly.net", TYPE_A, 3600, bytes(4))]),
        dns_response([], [("4.3.2.1.in-addr.arpa", TYPE_PTR, 120, "host.local")],
                     rclass=0x8001),
        b"GET /a HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n\r\n",
        b"banner\r\nSSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"]


def run_names(rng: random.Random, data: bytes) -> None:
    from netmon.names.dns import DnsStream, parse_dns
    from netmon.names.http import HttpRequestParser, parse_http_request
    from netmon.names.ssh import SshBannerParser, parse_ssh_banner

    texts: list[str] = []
    for mdns in (False, True):
        msg = parse_dns(data, mdns=mdns)
        texts += [t for n in (msg.names if msg else ()) for t in (n.name, n.alias)]
    stream = DnsStream()
    for piece in _chunks(rng, len(data).to_bytes(2, "big") + data, 9):
        stream.feed(piece)
    for parser, whole in ((HttpRequestParser(), parse_http_request(data)),
                          (SshBannerParser(), parse_ssh_banner(data))):
        for piece in _chunks(rng, data, 9):
            parser.feed(piece)
        if parser.finish() != whole:
            raise AssertionError(f"{type(parser).__name__}: chunked != whole")
        if whole is not None:
            texts += [getattr(whole, f) for f in whole.__slots__ if isinstance(
                getattr(whole, f), str)]
    if any(not t.isprintable() or len(t) > 300 for t in texts):
        raise AssertionError("a name string is unsafe or uncapped")


TARGETS: dict[str, Callable[[random.Random, bytes], None]] = {
    "pcap": run_pcap, "firstbytes": run_firstbytes, "filter": run_filter,
    "netflow": run_netflow, "names": run_names,
}
_SEEDS = {"pcap": pcap_seeds, "netflow": netflow_seeds, "names": names_seeds}


def fuzz(target: str, seconds: float, seed: int) -> dict:
    rng = random.Random(seed)
    seeds = _SEEDS[target]() if target in _SEEDS else [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"SSH-2.0-OpenSSH_9.2\r\n",
        bytes.fromhex("160301020001") + bytes(60), b"\x1b]0;title\x07\x1b[2J", b""]
    fn = TARGETS[target]
    deadline = time.perf_counter() + seconds
    runs = crashes = 0
    first_crash = ""
    while time.perf_counter() < deadline:
        data = mutate(rng, rng.choice(seeds)) if rng.random() < 0.9 else \
            rng.randbytes(rng.randint(0, 512))
        runs += 1
        try:
            fn(rng, data)
        except Exception:  # any exception is a finding: count it, keep going
            crashes += 1
            if not first_crash:
                first_crash = traceback.format_exc(limit=3)
    return {"target": target, "runs": runs, "per_second": runs / seconds, "crashes": crashes,
            "first_crash": first_crash}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netmon.bench fuzz")
    parser.add_argument("--seconds", type=float, default=60.0, help="per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", choices=sorted(TARGETS), action="append")
    parser.add_argument("--collector-shapes", action="store_true",
                        help="time crafted NetFlow/IPFIX shapes instead (bench collector_shapes)")
    args = parser.parse_args(argv)
    if args.collector_shapes:
        from netmon.bench import collector_shapes

        return collector_shapes.main([])
    if not CAPTURES.is_dir():
        print(f"note: {CAPTURES} absent: pcap seeds are synthetic only")
    bad = 0
    for target in args.target or sorted(TARGETS):
        r = fuzz(target, args.seconds, args.seed)
        print(f"{target:11s} {r['runs']:>9,} inputs in {args.seconds:.0f} s "
              f"({r['per_second']:,.0f}/s), crashes: {r['crashes']}")
        if r["crashes"]:
            bad += 1
            print(r["first_crash"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
