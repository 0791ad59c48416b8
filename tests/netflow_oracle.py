"""NetFlow/IPFIX oracle for tests: softflowd exports a capture, nfcapd/nfdump decode it.

Import it like the other helpers: ``from tests.netflow_oracle import nfdump_totals, key5``.

Facts about the tools this relies on (softflowd 1.1.0, nfdump 1.7.1, Debian 12):

- ``softflowd -r FILE -d`` reads the whole file (pcap or single-section pcapng), then
  expires *every* flow at EOF ("flushed") and exits. In file mode flows are never expired
  on time, only when the table is full (``-m``, default 8192) or a flow outlives
  ``maxlife`` (7 days, capture time), so a 5-tuple can be split into several records:
  sum them. There is no pacing: all datagrams leave in a few milliseconds.
- Never pass ``-c PATH`` with ``-r``: softflowd then calls accept() on the control socket
  after reading the file and hangs forever. ``-c none`` is safe. ``-p`` must point at a
  scratch file: softflowd unlink()s the pid file on exit even though ``-r`` never writes
  it, and the default is /var/run/softflowd.pid.
- Timestamps: by default the exporter's "boot time" is the wall clock, so flow times
  (sysUptime offsets) are garbage for old captures. ``-a`` makes boot time the first
  packet's time and "now" the last packet's, so v5/v9 times are capture times (but the
  32-bit millisecond uptime wraps for captures longer than 49.7 days: 04, 08, 10).
  ``-A milli`` (v9/IPFIX only) exports absolute flowStart/EndMilliseconds (IE 152/153).
- ``-n a:p1,b:p2`` (comma) sends every datagram to every destination; repeating ``-n``
  keeps only the last one; ``-l`` load-balances datagrams between them.
- Octets are the frame length minus the link header (Ethernet 14, +4 per VLAN tag,
  Linux SLL 16), i.e. IP bytes plus any Ethernet padding; packets count every IP packet,
  non-first fragments as a port-0 flow. ICMP flows carry type*256+code in the
  destination port and 0 as source port (so echo request and reply are separate flows).
  Link types: Ethernet (one 802.1Q tag or MPLS labels in front of IP), Linux SLL, raw,
  null/loop, PPP; -T full (default) ignores VLAN ids, so tagged and untagged merge.
  Double-tagged frames count as non-IP; NFLOG (13_nflog) is refused ("Unsupported
  datalink type 239"); a truncated file (14_truncated) makes softflowd exit 1 without
  exporting anything. v5 carries only IPv4: IPv6 packets are counted as ignored.
- Times in nfdump: v5 (-a) is exact to the ms; v9 (-a) is early by the fraction of a
  second of the last packet (its header has whole seconds only); nfdump 1.7.1 swaps first
  and last for softflowd's IPFIX (IE 22/21 with systemInitTimeMilliseconds); with
  ``-A milli`` v9 and IPFIX are exact. Compare counts, not times, against nfdump.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

VERSIONS = ("5", "9", "10")
ICMP_PROTOS = (1, 58)
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def _which(name: str) -> str | None:
    """The tool's path; softflowd lives in /usr/sbin, often not on a user's PATH."""
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def need_softflowd() -> str:
    """Path of softflowd, or skip the test with the reason."""
    path = _which("softflowd")
    if path is None:
        pytest.skip("softflowd is not installed (apt-get install softflowd nfdump)")
    return path


def need_nfdump() -> tuple[str, str]:
    """Paths of nfcapd and nfdump, or skip the test with the reason."""
    nfcapd, nfdump = _which("nfcapd"), _which("nfdump")
    if nfcapd is None or nfdump is None:
        pytest.skip("nfcapd/nfdump are not installed (apt-get install softflowd nfdump)")
    return nfcapd, nfdump


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def key5(proto: int, a: str, ap: int, b: str, bp: int) -> tuple[int, str, int, str, int]:
    """Direction-free 5-tuple key: the endpoint with the smaller (packed address, port)
    comes first; addresses in ipaddress's compressed text form."""
    ea = (ipaddress.ip_address(a), int(ap))
    eb = (ipaddress.ip_address(b), int(bp))
    lo, hi = sorted((ea, eb), key=lambda e: (e[0].packed, e[1]))
    return (int(proto), lo[0].compressed, lo[1], hi[0].compressed, hi[1])


