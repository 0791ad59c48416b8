"""``python -m netmon.bench tlshello``: ClientHellos parsed per second by netmon.names,
beside tshark reading the same hellos from a capture file in the same run.

Main thread of its own process. Inputs are built by netmon.testing.tlshello: a
Chrome-shaped hello (GREASE, 16 extensions, ~600 B) as TCP records, split over two
records and read in 3 chunks, and the same hello in a QUIC v1 Initial. Measured:

- ``tcp``: ClientHelloReader over the chunks (SNI, ALPN, all lists);
- ``tcp+ja``: the same plus JA3 and JA4;
- ``quic``: one Initial datagram: keys from its DCID, header protection, AES-GCM,
  frames, hello (the per-connection cost, as every connection has its own keys);
- ``reject``: a stream that is not TLS (an HTTP request), the common case in the hot path;
- ``tshark``: ``tshark -T fields -e tls.handshake.extensions_server_name -e
  tls.handshake.ja3`` over a pcap holding the same number of TCP hellos, one
  connection each (its start-up included; it is the oracle the tests use).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from netmon.ingest.pcapwrite import PcapWriter
from netmon.names.ja import ja3, ja4
from netmon.names.quic import parse_datagram
from netmon.names.tls import ClientHelloReader
from netmon.testing.frames import ETHERTYPE_IPV4, ethernet, ipv4, tcp
from netmon.testing.tlshello import (
    client_hello,
    crypto_frame,
    ext_alpn,
    ext_groups,
    ext_point_formats,
    ext_sig_algs,
    ext_sni,
    ext_versions,
    quic_initial,
    tls_records,
)


def chrome_like(sni: str = "www.example.com") -> bytes:
    """A ClientHello message shaped like Chrome's (GREASE, 16 extensions)."""
    return client_hello(
        [0x1A1A, 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8,
         0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035],
        [(0x2A2A, b""), ext_sni(sni), (0x0017, b""), (0xFF01, b"\x00"),
         ext_groups(0x4A4A, 0x001D, 0x0017, 0x0018), ext_point_formats(0), (0x0023, b""),
         ext_alpn("h2", "http/1.1"), (0x0005, b"\x01\x00\x00\x00\x00"),
         ext_sig_algs(0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601),
         (0x0012, b""), (0x0033, b"\x00\x29\x4a\x4a\x00\x01\x00\x00\x1d\x00\x20" + bytes(32)),
         (0x002D, b"\x01\x01"), ext_versions(0x3A3A, 0x0304, 0x0303),
         (0x001B, b"\x02\x00\x02"), (0x0015, bytes(220)), (0xFAFA, b"\x00")],
        session_id=bytes(32))


def _rate(fn: Callable[[], object], seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(200):
            fn()
        n += 200
    return n / elapsed


def _tshark_rate(msg: bytes, count: int) -> float | None:
    if shutil.which("tshark") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hellos.pcap"
        with path.open("wb") as fh:
            w = PcapWriter(fh, 1)
            for i in range(count):
                src = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
                seg = tcp(40000 + i % 20000, 443, flags=0x18, seq=1, ack=1,
                          payload=tls_records(msg))
                w.write(1.7e9 + i / 1000, ethernet(ipv4(src, "10.255.0.1", 6, seg),
                                                   ETHERTYPE_IPV4))
        start = time.perf_counter()
        out = subprocess.run(["tshark", "-r", str(path), "-Y", "tls.handshake.type==1", "-T",
                              "fields", "-e", "tls.handshake.extensions_server_name", "-e",
                              "tls.handshake.ja3"], capture_output=True, text=True, timeout=600)
        elapsed = time.perf_counter() - start
        lines = out.stdout.count("\n")
    return lines / elapsed if lines == count else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netmon.bench tlshello")
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    ap.add_argument("--tshark-hellos", type=int, default=20000)
    args = ap.parse_args(argv)
    msg = chrome_like()
    stream = tls_records(msg, [300])
    chunks = [stream[:200], stream[200:450], stream[450:]]
    datagram = quic_initial(bytes(range(8)), crypto_frame(0, msg))
    not_tls = b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\n\r\n"

    def tcp_only() -> object:
        reader = ClientHelloReader()
        for c in chunks:
            hello = reader.feed(c)
        return hello

    def tcp_ja() -> object:
        hello = tcp_only()
        return ja3(hello), ja4(hello)

    assert tcp_only() is not None and parse_datagram(datagram) is not None
    print(f"hello: {len(msg)} B in {len(stream)} B of records, 3 chunks; "
          f"QUIC Initial {len(datagram)} B")
    for name, fn in (("tcp", tcp_only), ("tcp+ja", tcp_ja),
                     ("quic", lambda: parse_datagram(datagram)),
                     ("reject", lambda: ClientHelloReader().feed(not_tls))):
        rate = _rate(fn, args.seconds)
        print(f"{name:8} {rate:12,.0f} /s  {1e6 / rate:8.1f} us each")
    t = _tshark_rate(msg, args.tshark_hellos)
    print(f"{'tshark':8} " + (f"{t:12,.0f} /s  {1e6 / t:8.1f} us each ({args.tshark_hellos} "
                               "hellos, start-up included)" if t else "   unavailable"))
    return 0
