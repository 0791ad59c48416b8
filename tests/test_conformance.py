"""netmon's flow table against tshark's own numbers, for every shared real capture.

End to end: the ``netmon`` command replays each capture headless and writes
``--flows-out``; the flows must equal the capture's exact per-5-tuple oracle
(``F.flows5.tsv``) packet for packet and byte for byte, and tshark's conversation
tables (``F.conv.txt``, ``F.conv6.txt``) frame for frame. Flows split by netmon's
idle/active timeouts (merged traces span years) are summed per key first.

One documented difference: tshark reassembles IP fragments and puts the transport
header on the *last* fragment, so the oracle keys the *first* fragment with ports 0.
netmon keys every fragment by its datagram's first fragment (DESIGN "Flow
semantics"), so those port-0 oracle rows are added to their datagram's 5-tuple.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import capture_files, captures_dir, run_netmon

Endpoint = tuple[str, int]
FlowKey = tuple[int, frozenset]


class Tally:
    """Per-endpoint sent packets/bytes of one bidirectional key, plus its time span."""

    def __init__(self) -> None:
        self.sent: dict[Endpoint, list[int]] = defaultdict(lambda: [0, 0])
        self.first = float("inf")
        self.last = float("-inf")

    def add(self, a: Endpoint, b: Endpoint, pab: int, bab: int, pba: int, bba: int,
            first: float, last: float) -> None:
        self.sent[a][0] += pab
        self.sent[a][1] += bab
        self.sent[b][0] += pba
        self.sent[b][1] += bba
        self.first = min(self.first, first)
        self.last = max(self.last, last)

    def counts(self) -> dict[Endpoint, tuple[int, int]]:
        return {ep: (p, b) for ep, (p, b) in self.sent.items()}


def key_of(proto: int, a: Endpoint, b: Endpoint) -> FlowKey:
    return proto, frozenset((a, b))


def read_oracle(path: Path) -> dict[FlowKey, Tally]:
    return read_oracle_parts(path)[0]


def read_oracle_parts(path: Path) -> tuple[dict[FlowKey, Tally], dict[FlowKey, Tally]]:
    """(the oracle with fragment rows merged, the fragment rows merged into each key)."""
    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    table: dict[FlowKey, Tally] = defaultdict(Tally)
    fragments = []
    for r in rows:
        proto = int(r["proto"])
        a = (r["addr_a"], int(r["port_a"]))
        b = (r["addr_b"], int(r["port_b"]))
        if proto in (6, 17) and a[1] == 0 and b[1] == 0:
            fragments.append((proto, a, b, r))
            continue
        table[key_of(proto, a, b)].add(a, b, int(r["pkts_a2b"]), int(r["bytes_a2b"]),
                                       int(r["pkts_b2a"]), int(r["bytes_b2a"]),
                                       float(r["first_epoch"]), float(r["last_epoch"]))
    merged: dict[FlowKey, Tally] = defaultdict(Tally)
    for proto, a, b, r in fragments:
        owners = [k for k in table if k[0] == proto
                  and {ep[0] for ep in k[1]} == {a[0], b[0]}]
        assert len(owners) == 1, f"fragment row {r} has no single datagram flow"
        by_addr = {ep[0]: ep for ep in owners[0][1]}
        for tally in (table[owners[0]], merged[owners[0]]):
            tally.add(by_addr[a[0]], by_addr[b[0]], int(r["pkts_a2b"]), int(r["bytes_a2b"]),
                      int(r["pkts_b2a"]), int(r["bytes_b2a"]),
                      float(r["first_epoch"]), float(r["last_epoch"]))
    return dict(table), dict(merged)


def read_netmon(flows_out: Path) -> dict[FlowKey, Tally]:
    table: dict[FlowKey, Tally] = defaultdict(Tally)
    for line in flows_out.read_text().splitlines():
        f = json.loads(line)
        a = (f["addr_a"], f["port_a"])
        b = (f["addr_b"], f["port_b"])
        table[key_of(f["proto"], a, b)].add(a, b, f["pkts_a2b"], f["bytes_a2b"],
                                            f["pkts_b2a"], f["bytes_b2a"],
                                            f["first_epoch"], f["last_epoch"])
    return dict(table)


_CONV_LINE = re.compile(r"^(\S+)\s+<->\s+(\S+)\s+(\d+)\s+\d+ \S+\s+(\d+)\s+\d+ \S+\s+(\d+)\s")


def read_conversations(path: Path, section: str) -> dict[frozenset, dict[str, int]]:
    """Frames sent by each side in one ``-z conv`` section ({A, B} -> {side: frames})."""
    out: dict[frozenset, dict[str, int]] = {}
    inside = False
    for line in path.read_text().splitlines():
        if line.strip() == section:
            inside = True
            continue
        if inside and line.startswith("====="):
            break
        m = _CONV_LINE.match(line) if inside else None
        if m:
            a, b, frames_b2a, frames_a2b, total = m.groups()
            assert int(frames_a2b) + int(frames_b2a) == int(total)
            sides = {a: int(frames_a2b)}
            sides[b] = sides.get(b, 0) + int(frames_b2a)  # a == b: 127.0.0.1 <-> itself
            out[frozenset((a, b))] = sides
    return out


def split_endpoint(text: str) -> Endpoint:
    addr, port = text.rsplit(":", 1)
    return addr, int(port)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Each capture replayed once through the netmon command."""
    directory = captures_dir()
    out = {}
    tmp = tmp_path_factory.mktemp("conformance")
    for name in capture_files():
        flows = tmp / f"{name}.jsonl"
        proc = run_netmon("--headless", "-r", str(directory / name), "--flows-out", str(flows))
        out[name] = (proc, flows)
    return out