# --------------------------------------------------------------------------- softflowd


@dataclass
class SoftflowdRun:
    """What one softflowd run reported on stdout (its end-of-file statistics)."""

    argv: list[str]
    seconds: float
    stdout: str
    stderr: str
    packets_processed: int = 0
    flows_exported: int = 0
    records: int = 0
    datagrams: int = 0
    failures: int = 0
    stats: dict[str, str] = field(default_factory=dict)


_EXPORTED = re.compile(r"Flows exported: (\d+) \((\d+) records\) in (\d+) packets \((\d+) failures")


def softflowd_run(pcap: Path, port: int | list[int], version: str, *,
                  host: str = "127.0.0.1", timeout: float = 60, adjust_time: bool = True,
                  time_format: str | None = None, extra: tuple[str, ...] = ()) -> SoftflowdRun:
    """Run softflowd over a capture in the foreground and return its statistics.

    ``port`` may be a list: one softflowd then sends every datagram to each port.
    ``adjust_time`` passes ``-a`` (flow times from the capture, not the wall clock);
    ``time_format`` ("sec", "milli", "micro", "nano") passes ``-A`` (v9/IPFIX only).
    When the process exits, every datagram has been handed to the kernel.
    """
    version = str(version)
    if version not in VERSIONS:
        raise ValueError(f"NetFlow version must be one of {VERSIONS}, not {version!r}")
    exe = need_softflowd()
    ports = port if isinstance(port, list | tuple) else [port]
    dest = ",".join(f"[{host}]:{p}" if ":" in host else f"{host}:{p}" for p in ports)
    with tempfile.TemporaryDirectory(prefix="softflowd-") as tmp:
        argv = [exe, "-r", str(pcap), "-n", dest, "-v", version, "-d",
                "-p", str(Path(tmp) / "softflowd.pid"), "-c", "none"]
        if version != "5":
            argv.append("-6")      # v9/IPFIX track IPv6 anyway; v5 cannot carry it
        if adjust_time:
            argv.append("-a")
        if time_format:
            argv += ["-A", time_format]
        argv += list(extra)
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              cwd=tmp, stdin=subprocess.DEVNULL)
        seconds = time.monotonic() - t0
    run = SoftflowdRun(argv, seconds, proc.stdout, proc.stderr)
    if proc.returncode != 0 or "Shutting down after pcap EOF" not in proc.stderr:
        raise RuntimeError(f"softflowd failed (exit {proc.returncode}): {' '.join(argv)}\n"
                           f"{proc.stderr.strip()}\n{proc.stdout.strip()}")
    for line in proc.stdout.splitlines():
        name, sep, value = line.partition(":")
        if sep and value.strip():
            run.stats[name.strip()] = value.strip()
    m = _EXPORTED.search(proc.stdout)
    if m:
        run.flows_exported, run.records, run.datagrams, run.failures = map(int, m.groups())
    m = re.search(r"Packets processed: (\d+)", proc.stdout)
    run.packets_processed = int(m.group(1)) if m else 0
    if run.failures:
        raise RuntimeError(f"softflowd could not send {run.failures} flows: {proc.stdout}")
    return run


def softflowd_export(pcap: Path, port: int, version: str, *, host: str = "127.0.0.1",
                     timeout: float = 60) -> None:
    """Export every flow of ``pcap`` as NetFlow v5/v9 or IPFIX (``version`` "5", "9" or
    "10") to UDP ``host:port``; returns once softflowd has sent everything and exited."""
    softflowd_run(pcap, port, version, host=host, timeout=timeout)


# --------------------------------------------------------------------------- nfcapd


