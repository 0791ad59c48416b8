"""tshark as the oracle for captures the tests build: its conversation tables against
netmon's flows, frame for frame.

Import it like the other helpers: ``from tests.tshark_oracle import compare, write_pcap``.
netmon's side decodes the capture in-process in small chunks through the columnar hot
path (``feed_batch``, then ``close_batch``) into a real FlowTable, so chunk boundaries
are exercised too.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from netmon.flows.table import FlowTable
from netmon.ingest.pcapstream import PcapStreamDecoder
from netmon.ingest.pcapwrite import PcapWriter
from tests.test_conformance import read_conversations, split_endpoint

T0 = 1_700_000_000.0
#: Conversations per protocol: {frozenset of endpoints: {endpoint: frames sent}}.
Conversations = dict[frozenset, dict[tuple[str, int], int]]


def write_pcap(path: Path, linktype: int, frames: list[bytes], *, snaplen: int = 262144,
               wirelens: list[int] | None = None) -> Path:
    """A classic pcap of ``frames`` 1 ms apart."""
    with path.open("wb") as fh:
        w = PcapWriter(fh, linktype, snaplen=snaplen)
        for i, frame in enumerate(frames):
            w.write(T0 + i / 1000, frame, None if wirelens is None else wirelens[i])
    return path


def tshark_conversations(path: Path) -> dict[str, Conversations]:
    """tshark's TCP, UDP, IPv4 and IPv6 conversation tables of ``path``."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    proc = subprocess.run(["tshark", "-r", str(path), "-q", "-z", "conv,tcp", "-z", "conv,udp",
                           "-z", "conv,ip", "-z", "conv,ipv6"],
                          capture_output=True, text=True, timeout=60)
    out = path.with_suffix(".conv.txt")
    out.write_text(proc.stdout)
    tables: dict[str, Conversations] = {}
    for name, section in (("tcp", "TCP Conversations"), ("udp", "UDP Conversations"),
                          ("ip", "IPv4 Conversations"), ("ipv6", "IPv6 Conversations")):
        conv = read_conversations(out, section)
        if name in ("tcp", "udp"):
            tables[name] = {frozenset(split_endpoint(s) for s in pair):
                            {split_endpoint(s): n for s, n in sides.items()}
                            for pair, sides in conv.items()}
        else:
            tables[name] = {frozenset((s, 0) for s in pair):
                            {(s, 0): n for s, n in sides.items()} for pair, sides in conv.items()}
    return tables


def netmon_flows(path: Path, seed: int = 1) -> tuple[FlowTable, PcapStreamDecoder]:
    """``path`` decoded in chunks of 1..4096 bytes into a FlowTable (nothing expires)."""
    data = path.read_bytes()
    rng = random.Random(seed)
    dec = PcapStreamDecoder()
    table = FlowTable(idle_timeout=1e9, active_timeout=1e9)
    i = 0
    while i < len(data):
        n = rng.randint(1, 4096)
        table.add_batch(dec.feed_batch(data[i:i + n]))
        i += n
    table.add_batch(dec.close_batch())
    return table, dec


def netmon_conversations(table: FlowTable) -> dict[str, Conversations]:
    """The table's flows as tshark's tables: TCP and UDP flows per 5-tuple, and every
    flow's packets summed per address pair for IPv4 and IPv6 (tshark counts each IP
    layer of a tunnelled frame, as netmon counts the outer and the inner flow)."""
    tables: dict[str, Conversations] = {"tcp": {}, "udp": {}, "ip": {}, "ipv6": {}}
    pairs: dict[str, dict] = {"ip": defaultdict(lambda: defaultdict(int)),
                              "ipv6": defaultdict(lambda: defaultdict(int))}
    for f in table.live_views():
        a, b = (f.addr_a, f.port_a), (f.addr_b, f.port_b)
        sides = {a: f.pkts_a2b}
        sides[b] = sides.get(b, 0) + f.pkts_b2a
        if f.proto in (6, 17):
            tables["tcp" if f.proto == 6 else "udp"][frozenset((a, b))] = sides
        fam = "ipv6" if ":" in f.addr_a else "ip"
        pair = frozenset(((f.addr_a, 0), (f.addr_b, 0)))
        pairs[fam][pair][(f.addr_a, 0)] += f.pkts_a2b
        pairs[fam][pair][(f.addr_b, 0)] += f.pkts_b2a
    for fam, by_pair in pairs.items():
        tables[fam] = {pair: dict(sides) for pair, sides in by_pair.items()}
    return tables


def compare(path: Path) -> tuple[FlowTable, PcapStreamDecoder]:
    """Assert netmon's flows of ``path`` equal tshark's conversation tables."""
    want = tshark_conversations(path)
    table, dec = netmon_flows(path)
    got = netmon_conversations(table)
    for name in ("tcp", "udp", "ip", "ipv6"):
        assert got[name] == want[name], f"{name} conversations differ from tshark's"
    return table, dec
