"""The flow filter language: parsing, one-line errors naming the bad token, masks over
the flow table's columns, and capture filters (BPF) that libpcap accepts (checked by
compiling them with ``dumpcap -d``) and that match the right packets (checked by
running the compiled program over real captures with a small BPF interpreter)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

import numpy as np
import pytest

from netmon.core.values import FlowView
from netmon.flows.filter import (
    FILTER_COLUMNS,
    FilterError,
    bpf_for_flows,
    compile_filter,
)
from netmon.flows.table import FlowTable
from netmon.ingest.pcapstream import PcapStreamDecoder
from tests.conftest import captures_dir


def ip(text: str) -> bytes:
    import ipaddress

    return ipaddress.ip_address(text).packed


#: name -> (proto, src, sport, dst, dport, flags): one packet starts each flow.
FLOWS = {
    "https": (6, "10.0.0.1", 40000, "192.0.2.1", 443, 0x02),
    "http": (6, "10.0.0.2", 40001, "192.0.2.1", 80, 0x02),
    "dns": (17, "10.0.0.1", 5353, "8.8.8.8", 53, 0),
    "ping": (1, "10.0.0.3", 0, "8.8.8.8", 0, 8),
    "nd": (58, "fe80::1", 0, "ff02::1", 0, 135),
    "ssh6": (6, "2001:db8::1", 50000, "2001:db8::2", 22, 0x02),
    "gre": (47, "10.0.0.5", 0, "10.0.0.6", 0, 0),
}
CLUSTERS = {"https": 0, "http": 0, "dns": 1}


@functools.cache
def table() -> tuple[FlowTable, dict[int, str]]:
    t = FlowTable()
    recs = [(1.0 + i, 100, p, ip(s), sp, ip(d), dp, fl)
            for i, (p, s, sp, d, dp, fl) in enumerate(FLOWS.values())]
    t.add_packets(recs)
    names = {}
    for v in t.live_views():
        name = next(n for n, f in FLOWS.items() if f[1] == v.addr_a and f[2] == v.port_a)
        names[v.flow_id] = name
    slot_of = {int(t.flow_id[s]): s for s in t.live_slots()}
    for fid, name in names.items():
        t.cluster[slot_of[fid]] = CLUSTERS.get(name, -1)
    return t, names


def matching(text: str) -> set[str]:
    t, names = table()
    live = t.live_slots()
    mask = compile_filter(text).mask({c: getattr(t, c)[live] for c in FILTER_COLUMNS})
    assert mask.dtype == np.bool_ and len(mask) == len(live)
    return {names[int(fid)] for fid in t.flow_id[live][mask]}


GOOD = [
    ("", set(FLOWS)),
    ("host 10.0.0.1", {"https", "dns"}),
    ("host 192.0.2.1 and port 443", {"https"}),
    ("port 53 or icmp", {"dns", "ping"}),
    ("not tcp", {"dns", "ping", "nd", "gre"}),
    ("proto 47", {"gre"}),
    ("proto gre", {"gre"}),
    ("cluster 0", {"https", "http"}),
    ("cluster 1 or cluster 7", {"dns"}),
    ("(host 8.8.8.8 or host 2001:db8::2) and not udp", {"ping", "ssh6"}),
    ("tcp port 22", {"ssh6"}),
    ("icmpv6", {"nd"}),
    ("icmp6", {"nd"}),
    ("proto 58", {"nd"}),
    ("proto ICMPv6", {"nd"}),
    ("port https", {"https"}),
    ("HOST 10.0.0.1 AND PORT 5353", {"dns"}),
    ("! tcp && port 53 || port 22", {"dns", "ssh6"}),
    ("not tcp and port 53 or port 22", {"dns", "ssh6"}),
    ("tcp and not (port 80 or port 22)", {"https"}),
    ("host fe80::1", {"nd"}),
    ("host [2001:db8::1]", {"ssh6"}),
    ("not not udp", {"dns"}),
    ("((udp))", {"dns"}),
    ("host 10.0.0.9", set()),
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_filters_select_the_right_flows(text: str, expected: set[str]) -> None:
    assert matching(text) == expected


BAD = [
    ("hots 1.2.3.4", "unknown word 'hots' at column 1"),
    ("host", "'host' at column 1 needs a value"),
    ("host (", "'host' at column 1 needs a value"),
    ("host example.com", "'example.com' at column 6 is not an IP address"),
    ("host 10.0.0.256", "'10.0.0.256'"),
    ("port 70000", "port 70000 at column 6 is out of range"),
    ("port nosuchservice", "unknown port 'nosuchservice'"),
    ("proto xyz", "unknown protocol 'xyz'"),
    ("proto 256", "unknown protocol '256'"),
    ("cluster abc", "got 'abc'"),
    ("(tcp", "'(' at column 1 is never closed"),
    ("tcp)", "unexpected ')' at column 4"),
    ("tcp and", "ends after 'and'"),
    ("or udp", "unexpected 'or' at column 1"),
    ("not", "ends after 'not'"),
    ("tcp & udp", "unknown word '&' at column 5"),
    ("udp and ()", "unexpected ')' at column 10"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_filters_say_which_token_is_wrong_in_one_line(text: str, message: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_at_selects_flows_by_where_they_were_seen() -> None:
    from netmon.flows.table import FlowTable
    from netmon.ingest.batch import PacketBatch

    t = FlowTable()
    names = ["ssh web1:eth0", "ssh web2:any", "exporter 10.0.0.1"]
    for name in names:
        t.observer_id(name)
    syn = [(1.0, 60, 6, bytes([10, 0, 0, 1]), 1000, bytes([10, 0, 0, 2]), 443, 0x02)]
    for obs in range(3):
        t.add_batch(PacketBatch.from_records(syn).observed_at(obs))
    live = t.live_slots()
    assert len(live) == 3  # one 5-tuple, three places: three flows

    def seen(text: str) -> list[str]:
        cols = {c: getattr(t, c)[live] for c in FILTER_COLUMNS}
        mask = compile_filter(text).mask({**cols, "observers": t.observers})
        return sorted(names[int(o)] for o in t.obs[live][mask])
    assert seen("at web1") == ["ssh web1:eth0"]
    assert seen("at ssh and port 443") == ["ssh web1:eth0", "ssh web2:any"]
    assert seen("not at EXPORTER") == ["ssh web1:eth0", "ssh web2:any"]
    assert seen("at nowhere") == []
    with pytest.raises(FilterError, match="no capture-filter equivalent"):
        compile_filter("at web1").to_bpf()


def test_the_mask_is_vectorised_over_many_flows() -> None:
    n = 100_000
    rng = np.random.default_rng(1)
    cols = {"host_lo": rng.integers(0, 50, n).astype(np.uint64),
            "host_hi": rng.integers(0, 50, n).astype(np.uint64),
            "port_lo": rng.integers(0, 1000, n), "port_hi": rng.integers(0, 1000, n),
            "proto": rng.choice([1, 6, 17], n), "cluster": rng.integers(-1, 5, n)}
    f = compile_filter("tcp and (port 80 or port 443) and not cluster 3")
    m = f.mask(cols)
    want = (cols["proto"] == 6) & ((cols["port_lo"] == 80) | (cols["port_hi"] == 80)
                                   | (cols["port_lo"] == 443) | (cols["port_hi"] == 443)) \
        & (cols["cluster"] != 3)
    assert (m == want).all()


# ------------------------------------------------------------------------------ BPF
def dumpcap_accepts(bpf: str) -> tuple[bool, str]:
    """Compile ``bpf`` for Ethernet on lo with dumpcap (what live capture will use)."""
    if shutil.which("dumpcap") is None:
        pytest.skip("dumpcap is not installed (apt-get install tshark)")
    proc = subprocess.run(["dumpcap", "-d", "-f", bpf, "-i", "lo"], capture_output=True,
                          text=True, timeout=30)
    if proc.returncode and "permission" in proc.stderr.lower():
        pytest.skip("dumpcap may not open lo here (needs capture permission)")
    return proc.returncode == 0, proc.stderr.strip()


Insn = tuple[str, str, int, int]  # (op, operand, jump-if-true, jump-if-false)


def compiled(bpf: str) -> list[Insn]:
    """The BPF program libpcap makes of ``bpf``, from ``dumpcap -d``'s listing
    ("(005) jeq #0x800 jt 8 jf 6"; jump targets are absolute)."""
    ok, err = dumpcap_accepts(bpf)
    assert ok, err
    out = subprocess.run(["dumpcap", "-d", "-f", bpf, "-i", "lo"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    prog = []
    for line in out.splitlines():
        m = re.match(r"\((\d+)\)\s+(\w+)\s*(.*?)\s*(?:jt (\d+)\s+jf (\d+))?\s*$", line)
        if m:
            assert int(m.group(1)) == len(prog)
            prog.append((m.group(2), m.group(3), int(m.group(4) or 0), int(m.group(5) or 0)))
    return prog


def run_bpf(prog: list[Insn], pkt: bytes, wirelen: int) -> bool:
    """A classic BPF interpreter for the instructions libpcap emits for these filters."""
    a = x = 0
    pc = 0
    sizes = {"ld": 4, "ldh": 2, "ldb": 1}

    def value(operand: str) -> int | None:
        if operand.startswith("#"):
            return wirelen if operand == "#pktlen" else int(operand[1:], 0)
        if operand == "x":
            return x
        m = re.fullmatch(r"\[(x \+ )?(\d+)\]", operand)
        assert m, operand
        return int(m.group(2)) + (x if m.group(1) else 0)

    while pc < len(prog):
        op, operand, jt, jf = prog[pc]
        pc += 1
        if op in sizes:
            if operand.startswith("#"):
                a = value(operand)
                continue
            off = value(operand)
            if off + sizes[op] > len(pkt):
                return False  # a read past the end of the packet rejects it
            a = int.from_bytes(pkt[off:off + sizes[op]], "big")
        elif op == "ldxb":  # 4*([k]&0xf): the IPv4 header length
            k = int(re.fullmatch(r"4\*\(\[(\d+)\]&0xf\)", operand).group(1))
            if k >= len(pkt):
                return False
            x = (pkt[k] & 0x0F) * 4
        elif op in ("jeq", "jgt", "jge", "jset"):
            v = value(operand)
            hit = {"jeq": a == v, "jgt": a > v, "jge": a >= v, "jset": bool(a & v)}[op]
            pc = jt if hit else jf
        elif op == "ja":
            pc = int(operand)
        elif op in ("and", "or", "add", "sub", "lsh", "rsh", "mul"):
            v = value(operand)
            a = {"and": a & v, "or": a | v, "add": a + v, "sub": a - v, "lsh": a << v,
                 "rsh": a >> v, "mul": a * v}[op] & 0xFFFFFFFF
        elif op == "tax":
            x = a
        elif op == "txa":
            a = x
        elif op == "ret":
            return value(operand) != 0
        else:
            raise AssertionError(f"BPF instruction {op} {operand} not interpreted")
    return False


def capture_flows(name: str) -> tuple[list[FlowView], list[tuple[bytes, int, int]]]:
    """Flows of a shared capture, and each Ethernet frame with its wire length and flow."""
    path = captures_dir() / name
    data = path.read_bytes()
    dec = PcapStreamDecoder()
    batch = dec.feed_batch(data)
    t = FlowTable(idle_timeout=1e9, active_timeout=1e9)
    slots, _, _ = t.add_batch(batch)
    fids = t.flow_id[slots]
    frames = []
    for i in range(len(batch)):
        c, off, n = int(batch.raw_chunk[i]), int(batch.raw_off[i]), int(batch.raw_len[i])
        frames.append((batch.bufs[c][off:off + n], int(batch.wirelen[i]), int(fids[i])))
    return t.live_views(), frames


@pytest.mark.parametrize("text", [t for t, _ in GOOD if "cluster" not in t])
def test_filters_translate_to_bpf_that_libpcap_compiles(text: str) -> None:
    bpf = compile_filter(text).to_bpf()
    ok, err = dumpcap_accepts(bpf or "ip or not ip")
    assert ok, f"{text!r} -> {bpf!r}: {err}"


def test_cluster_terms_need_the_clusters_flows_for_bpf() -> None:
    f = compile_filter("cluster 3 and not port 22")
    with pytest.raises(FilterError, match="'cluster 3' has no capture-filter equivalent"):
        f.to_bpf()
    bpf = f.to_bpf(lambda n: "tcp port 443")
    assert bpf == "((tcp port 443) and not (port 22))"
    assert dumpcap_accepts(bpf)[0]


@pytest.mark.parametrize(("name", "kw", "exact"), [
    ("05_mixed_services_std_ports.pcap", {}, False),
    ("05_mixed_services_std_ports.pcap", {"max_exact": 1000}, True),
    ("03_ipv6_tls_reddit.pcap", {"max_exact": 1000}, True),
    ("09_icmp_traceroute.pcapng", {"max_exact": 1000}, True),
    ("06_nmap_synscan.pcapng", {}, False),
    ("06_nmap_synscan.pcapng", {"max_terms": 1}, False),
])
def test_bpf_for_flows_matches_those_flows_packets(name: str, kw: dict, exact: bool) -> None:
    flows, frames = capture_flows(name)
    # Take every other flow (sorted by id), so the filter must tell flows apart.
    chosen = sorted(flows, key=lambda f: f.flow_id)[::2][:60]
    want = {f.flow_id for f in chosen}
    bpf = bpf_for_flows(chosen, **kw)
    prog = compiled(bpf)
    hits = [run_bpf(prog, data, wirelen) for data, wirelen, _ in frames]
    mine = [fid in want for _, _, fid in frames]
    # Every packet of a chosen flow matches (a summary may match more)...
    assert all(h for h, m in zip(hits, mine, strict=True) if m), bpf[:300]
    if exact:  # ... and an exact filter nothing else
        assert hits == mine, bpf[:300]
    else:
        assert len(bpf) < 4000


def test_bpf_summaries_by_port_host_and_protocol() -> None:
    def flow(i: int, proto: int, b: str, pb: int) -> FlowView:
        return FlowView(i, proto, f"10.1.{i // 250}.{i % 250}", 30000 + i, b, pb,
                        1, 60, 1, 60, 0.0, 1.0)

    web = [flow(i, 6, "192.0.2.1", 443) for i in range(40)]
    assert bpf_for_flows(web) == "(tcp and port 443 and host 192.0.2.1)"
    many_servers = [flow(i, 6, f"192.0.2.{i}", 443) for i in range(40)]
    assert bpf_for_flows(many_servers) == "(tcp and port 443)"
    scan = [flow(i, 6, "192.0.2.7", 1 + i) for i in range(100)]
    assert bpf_for_flows(scan) == "(tcp and host 192.0.2.7)"
    mixed = [flow(i, 6 if i % 2 else 17, f"192.0.2.{i}", 1 + i) for i in range(100)]
    assert bpf_for_flows(mixed) == "tcp or udp"
    icmp = [flow(i, 1, "192.0.2.9", 0) for i in range(40)] + \
        [flow(100 + i, 132, "192.0.2.9", 0) for i in range(3)]
    assert bpf_for_flows(icmp) == ("(icmp and host 192.0.2.9) or "
                                   "((ip proto 132 or ip6 proto 132) and host 192.0.2.9)")
    for bpf in (bpf_for_flows(x) for x in (web, many_servers, scan, mixed, icmp)):
        assert dumpcap_accepts(bpf)[0], bpf
    with pytest.raises(ValueError, match="no flows"):
        bpf_for_flows([])