@pytest.mark.parametrize("name", capture_files() or ["(no captures)"])
def test_flows_match_tshark_5tuple_oracle(name: str, replayed: dict) -> None:
    directory = captures_dir()
    proc, flows = replayed[name]
    if name.startswith("14_"):
        assert proc.returncode == 0, proc.stderr
        assert "cut short in the middle of a packet" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert "warning" not in proc.stderr
    assert "Traceback" not in proc.stderr
    got = read_netmon(flows)
    want = read_oracle(directory / f"{name}.flows5.tsv")
    assert set(got) == set(want), "flow keys differ from the oracle"
    for key, tally in want.items():
        assert got[key].counts() == tally.counts(), key
        assert got[key].first == pytest.approx(tally.first, abs=2e-6), key
        assert got[key].last == pytest.approx(tally.last, abs=2e-6), key


@pytest.mark.parametrize("name", capture_files() or ["(no captures)"])
def test_conversation_frames_match_tshark(name: str, replayed: dict) -> None:
    directory = captures_dir()
    _, flows = replayed[name]
    got = read_netmon(flows)
    # IP conversations: every frame between two addresses, whatever the protocol.
    by_pair: dict[frozenset, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (_, endpoints), tally in got.items():
        pair = frozenset(ep[0] for ep in endpoints)
        for ep, (pkts, _) in tally.counts().items():
            by_pair[pair][ep[0]] += pkts
    for conv_file, section in ((f"{name}.conv.txt", "IPv4 Conversations"),
                               (f"{name}.conv6.txt", "IPv6 Conversations")):
        want = read_conversations(directory / conv_file, section)
        ours = {pair: dict(sides) for pair, sides in by_pair.items()
                if (":" in next(iter(pair))) == section.startswith("IPv6")}
        assert ours == want, section
    # TCP and UDP conversations: tshark counts a fragmented datagram once, on its
    # last fragment; netmon counts every fragment, so add those back to tshark's.
    _, fragment_rows = read_oracle_parts(directory / f"{name}.flows5.tsv")
    for proto, section in ((6, "TCP Conversations"), (17, "UDP Conversations")):
        want = {}
        for pair, sides in read_conversations(directory / f"{name}.conv.txt", section).items():
            endpoints = frozenset(split_endpoint(s) for s in pair)
            frames = {split_endpoint(s): n for s, n in sides.items()}
            extra = fragment_rows.get((proto, endpoints))
            if extra is not None:
                for ep, (pkts, _) in extra.counts().items():
                    frames[ep] += pkts
            want[endpoints] = frames
        ours = {endpoints: {ep: c[0] for ep, c in tally.counts().items()}
                for (p, endpoints), tally in got.items() if p == proto}
        assert ours == want, section