def _nfcapd_dir_flag(exe: str) -> str:
    """nfdump 1.7 writes with ``-w dir``; 1.6 used ``-l dir``."""
    out = subprocess.run([exe, "-h"], capture_output=True, text=True, timeout=10)
    text = out.stdout + out.stderr
    return "-w" if re.search(r"^-w\s", text, re.M) else "-l"


def _udp_bound(port: int) -> bool:
    """Is anything bound to UDP ``port`` (from /proc/net/udp)?"""
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return True  # cannot tell: assume so
    return any(int(line.split()[1].split(":")[1], 16) == port for line in lines)


def _udp_queue(port: int) -> tuple[int, int] | None:
    """(bytes waiting, drops) of the UDP socket bound to ``port``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            f = line.split()
            if int(f[1].split(":")[1], 16) == port:
                return int(f[4].split(":")[1], 16), int(f[-1])
    return None


@contextlib.contextmanager
def nfcapd_collector(outdir: Path, *, host: str = "127.0.0.1", port: int | None = None,
                     timeout: float = 15):
    """Run nfcapd on ``host:port`` (a free UDP port by default) writing into ``outdir``;
    yields the port. On exit waits until its socket is drained, stops it with SIGTERM
    (which makes it close and rename its file) and waits for it to end."""
    nfcapd, _ = need_nfdump()
    port = port or free_udp_port(host)
    log = open(outdir / "nfcapd.log", "w+")
    argv = [nfcapd, _nfcapd_dir_flag(nfcapd), str(outdir), "-b", host, "-p", str(port),
            "-B", str(4 << 20), "-t", "3600"]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not _udp_bound(port):
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"nfcapd exited ({proc.returncode}): {log.read()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nfcapd did not bind {host}:{port}")
            time.sleep(0.02)
        drops_before = (_udp_queue(port) or (0, 0))[1]
        yield port
        # Let nfcapd read everything softflowd sent before asking it to stop.
        deadline = time.monotonic() + timeout
        while (q := _udp_queue(port)) and q[0] > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        q = _udp_queue(port)
        if q and q[1] > drops_before:
            raise RuntimeError(f"nfcapd's socket dropped {q[1] - drops_before} datagrams")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()


def _nfdump_json(exe: str, directory: Path, timeout: float) -> list[dict]:
    out = subprocess.run([exe, "-R", str(directory), "-o", "json", "-N"],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"nfdump failed ({out.returncode}): {out.stderr.strip()}")
    # A JSON array without -q; with -q (or old versions) bare objects separated by commas.
    # An empty file prints "No matching flows" instead of records.
    text = out.stdout.replace("No matching flows", "")
    records, dec, i = [], json.JSONDecoder(), 0
    while True:
        while i < len(text) and text[i] in " \t\r\n,[]":
            i += 1
        if i >= len(text):
            return records
        obj, i = dec.raw_decode(text, i)
        records.append(obj)


def nfdump_records(pcap: Path, version: str, *, timeout: float = 60,
                   adjust_time: bool = True, time_format: str | None = None,
                   ) -> tuple[list[dict], SoftflowdRun]:
    """Every flow record nfcapd stored for one softflowd run over ``pcap``, as nfdump's
    JSON objects (keys: proto, src4_addr/src6_addr, dst4_addr/dst6_addr, src_port,
    dst_port, in_packets, in_bytes, first, last, tcp_flags, ...), and the run."""
    _, nfdump = need_nfdump()
    with tempfile.TemporaryDirectory(prefix="nfcapd-") as tmp:
        flows = Path(tmp) / "flows"
        flows.mkdir()
        with nfcapd_collector(flows) as port:
            run = softflowd_run(pcap, port, version, timeout=timeout,
                                adjust_time=adjust_time, time_format=time_format)
        if not any(p.name.startswith("nfcapd.") and p.name[7:8].isdigit()
                   for p in flows.iterdir()):
            raise RuntimeError(f"nfcapd wrote no file: {(flows / 'nfcapd.log').read_text()}")
        (flows / "nfcapd.log").unlink()
        records = [r for r in _nfdump_json(nfdump, flows, timeout) if r.get("type") == "FLOW"]
    if len(records) != run.records:
        raise RuntimeError(f"softflowd sent {run.records} records, nfdump read {len(records)}")
    return records, run


def record_key(rec: dict, *, icmp_ports_zero: bool = True) -> tuple[int, str, int, str, int]:
    """key5 of one nfdump JSON record. softflowd exports ICMP/ICMPv6 with source port 0
    and type*256+code as destination port (v5) or icmpTypeCode (IE 32/139); nfdump's
    JSON drops the ports and shows icmp_type/icmp_code. With ``icmp_ports_zero`` (the
    default) both ports are 0, as in the captures' flows5.tsv, which also merges the
    echo request and reply flows softflowd keeps apart; otherwise the destination port
    is type*256+code."""
    proto = int(rec["proto"])
    src = rec.get("src4_addr") or rec.get("src6_addr")
    dst = rec.get("dst4_addr") or rec.get("dst6_addr")
    sp, dp = int(rec.get("src_port") or 0), int(rec.get("dst_port") or 0)
    if proto in ICMP_PROTOS:
        # nfdump's JSON has no ports for ICMP, only icmp_type/icmp_code.
        sp, dp = 0, 0 if icmp_ports_zero else (
            int(rec.get("icmp_type") or 0) * 256 + int(rec.get("icmp_code") or 0))
    return key5(proto, src, sp, dst, dp)


def nfdump_totals_from(directory: Path, *, timeout: float = 60,
                       icmp_ports_zero: bool = True) -> dict[tuple, tuple[int, int]]:
    """{key5: (packets, bytes)} of every record nfcapd stored in ``directory`` (after
    :func:`nfcapd_collector` has ended), both directions and all records summed."""
    _, nfdump = need_nfdump()
    (directory / "nfcapd.log").unlink(missing_ok=True)
    totals: dict[tuple, tuple[int, int]] = {}
    for rec in _nfdump_json(nfdump, directory, timeout):
        if rec.get("type") != "FLOW":
            continue
        k = record_key(rec, icmp_ports_zero=icmp_ports_zero)
        p, b = totals.get(k, (0, 0))
        totals[k] = (p + int(rec.get("in_packets", 0)) + int(rec.get("out_packets", 0)),
                     b + int(rec.get("in_bytes", 0)) + int(rec.get("out_bytes", 0)))
    return totals


def nfdump_totals(pcap: Path, version: str, *, timeout: float = 60,
                  icmp_ports_zero: bool = True) -> dict[tuple, tuple[int, int]]:
    """softflowd -> nfcapd -> nfdump over ``pcap``: {key5: (packets, bytes)} summed over
    both directions and every record. Bytes are NetFlow octets (frame minus link header)."""
    records, _ = nfdump_records(pcap, str(version), timeout=timeout)
    totals: dict[tuple, tuple[int, int]] = {}
    for rec in records:
        k = record_key(rec, icmp_ports_zero=icmp_ports_zero)
        p, b = totals.get(k, (0, 0))
        totals[k] = (p + int(rec.get("in_packets", 0)) + int(rec.get("out_packets", 0)),
                     b + int(rec.get("in_bytes", 0)) + int(rec.get("out_bytes", 0)))
    return totals


def flows5_totals(tsv: Path) -> dict[tuple, tuple[int, int]]:
    """A capture's ``F.flows5.tsv`` oracle in the same shape: {key5: (packets, frame
    bytes)} both directions summed. Empty ports (non-TCP/UDP) become 0."""
    totals: dict[tuple, tuple[int, int]] = {}
    lines = Path(tsv).read_text().splitlines()
    head = lines[0].split("\t")
    for line in lines[1:]:
        row = dict(zip(head, line.split("\t"), strict=False))
        k = key5(int(row["proto"]), row["addr_a"], int(row["port_a"] or 0),
                 row["addr_b"], int(row["port_b"] or 0))
        p, b = totals.get(k, (0, 0))
        totals[k] = (p + int(row["pkts_a2b"]) + int(row["pkts_b2a"]),
                     b + int(row["bytes_a2b"]) + int(row["bytes_b2a"]))
    return totals
