"""Tests for netmon.testing.frames (header fields by hand, then tshark decoding every link
type) and netmon.testing.synth (synthetic_pcap: counts, structure, determinism, speed)."""

from __future__ import annotations

import itertools
import re
import shutil
import struct
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from netmon.ingest.linktypes import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NFLOG,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
)
from netmon.ingest.pcapwrite import pcap_header, pcap_record, pcapng_epb, pcapng_idb, pcapng_shb
from netmon.testing.frames import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ETHERTYPE_MPLS,
    IPV6_DEST_OPTS,
    IPV6_FRAGMENT,
    IPV6_HOP_BY_HOP,
    IPV6_ROUTING,
    ethernet,
    icmp,
    icmpv6,
    ipv4,
    ipv6,
    ipv6_dest_opts,
    ipv6_fragment,
    ipv6_hop_by_hop,
    ipv6_routing,
    loop,
    mpls,
    nflog,
    null_loopback,
    sll,
    sll2,
    tcp,
    udp,
)
from netmon.testing.synth import synthetic_pcap

needs_tshark = pytest.mark.skipif(
    shutil.which("tshark") is None or shutil.which("capinfos") is None,
    reason="tshark/capinfos not installed (apt-get install tshark) - decode checks skipped",
)


def _ones_sum_ok(data: bytes) -> bool:
    """True when the Internet checksum over ``data`` (checksum field included) verifies."""
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def _run(*args: str) -> str:
    done = subprocess.run(args, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "appears to" not in done.stderr and "cut short" not in done.stderr, done.stderr
    return done.stdout


# --- builders, field by field ---------------------------------------------------------


def test_ipv4_header_fields() -> None:
    packet = ipv4("10.0.0.1", "192.168.1.2", 17, b"x" * 9, ttl=7, ident=0x1234, options=b"\x01")
    ihl = packet[0] & 0x0F
    assert packet[0] >> 4 == 4 and ihl == 6  # one option byte padded to a 4-byte word
    header = packet[: ihl * 4]
    total, ident, flags_frag, ttl, proto = struct.unpack_from("!2xHHHBB", header)
    assert (total, ident, flags_frag, ttl, proto) == (24 + 9, 0x1234, 0, 7, 17)
    assert header[12:20] == bytes([10, 0, 0, 1, 192, 168, 1, 2])
    assert _ones_sum_ok(header)
    assert packet[ihl * 4 :] == b"x" * 9


def test_ipv4_fragment_flags() -> None:
    first = ipv4("10.0.0.1", "10.0.0.2", 17, b"a" * 16, mf=True, df=False)
    later = ipv4("10.0.0.1", "10.0.0.2", 17, b"b" * 8, frag_offset=2)
    dont = ipv4("10.0.0.1", "10.0.0.2", 6, b"", df=True)
    assert struct.unpack_from("!H", first, 6)[0] == 0x2000
    assert struct.unpack_from("!H", later, 6)[0] == 2
    assert struct.unpack_from("!H", dont, 6)[0] == 0x4000
    assert all(_ones_sum_ok(p[:20]) for p in (first, later, dont))


def test_ipv6_extension_helpers() -> None:
    hbh = ipv6_hop_by_hop(IPV6_FRAGMENT)
    assert len(hbh) == 8 and hbh[:2] == bytes([IPV6_FRAGMENT, 0])
    assert hbh[2:] == bytes([1, 4, 0, 0, 0, 0])  # PadN filling the 8-byte unit
    long_opts = ipv6_dest_opts(6, bytes([0x1E, 8]) + b"\xaa" * 8)
    assert len(long_opts) == 16 and long_opts[1] == 1
    assert ipv6_dest_opts(6, b"\x01\x02\0\0\0")[-1:] == b"\x00"  # Pad1 for one byte
    routing = ipv6_routing(17, ["2001:db8::1", "2001:db8::2"])
    assert len(routing) == 40 and routing[1] == 4 and routing[3] == 2
    frag = ipv6_fragment(17, 100, True, 0xDEADBEEF)
    assert frag == struct.pack("!BBHI", 17, 0, (100 << 3) | 1, 0xDEADBEEF)


def test_ipv6_chains_ext_headers() -> None:
    payload = udp(1000, 2000, b"hello")
    packet = ipv6(
        "2001:db8::1",
        "2001:db8::2",
        17,
        payload,
        ext=[(IPV6_HOP_BY_HOP, ipv6_hop_by_hop(0)), (IPV6_FRAGMENT, ipv6_fragment(0, 0, True, 9))],
    )
    first_word, plen, nxt, hops = struct.unpack_from("!IHBB", packet)
    assert first_word >> 28 == 6 and hops == 64
    assert plen == len(packet) - 40 == 8 + 8 + len(payload)
    assert nxt == IPV6_HOP_BY_HOP
    assert packet[40] == IPV6_FRAGMENT  # hop-by-hop points at the fragment header
    assert packet[48] == 17  # the fragment header points at UDP
    # Building the chain by hand gives the same bytes.
    manual = ipv6(
        "2001:db8::1",
        "2001:db8::2",
        IPV6_HOP_BY_HOP,
        ipv6_hop_by_hop(IPV6_FRAGMENT) + ipv6_fragment(17, 0, True, 9) + payload,
    )
    assert manual == packet


def test_transport_builders() -> None:
    segment = tcp(1, 2, flags=0x12, seq=5, ack=6, payload=b"data", options=b"\x02\x04\x05\xb4\x01")
    assert struct.unpack_from("!HHII", segment) == (1, 2, 5, 6)
    assert segment[12] >> 4 == 7  # 20 bytes + 5 option bytes padded to 8
    assert segment[13] == 0x12 and segment[28:] == b"data"
    datagram = udp(53, 5353, b"abc")
    assert struct.unpack_from("!HHHH", datagram) == (53, 5353, 11, 0)
    echo = icmp(8, 0, b"\x12\x34\x00\x01ping")
    assert echo[:2] == b"\x08\x00" and _ones_sum_ok(echo)
    assert icmpv6(128, 0, b"\0\1\0\2")[:4] == b"\x80\x00\x00\x00"


def test_link_builders() -> None:
    one = ethernet(b"P", ETHERTYPE_IPV4, vlans=[10])
    assert one[12:18] == bytes.fromhex("8100000a0800") and one[-1:] == b"P"
    qinq = ethernet(b"P", ETHERTYPE_IPV6, vlans=[100, 200])
    assert qinq[12:22] == bytes.fromhex("88a8 0064 8100 00c8 86dd")
    custom = ethernet(b"", ETHERTYPE_IPV4, vlans=[1, 2], vlan_tpids=[0x8100, 0x8100])
    assert custom[12:14] == custom[16:18] == b"\x81\x00"
    with pytest.raises(ValueError):
        ethernet(b"", ETHERTYPE_IPV4, vlans=[1, 2], vlan_tpids=[0x8100])
    stack = mpls(b"P", [16, 17], ttl=9)
    assert struct.unpack_from("!II", stack) == ((16 << 12) | 9, (17 << 12) | 0x100 | 9)
    assert len(sll(b"", ETHERTYPE_IPV4)) == 16 and sll(b"", 0x0800)[14:] == b"\x08\x00"
    cooked2 = sll2(b"", ETHERTYPE_IPV6, ifindex=3, pkttype=4)
    assert len(cooked2) == 20 and cooked2[:2] == b"\x86\xdd" and cooked2[4:8] == b"\0\0\0\3"
    assert cooked2[10] == 4
    assert null_loopback(b"", 2) == b"\x02\0\0\0"
    assert null_loopback(b"", 30, big_endian=True) == b"\0\0\0\x1e"
    assert loop(b"", 24) == b"\0\0\0\x18"


def test_nflog_layout() -> None:
    record = nflog(b"abcde", family=10, resource_id=7)
    assert record[:4] == bytes([10, 0, 0, 7])
    length, tlv_type = struct.unpack_from("<HH", record, 4)
    assert (length, tlv_type) == (8, 1) and record[8:10] == b"\x86\xdd"
    length, tlv_type = struct.unpack_from("<HH", record, 12)
    assert (length, tlv_type) == (9, 9)
    assert record[16:] == b"abcde\0\0\0"


# --- tshark decodes every link type ---------------------------------------------------

V4_TCP = ipv4("10.1.2.3", "10.4.5.6", 6, tcp(1111, 80, flags=0x02))
V6_UDP = ipv6("2001:db8::1", "2001:db8::2", 17, udp(2222, 7000, b"abcd"))
V6_EXT_UDP = ipv6(
    "2001:db8::1",
    "2001:db8::2",
    17,
    udp(3333, 7000, b"abcd"),
    ext=[(IPV6_HOP_BY_HOP, ipv6_hop_by_hop(0)), (IPV6_FRAGMENT, ipv6_fragment(0, 0, False, 7))],
)
V6_ROUTED_TCP = ipv6(
    "2001:db8::1",
    "2001:db8::2",
    6,
    tcp(4444, 443, flags=0x02),
    ext=[
        (IPV6_ROUTING, ipv6_routing(0, ["2001:db8::9"], segments_left=0)),
        (IPV6_DEST_OPTS, ipv6_dest_opts(0)),
    ],
)
V4 = ["10.1.2.3", "10.4.5.6", "1111", ""]
V6 = ["2001:db8::1", "2001:db8::2", "", "2222"]
V6_EXT = ["2001:db8::1", "2001:db8::2", "", "3333"]

#: (id, linktype, frame, expected [src, dst, tcp.srcport, udp.srcport]).
LINK_CASES = [
    ("ethernet", LINKTYPE_ETHERNET, ethernet(V4_TCP, ETHERTYPE_IPV4), V4),
    ("vlan", LINKTYPE_ETHERNET, ethernet(V4_TCP, ETHERTYPE_IPV4, vlans=[10]), V4),
    ("qinq", LINKTYPE_ETHERNET, ethernet(V6_UDP, ETHERTYPE_IPV6, vlans=[10, 20]), V6),
    ("mpls", LINKTYPE_ETHERNET, ethernet(mpls(V4_TCP, [100, 200]), ETHERTYPE_MPLS), V4),
    (
        "vlan-mpls-v6-ext",
        LINKTYPE_ETHERNET,
        ethernet(mpls(V6_EXT_UDP, [100]), ETHERTYPE_MPLS, vlans=[5]),
        V6_EXT,
    ),
    (
        "v6-routing-dstopts",
        LINKTYPE_ETHERNET,
        ethernet(V6_ROUTED_TCP, ETHERTYPE_IPV6),
        ["2001:db8::1", "2001:db8::2", "4444", ""],
    ),
    ("raw-v4", LINKTYPE_RAW, V4_TCP, V4),
    ("raw-v6-ext", LINKTYPE_RAW, V6_EXT_UDP, V6_EXT),
    ("ipv4", LINKTYPE_IPV4, V4_TCP, V4),
    ("ipv6", LINKTYPE_IPV6, V6_UDP, V6),
    ("null-v4", LINKTYPE_NULL, null_loopback(V4_TCP, 2), V4),
    ("null-v6-bsd", LINKTYPE_NULL, null_loopback(V6_UDP, 24), V6),
    ("null-v6-freebsd", LINKTYPE_NULL, null_loopback(V6_UDP, 28), V6),
    ("null-v6-darwin-be", LINKTYPE_NULL, null_loopback(V6_UDP, 30, big_endian=True), V6),
    ("loop-v4", LINKTYPE_LOOP, loop(V4_TCP, 2), V4),
    ("loop-v6", LINKTYPE_LOOP, loop(V6_UDP, 28), V6),
    ("sll", LINKTYPE_LINUX_SLL, sll(V4_TCP, ETHERTYPE_IPV4), V4),
    ("sll2", LINKTYPE_LINUX_SLL2, sll2(V6_UDP, ETHERTYPE_IPV6, pkttype=4), V6),
    ("nflog-v4", LINKTYPE_NFLOG, nflog(V4_TCP), V4),
    ("nflog-v6", LINKTYPE_NFLOG, nflog(V6_UDP, family=10), V6),
]
_FIELDS = (
    "-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst",
    "-e", "tcp.srcport", "-e", "udp.srcport", "-e", "frame.len",
)  # fmt: skip


def _decoded(path: Path) -> list[list[str]]:
    """[src, dst, tcp.srcport, udp.srcport, frame.len] per frame, IPv4 or IPv6."""
    rows = []
    for line in _run("tshark", "-n", "-r", str(path), "-T", "fields", *_FIELDS).splitlines():
        v4src, v6src, v4dst, v6dst, *rest = line.split("\t")
        rows.append([v4src or v6src, v4dst or v6dst, *rest])
    return rows


@needs_tshark
@pytest.mark.parametrize(
    ("linktype", "frame", "expected"),
    [pytest.param(lt, fr, exp, id=name) for name, lt, fr, exp in LINK_CASES],
)
def test_tshark_decodes_link_type(
    tmp_path: Path, linktype: int, frame: bytes, expected: list[str]
) -> None:
    path = tmp_path / "one.pcap"
    path.write_bytes(pcap_header(linktype) + pcap_record(1.5, frame))
    assert _decoded(path) == [[*expected, str(len(frame))]]


@needs_tshark
def test_tshark_decodes_every_link_type_in_one_pcapng(tmp_path: Path) -> None:
    # One interface per case: pcapng lets link types differ per interface.
    idbs = b"".join(pcapng_idb(lt, tsresol_exp=9) for _, lt, _, _ in LINK_CASES)
    epbs = b"".join(
        pcapng_epb(i, 2.0 + i, fr, tsresol_exp=9) for i, (_, _, fr, _) in enumerate(LINK_CASES)
    )
    path = tmp_path / "all.pcapng"
    path.write_bytes(pcapng_shb() + idbs + epbs)
    assert _decoded(path) == [[*exp, str(len(fr))] for _, _, fr, exp in LINK_CASES]


@needs_tshark
def test_tshark_checks_ipv4_and_icmp_checksums(tmp_path: Path) -> None:
    frame = ethernet(
        ipv4("10.0.0.1", "10.0.0.2", 1, icmp(8, 0, b"\0\1\0\1ping!"), options=b"\x94\x04\0\0"),
        ETHERTYPE_IPV4,
    )
    path = tmp_path / "icmp.pcap"
    path.write_bytes(pcap_header(LINKTYPE_ETHERNET) + pcap_record(1.0, frame))
    out = _run(
        "tshark", "-n", "-r", str(path), "-o", "ip.check_checksum:TRUE", "-T", "fields",
        "-e", "ip.checksum.status", "-e", "icmp.checksum.status", "-e", "icmp.type",
    )  # fmt: skip
    assert out.split() == ["1", "1", "8"]  # 1 = "Good"


# --- synthetic captures ---------------------------------------------------------------


def _walk_pcap(path: Path) -> list[tuple[int, int, bytes]]:
    """(timestamp in us, wire length, frame) for each record of a LE microsecond pcap."""
    data = path.read_bytes()
    assert struct.unpack_from("<IHHiIII", data)[0::6] == (0xA1B2C3D4, LINKTYPE_ETHERNET)
    out = []
    offset = 24
    while offset < len(data):
        sec, usec, caplen, wirelen = struct.unpack_from("<IIII", data, offset)
        assert caplen == wirelen
        out.append((sec * 1_000_000 + usec, wirelen, data[offset + 16 : offset + 16 + caplen]))
        offset += 16 + caplen
    assert offset == len(data)
    return out


def _flow_key(frame: bytes) -> tuple:
    """Direction-free flow identity: proto and the sorted (address, port) endpoints."""
    proto, src, dst = frame[23], frame[26:30], frame[30:34]
    if proto == 1:  # ICMP echo: the identifier stands in for both ports
        ident = frame[38:40]
        return (proto, *sorted([(src, ident), (dst, ident)]))
    return (proto, *sorted([(src, frame[34:36]), (dst, frame[36:38])]))


def test_synthetic_pcap_counts_and_structure(tmp_path: Path) -> None:
    path = tmp_path / "synth.pcap"
    summary = synthetic_pcap(path, 3000, 300, seed=7)
    records = _walk_pcap(path)
    assert summary == {"packets": 3000, "bytes": sum(r[1] for r in records), "flows": 300}
    assert len(records) == 3000

    times = [r[0] for r in records]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 1 <= times[0] - 1_700_000_000_000_000 <= 1000
    assert min(gaps) >= 1 and max(gaps) <= 1000
    flows: dict[tuple, list[bytes]] = {}
    for _, wirelen, frame in records:
        assert 60 <= wirelen <= 1514 and frame[12:14] == b"\x08\x00"
        assert struct.unpack_from("!H", frame, 16)[0] == wirelen - 14  # no Ethernet padding
        assert _ones_sum_ok(frame[14:34])
        flows.setdefault(_flow_key(frame), []).append(frame)
    assert len(flows) == 300

    kinds = Counter(key[0] for key in flows)
    assert 0.55 < kinds[6] / 300 < 0.85 and kinds[17] > 0 and kinds[1] > 0
    both_ways = 0
    for key, frames in flows.items():
        both_ways += len({f[26:30] for f in frames}) == 2
        if key[0] == 6:
            assert frames[0][47] == 0x02  # SYN
            if len(frames) > 1:
                assert frames[1][47] == 0x12  # SYN-ACK, from the other side
                assert frames[1][26:30] == frames[0][30:34]
        if key[0] == 1:
            assert all(_ones_sum_ok(f[34:]) for f in frames)
    assert both_ways > 100


def test_synthetic_pcap_is_deterministic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    assert synthetic_pcap(a, 500, 50, seed=3) == synthetic_pcap(b, 500, 50, seed=3)
    assert a.read_bytes() == b.read_bytes()
    synthetic_pcap(c, 500, 50, seed=4)
    assert a.read_bytes() != c.read_bytes()


def test_synthetic_pcap_edges(tmp_path: Path) -> None:
    path = tmp_path / "edge.pcap"
    assert synthetic_pcap(path, 0, 0) == {"packets": 0, "bytes": 0, "flows": 0}
    assert path.stat().st_size == 24
    one = synthetic_pcap(path, 5, 5, start=10.0)
    assert one["packets"] == one["flows"] == 5
    assert _walk_pcap(path)[0][0] > 10_000_000
    with pytest.raises(ValueError):
        synthetic_pcap(path, 10, 11)


def test_synthetic_pcap_is_fast(tmp_path: Path) -> None:
    # 1 M packets must stay well under 30 s; 100 k here with a generous bound.
    started = time.perf_counter()
    synthetic_pcap(tmp_path / "fast.pcap", 100_000, 5_000)
    assert time.perf_counter() - started < 2.5


@needs_tshark
def test_synthetic_pcap_matches_capinfos_and_tshark(tmp_path: Path) -> None:
    path = tmp_path / "synth.pcap"
    summary = synthetic_pcap(path, 2000, 200, seed=11)
    capinfos = _run("capinfos", "-c", "-M", str(path))
    assert re.search(r"Number of packets:\s+(\d+)", capinfos).group(1) == "2000"

    conv = _run("tshark", "-n", "-r", str(path), "-q", "-z", "conv,ip")
    # Columns after the address pair: frames, bytes (value + unit) for <-, ->, total.
    rows = re.findall(r"<->\s+\S+\s+\d+\s+\S+\s+\S+\s+\d+\s+\S+\s+\S+\s+(\d+)\s", conv)
    assert len(rows) == summary["flows"]  # every flow has its own address pair
    assert sum(map(int, rows)) == summary["packets"]

    io_stat = _run("tshark", "-n", "-r", str(path), "-q", "-z", "io,stat,0")
    frames, size = re.search(r"<>\s+\S+\s+\|\s+(\d+)\s+\|\s+(\d+)\s+\|", io_stat).groups()
    assert (int(frames), int(size)) == (summary["packets"], summary["bytes"])
