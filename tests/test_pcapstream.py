"""Tests for netmon.ingest.pcapstream: every stream is decoded whole and in 1-9-byte chunks.

The decoder is fed by a Twisted protocol that gets bytes in whatever pieces the pipe
hands over, so each test decodes its input twice - all at once, and chunked with a
seeded random split of 1 to 9 bytes - and asserts both give identical records and
counters. Inputs are built with netmon.testing.frames and netmon.ingest.pcapwrite; no
files are read.
"""

from __future__ import annotations

import math
import random
import socket
import struct
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netmon.core.values import PacketRecord
from netmon.ingest.batch import TUNNEL
from netmon.ingest.framedecoder import MAX_IPV6_EXT
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
from netmon.ingest.pcapstream import MAX_RECORD, PcapStreamDecoder
from netmon.ingest.pcapwrite import (
    pcap_header,
    pcap_record,
    pcapng_epb,
    pcapng_idb,
    pcapng_shb,
    pcapng_spb,
)
from netmon.testing.frames import (
    AF_LINUX_INET,
    AF_LINUX_INET6,
    AF_NULL_INET,
    AF_NULL_INET6_BSD,
    AF_NULL_INET6_DARWIN,
    AF_NULL_INET6_FREEBSD,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ETHERTYPE_MPLS,
    ETHERTYPE_QINQ,
    ETHERTYPE_VLAN,
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
from tests.tshark_oracle import compare, write_pcap

A4, B4, C4 = "10.0.0.1", "10.0.0.2", "192.168.7.9"
A6, B6 = "2001:db8::1", "2001:db8:ffff::2"
T0 = 1_700_000_000.25  # a binary fraction: exact in pcap (us/ns) and pcapng ticks
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def packed(addr: str) -> bytes:
    """Text address -> the packed form the decoder emits."""
    if ":" in addr:
        return socket.inet_pton(socket.AF_INET6, addr)
    return socket.inet_aton(addr)


# --- feeding helpers ---------------------------------------------------------------------


def feed_whole(data: bytes) -> tuple[list[tuple], PcapStreamDecoder]:
    """Decode ``data`` in one ``feed`` call, then ``close``."""
    dec = PcapStreamDecoder()
    out = dec.feed(data)
    out += dec.close()
    return out, dec


def feed_chunked(data: bytes, seed: int) -> tuple[list[tuple], PcapStreamDecoder]:
    """Decode ``data`` fed in chunks of 1 to 9 bytes (sizes drawn from ``seed``)."""
    rng = random.Random(seed)
    dec = PcapStreamDecoder()
    out: list[tuple] = []
    i = 0
    while i < len(data):
        n = rng.randint(1, 9)
        out += dec.feed(data[i:i + n])
        i += n
    out += dec.close()
    return out, dec


def feed_batches(data: bytes, seed: int | None) -> tuple[list[tuple], PcapStreamDecoder]:
    """Decode through the columnar ``feed_batch`` (the engine's hot path), whole when
    ``seed`` is None, else chunked like :func:`feed_chunked`; records as tuples."""
    rng = random.Random(seed)
    dec = PcapStreamDecoder()
    out: list[tuple] = []
    i = 0
    while i < len(data):
        n = len(data) if seed is None else rng.randint(1, 9)
        out += dec.feed_batch(data[i:i + n]).records()
        i += n
    out += dec.close()
    return out, dec


def state(dec: PcapStreamDecoder) -> dict:
    """Everything an owner can read from a decoder, for comparing two runs."""
    return {
        "frames": dec.frames, "ip_frames": dec.ip_frames, "nonip": dec.nonip,
        "partial": dec.partial, "skipped": dict(dec.skipped), "error": dec.error,
        "warning": dec.warning, "fmt": dec.fmt, "linktypes": list(dec.linktypes),
    }


def check_accounting(out: list[tuple], dec: PcapStreamDecoder) -> None:
    """Every frame read is exactly one of: emitted IP record, non-IP, skipped (a
    tunnel's frame emits its outer record, marked TUNNEL, and its inner one)."""
    assert len(out) - sum(rec[7] >= TUNNEL for rec in out) == dec.ip_frames
    frame_skips = sum(dec.skipped.values()) - dec.skipped["corrupt-record-header"]
    assert dec.frames == dec.ip_frames + dec.nonip + frame_skips
    assert 0 <= dec.partial <= dec.ip_frames
    for rec in out:
        assert len(rec) == 8


def decode(data: bytes, seeds: tuple[int, ...] = (1, 2)) -> tuple[list[PacketRecord],
                                                                  PcapStreamDecoder]:
    """Decode ``data`` whole and chunked; assert identical results; return the records."""
    out, dec = feed_whole(data)
    check_accounting(out, dec)
    for seed in seeds:
        out_c, dec_c = feed_chunked(data, seed)
        assert out_c == out, f"chunked (seed {seed}) records differ from whole-input ones"
        assert state(dec_c) == state(dec), f"chunked (seed {seed}) counters differ"
    for seed in (None, *seeds):
        out_b, dec_b = feed_batches(data, seed)
        assert out_b == out, f"feed_batch (seed {seed}) records differ from feed's"
        assert state(dec_b) == state(dec), f"feed_batch (seed {seed}) counters differ"
    return [PacketRecord(*r) for r in out], dec


def pcap(linktype: int, frames: list[bytes], *, big_endian: bool = False,
         nanosecond: bool = False, t0: float = T0, wirelens: list[int] | None = None) -> bytes:
    """A classic pcap of ``frames`` 1 ms apart."""
    data = pcap_header(linktype, big_endian=big_endian, nanosecond=nanosecond)
    for i, frame in enumerate(frames):
        data += pcap_record(t0 + i / 1024, frame, big_endian=big_endian, nanosecond=nanosecond,
                            wirelen=None if wirelens is None else wirelens[i])
    return data


def one(linktype: int, frame: bytes, wirelen: int | None = None) -> tuple[list[PacketRecord],
                                                                          PcapStreamDecoder]:
    """Decode a one-frame pcap (whole and chunked)."""
    return decode(pcap(linktype, [frame], wirelens=None if wirelen is None else [wirelen]))


def fields(rec: PacketRecord) -> tuple:
    """(proto, src, sport, dst, dport, flags) of a record, addresses as text."""
    def text(a: bytes) -> str:
        return socket.inet_ntop(socket.AF_INET if len(a) == 4 else socket.AF_INET6, a)
    return (rec.proto, text(rec.src), rec.sport, text(rec.dst), rec.dport, rec.flags)


def ng_block(btype: int, body: bytes, *, big_endian: bool = False) -> bytes:
    """A raw pcapng block (``body`` already 32-bit aligned)."""
    e = ">" if big_endian else "<"
    total = len(body) + 12
    return struct.pack(e + "II", btype, total) + body + struct.pack(e + "I", total)


def ng_idb_opts(linktype: int, options: list[tuple[int, bytes]], *,
                big_endian: bool = False) -> bytes:
    """An IDB with arbitrary options (e.g. a power-of-two if_tsresol, if_tsoffset)."""
    e = ">" if big_endian else "<"
    body = struct.pack(e + "HHI", linktype, 0, 0)
    for code, value in options:
        body += struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)
    body += struct.pack(e + "HH", 0, 0)
    return ng_block(1, body, big_endian=big_endian)


def ng_epb_ticks(iface: int, ticks: int, frame: bytes, *, big_endian: bool = False,
                 wirelen: int | None = None) -> bytes:
    """An EPB with an exact tick count.

    pcapwrite.pcapng_epb computes ``round(ts * 10**exp)`` in floating point, which at
    nanosecond resolution and today's epoch is off by up to 128 ns; tests of exact
    timestamps need exact ticks, and 2^-n resolutions need raw ticks anyway.
    """
    e = ">" if big_endian else "<"
    head = struct.pack(e + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame),
                       len(frame) if wirelen is None else wirelen)
    return ng_block(6, head + frame + b"\0" * (-len(frame) % 4), big_endian=big_endian)


def ns(ts: float) -> int:
    """Exact nanosecond ticks of a float timestamp."""
    return int(Fraction(ts) * 10**9)


def assert_ts(ts: float, sec: int, frac: int, exp: int) -> None:
    """``ts`` is ``sec + frac * 10**-exp`` to within one unit in the last place."""
    exact = Fraction(sec) + Fraction(frac, 10**exp)
    assert abs(Fraction(ts) - exact) <= Fraction(math.ulp(float(exact))), (ts, sec, frac)


V4_TCP = ipv4(A4, B4, 6, tcp(40000, 443, flags=SYN))
V4_UDP = ipv4(A4, C4, 17, udp(5353, 53, b"query"))
V6_TCP = ipv6(A6, B6, 6, tcp(50000, 22, flags=PSH | ACK, payload=b"ssh"))
V6_UDP = ipv6(A6, B6, 17, udp(1000, 2000, b"x" * 11))
EXP_V4_TCP = (6, A4, 40000, B4, 443, SYN)
EXP_V4_UDP = (17, A4, 5353, C4, 53, 0)
EXP_V6_TCP = (6, A6, 50000, B6, 22, PSH | ACK)
EXP_V6_UDP = (17, A6, 1000, B6, 2000, 0)


def eth4(packet: bytes, **kw) -> bytes:
    return ethernet(packet, ETHERTYPE_IPV4, **kw)


def eth6(packet: bytes, **kw) -> bytes:
    return ethernet(packet, ETHERTYPE_IPV6, **kw)


# --- classic pcap --------------------------------------------------------------------------


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("exp", [6, 9], ids=["us", "ns"])
def test_pcap_byte_orders_and_timestamp_resolutions(big_endian: bool, exp: int) -> None:
    e = ">" if big_endian else "<"
    frame = eth4(V4_UDP)
    stamps = [(1_700_000_000, 0), (1_700_000_000, 1), (1_700_000_001, 10**exp - 1),
              (1_700_000_002, 10**exp // 2), (1, 123), (1, 124), (0, 0)]
    data = pcap_header(LINKTYPE_ETHERNET, big_endian=big_endian, nanosecond=exp == 9)
    for sec, frac in stamps:
        data += struct.pack(e + "IIII", sec, frac, len(frame), len(frame) + 4) + frame
    recs, dec = decode(data)
    assert dec.fmt == "pcap" and dec.linktypes == [LINKTYPE_ETHERNET]
    assert not dec.error and not dec.warning
    assert dec.frames == dec.ip_frames == len(stamps)
    for rec, (sec, frac) in zip(recs, stamps, strict=True):
        assert_ts(rec.ts, sec, frac, exp)
        assert rec.wirelen == len(frame) + 4  # the original length, not the captured one
        assert fields(rec) == EXP_V4_UDP
    assert recs[3].ts == 1_700_000_002.5  # representable, so exact
    assert recs[4].ts < recs[5].ts  # one tick apart is still visible at t ~ 1 s
    assert recs[5].ts - recs[4].ts == pytest.approx(10.0**-exp, rel=1e-6)
    assert dec.last_ts == recs[-1].ts


def test_pcap_header_only_and_wirelen() -> None:
    recs, dec = decode(pcap_header(LINKTYPE_ETHERNET))
    assert recs == [] and dec.fmt == "pcap" and not dec.error and not dec.warning
    recs, _ = decode(pcap(LINKTYPE_ETHERNET, [eth4(V4_TCP)], wirelens=[1514]))
    assert recs[0].wirelen == 1514 and recs[0].ts == T0


def test_pcap_linktype_high_bits_ignored() -> None:
    """The top 4 bits of the pcap link type field carry FCS info, not the link type."""
    header = bytearray(pcap_header(LINKTYPE_ETHERNET))
    struct.pack_into("<I", header, 20, LINKTYPE_ETHERNET | 0x10000000)
    recs, dec = decode(bytes(header) + pcap_record(T0, eth4(V4_TCP)))
    assert dec.linktypes == [LINKTYPE_ETHERNET] and fields(recs[0]) == EXP_V4_TCP


# --- pcapng --------------------------------------------------------------------------------


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_pcapng_blocks_and_interfaces(big_endian: bool) -> None:
    be = big_endian
    data = (
        pcapng_shb(be)
        + pcapng_idb(LINKTYPE_ETHERNET, big_endian=be)  # iface 0: us (default)
        + pcapng_idb(LINKTYPE_RAW, tsresol_exp=9, big_endian=be)  # iface 1: ns
        + pcapng_idb(LINKTYPE_LINUX_SLL, tsresol_exp=3, big_endian=be)  # iface 2: ms
        + pcapng_epb(0, T0, eth4(V4_TCP), big_endian=be)
        + ng_epb_ticks(1, ns(T0 + 1), V6_UDP, wirelen=200, big_endian=be)
        + pcapng_epb(2, T0 + 2, sll(V4_UDP, ETHERTYPE_IPV4), tsresol_exp=3, big_endian=be)
        + pcapng_spb(eth6(V6_TCP), big_endian=be)  # interface 0, no timestamp
        # Unknown block types (here a Name Resolution Block) are passed over.
        + ng_block(4, b"\0" * 8, big_endian=be)
        + pcapng_epb(0, T0 + 3, eth4(V4_UDP), big_endian=be)
    )
    recs, dec = decode(data)
    assert dec.fmt == "pcapng" and not dec.error and not dec.warning
    assert dec.linktypes == [LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL]
    assert [fields(r) for r in recs] == [EXP_V4_TCP, EXP_V6_UDP, EXP_V4_UDP, EXP_V6_TCP,
                                         EXP_V4_UDP]
    assert [r.ts for r in recs] == [T0, T0 + 1, T0 + 2, T0 + 2, T0 + 3]  # SPB: last seen ts
    assert recs[1].wirelen == 200
    assert recs[3].wirelen == len(eth6(V6_TCP))


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_pcapng_tsresol_powers_of_two_and_ten(big_endian: bool) -> None:
    be = big_endian
    e = ">" if be else "<"
    sec = 1_700_000_000
    data = (
        pcapng_shb(be)
        + ng_idb_opts(LINKTYPE_IPV4, [(9, bytes([0x80 | 20]))], big_endian=be)  # 2^-20 s
        + ng_idb_opts(LINKTYPE_IPV4, [(9, bytes([9]))], big_endian=be)  # 10^-9 s
        + ng_idb_opts(LINKTYPE_IPV4, [(9, bytes([0]))], big_endian=be)  # whole seconds
        # if_tsoffset: 1e9 s added to every timestamp of the interface (2^-1 s ticks).
        + ng_idb_opts(LINKTYPE_IPV4, [(9, bytes([0x81])), (14, struct.pack(e + "q", 10**9))],
                      big_endian=be)
        + ng_epb_ticks(0, (sec << 20) + 3, V4_TCP, big_endian=be)
        + ng_epb_ticks(1, sec * 10**9 + 123_456_789, V4_TCP, big_endian=be)
        + ng_epb_ticks(1, 1 * 10**9 + 1, V4_TCP, big_endian=be)
        + ng_epb_ticks(2, sec, V4_TCP, big_endian=be)
        + ng_epb_ticks(3, 2 * 700_000_000 + 1, V4_TCP, big_endian=be)
    )
    recs, dec = decode(data)
    assert dec.linktypes == [LINKTYPE_IPV4] * 4
    assert recs[0].ts == sec + 3 / 2**20  # exactly representable: must be exact
    assert_ts(recs[1].ts, sec, 123_456_789, 9)
    assert_ts(recs[2].ts, 1, 1, 9)
    assert recs[2].ts != 1.0
    assert recs[3].ts == sec
    assert recs[4].ts == 1_700_000_000.5
    assert all(fields(r) == EXP_V4_TCP for r in recs)


def test_pcapng_us_timestamps_exact() -> None:
    """Default (us) pcapng ticks give the same floats as the pcap reader's arithmetic."""
    stamps = [1_700_000_000 * 10**6 + k for k in (0, 1, 2, 999_999, 123_457, 500_000)]
    data = pcapng_shb() + pcapng_idb(LINKTYPE_RAW)
    data += b"".join(ng_epb_ticks(0, t, V4_UDP) for t in stamps)
    recs, _ = decode(data)
    for rec, t in zip(recs, stamps, strict=True):
        assert_ts(rec.ts, t // 10**6, t % 10**6, 6)
    assert recs[-1].ts == 1_700_000_000.5


def test_pcapng_second_section_resets_interfaces() -> None:
    data = (
        pcapng_shb()
        + pcapng_idb(LINKTYPE_ETHERNET)
        + pcapng_idb(LINKTYPE_RAW)
        + pcapng_epb(1, T0, V4_TCP)
        + pcapng_epb(0, T0 + 1, eth4(V4_UDP))
        # A new section, in the other byte order, with its own interface list.
        + pcapng_shb(big_endian=True)
        + pcapng_idb(LINKTYPE_LINUX_SLL2, tsresol_exp=9, big_endian=True)
        + ng_epb_ticks(0, ns(T0 + 2), sll2(V6_UDP, ETHERTYPE_IPV6), big_endian=True)
        + pcapng_epb(1, T0 + 3, V4_TCP, big_endian=True)  # iface 1 is gone with section 1
        + pcapng_spb(sll2(V4_TCP, ETHERTYPE_IPV4), big_endian=True)
    )
    recs, dec = decode(data)
    assert [fields(r) for r in recs] == [EXP_V4_TCP, EXP_V4_UDP, EXP_V6_UDP, EXP_V4_TCP]
    assert [r.ts for r in recs] == [T0, T0 + 1, T0 + 2, T0 + 2]
    assert dec.frames == 5
    assert dec.skipped == {"bad-packet-block": 1}
    assert dec.linktypes[-1] == LINKTYPE_LINUX_SLL2
    assert not dec.error and not dec.warning


def test_pcapng_packet_without_interface_is_skipped() -> None:
    data = (pcapng_shb() + pcapng_epb(0, T0, V4_TCP) + pcapng_spb(V4_TCP)
            + pcapng_idb(LINKTYPE_RAW) + pcapng_epb(3, T0, V4_TCP) + pcapng_epb(0, T0, V4_TCP))
    recs, dec = decode(data)
    assert len(recs) == 1 and dec.frames == 4
    assert dec.skipped == {"bad-packet-block": 3}


def test_pcapng_epb_caplen_beyond_block_is_skipped() -> None:
    epb = bytearray(pcapng_epb(0, T0, V4_TCP))
    struct.pack_into("<I", epb, 20, len(V4_TCP) + 64)  # caplen past the block's end
    data = pcapng_shb() + pcapng_idb(LINKTYPE_RAW) + bytes(epb) + pcapng_epb(0, T0, V4_UDP)
    recs, dec = decode(data)
    assert [fields(r) for r in recs] == [EXP_V4_UDP]
    assert dec.skipped == {"bad-packet-block": 1}


def test_pcapng_spb_uses_snaplen_of_interface_0() -> None:
    """An SPB has no caplen: min(wirelen, snaplen) of IDB 0 bounds the captured bytes."""
    frame = V4_TCP[:24]  # cut inside the TCP header: ports but no flags
    data = (pcapng_shb() + pcapng_idb(LINKTYPE_RAW, snaplen=24)
            + pcapng_spb(frame, wirelen=len(V4_TCP)))
    recs, dec = decode(data)
    assert fields(recs[0]) == (6, A4, 40000, B4, 443, 0)
    assert recs[0].wirelen == len(V4_TCP) and dec.partial == 1


# --- link types -------------------------------------------------------------------------------

LINK_CASES = [
    ("ethernet-v4", LINKTYPE_ETHERNET, eth4(V4_TCP), EXP_V4_TCP),
    ("ethernet-v6", LINKTYPE_ETHERNET, eth6(V6_UDP), EXP_V6_UDP),
    ("802.1q", LINKTYPE_ETHERNET, eth4(V4_UDP, vlans=[42]), EXP_V4_UDP),
    ("802.1q-v6", LINKTYPE_ETHERNET, eth6(V6_TCP, vlans=[4094]), EXP_V6_TCP),
    ("802.1ad", LINKTYPE_ETHERNET, eth4(V4_TCP, vlans=[7], vlan_tpids=[ETHERTYPE_QINQ]),
     EXP_V4_TCP),
    ("qinq", LINKTYPE_ETHERNET, eth4(V4_TCP, vlans=[100, 200]), EXP_V4_TCP),
    ("qinq-9100", LINKTYPE_ETHERNET,
     eth6(V6_UDP, vlans=[1, 2, 3], vlan_tpids=[0x9100, ETHERTYPE_QINQ, ETHERTYPE_VLAN]),
     EXP_V6_UDP),
    ("mpls-1", LINKTYPE_ETHERNET, ethernet(mpls(V4_UDP, [16]), ETHERTYPE_MPLS), EXP_V4_UDP),
    ("mpls-3", LINKTYPE_ETHERNET, ethernet(mpls(V6_TCP, [16, 17, 1048575]), ETHERTYPE_MPLS),
     EXP_V6_TCP),
    ("vlan-mpls", LINKTYPE_ETHERNET,
     ethernet(mpls(V4_TCP, [100, 200]), ETHERTYPE_MPLS, vlans=[5]), EXP_V4_TCP),
    ("mpls-multicast", LINKTYPE_ETHERNET, ethernet(mpls(V4_TCP, [3]), 0x8848), EXP_V4_TCP),
    ("sll-v4", LINKTYPE_LINUX_SLL, sll(V4_TCP, ETHERTYPE_IPV4), EXP_V4_TCP),
    ("sll-v6", LINKTYPE_LINUX_SLL, sll(V6_UDP, ETHERTYPE_IPV6, pkttype=4), EXP_V6_UDP),
    ("sll-vlan", LINKTYPE_LINUX_SLL,
     sll(struct.pack("!HH", 9, ETHERTYPE_IPV4) + V4_UDP, ETHERTYPE_VLAN), EXP_V4_UDP),
    ("sll2-v4", LINKTYPE_LINUX_SLL2, sll2(V4_UDP, ETHERTYPE_IPV4), EXP_V4_UDP),
    ("sll2-v6", LINKTYPE_LINUX_SLL2, sll2(V6_TCP, ETHERTYPE_IPV6, ifindex=9), EXP_V6_TCP),
    ("raw101-v4", LINKTYPE_RAW, V4_TCP, EXP_V4_TCP),
    ("raw101-v6", LINKTYPE_RAW, V6_UDP, EXP_V6_UDP),
    ("ipv4-228", LINKTYPE_IPV4, V4_UDP, EXP_V4_UDP),
    ("ipv6-229", LINKTYPE_IPV6, V6_TCP, EXP_V6_TCP),
    ("null-le-v4", LINKTYPE_NULL, null_loopback(V4_TCP, AF_NULL_INET), EXP_V4_TCP),
    ("null-be-v4", LINKTYPE_NULL, null_loopback(V4_UDP, AF_NULL_INET, big_endian=True),
     EXP_V4_UDP),
    ("null-le-v6-24", LINKTYPE_NULL, null_loopback(V6_UDP, AF_NULL_INET6_BSD), EXP_V6_UDP),
    ("null-le-v6-28", LINKTYPE_NULL, null_loopback(V6_TCP, AF_NULL_INET6_FREEBSD), EXP_V6_TCP),
    ("null-be-v6-30", LINKTYPE_NULL,
     null_loopback(V6_UDP, AF_NULL_INET6_DARWIN, big_endian=True), EXP_V6_UDP),
    ("loop-v4", LINKTYPE_LOOP, loop(V4_TCP, AF_NULL_INET), EXP_V4_TCP),
    ("loop-v6", LINKTYPE_LOOP, loop(V6_TCP, AF_NULL_INET6_BSD), EXP_V6_TCP),
    ("nflog-v4", LINKTYPE_NFLOG, nflog(V4_UDP, AF_LINUX_INET, resource_id=3), EXP_V4_UDP),
    ("nflog-v6", LINKTYPE_NFLOG, nflog(V6_TCP, AF_LINUX_INET6), EXP_V6_TCP),
    ("nflog-other-family", LINKTYPE_NFLOG, nflog(V6_UDP, 0), EXP_V6_UDP),
]


@pytest.mark.parametrize(("linktype", "frame", "expected"),
                         [c[1:] for c in LINK_CASES], ids=[c[0] for c in LINK_CASES])
def test_link_types(linktype: int, frame: bytes, expected: tuple) -> None:
    recs, dec = one(linktype, frame)
    assert [fields(r) for r in recs] == [expected]
    assert recs[0].wirelen == len(frame) and recs[0].ts == T0
    assert dec.linktypes == [linktype]
    assert not dec.skipped and not dec.nonip and not dec.partial


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_every_link_type_in_one_pcapng(big_endian: bool) -> None:
    """One interface per link case, the packets interleaved in a single section."""
    be = big_endian
    data = pcapng_shb(be)
    for _, linktype, _, _ in LINK_CASES:
        data += pcapng_idb(linktype, big_endian=be)
    order = list(range(len(LINK_CASES)))
    random.Random(5).shuffle(order)
    for n, i in enumerate(order):
        data += pcapng_epb(i, T0 + n, LINK_CASES[i][2], big_endian=be)
    recs, dec = decode(data, seeds=(3,))
    assert dec.linktypes == [c[1] for c in LINK_CASES]
    assert [fields(r) for r in recs] == [LINK_CASES[i][3] for i in order]
    assert [r.ts for r in recs] == [T0 + n for n in range(len(order))]


def test_nflog_skips_tlvs_before_payload() -> None:
    """TLVs other than the payload, of odd lengths, are stepped over with 4-byte padding."""
    def tlv(kind: int, value: bytes) -> bytes:
        return struct.pack("<HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)
    frame = (bytes([AF_LINUX_INET, 0, 0, 0]) + tlv(1, b"\x08\x00\x00\x00") + tlv(10, b"p")
             + tlv(11, b"12345") + tlv(9, V4_TCP))
    recs, _ = one(LINKTYPE_NFLOG, frame)
    assert [fields(r) for r in recs] == [EXP_V4_TCP]


def test_llc_snap_and_pppoe() -> None:
    snap = b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + V4_TCP
    llc = ethernet(snap, len(snap))  # 802.3 length field instead of an ethertype
    pppoe = ethernet(b"\x11\x00\x00\x01" + struct.pack("!HH", len(V6_UDP) + 2, 0x0057) + V6_UDP,
                     0x8864)
    recs, _ = decode(pcap(LINKTYPE_ETHERNET, [llc, pppoe]))
    assert [fields(r) for r in recs] == [EXP_V4_TCP, EXP_V6_UDP]


# --- IP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [b"\x94\x04\x00\x00", b"\x01" * 3,
                                     b"\x07\x27" + b"\0" * 38],  # record route, 40 bytes
                         ids=["router-alert", "nops", "40-bytes"])
def test_ipv4_options(options: bytes) -> None:
    packet = ipv4(A4, B4, 6, tcp(1, 65535, flags=FIN | ACK), options=options)
    recs, _ = one(LINKTYPE_ETHERNET, eth4(packet))
    assert [fields(r) for r in recs] == [(6, A4, 1, B4, 65535, FIN | ACK)]


def test_ipv4_total_length_bounds_transport_and_padding_ignored() -> None:
    """Ethernet padding after a short IP packet is not read as transport data."""
    short = ipv4(A4, B4, 1, icmp(8, 0, b"\0\1\0\1"))
    recs, _ = one(LINKTYPE_ETHERNET, eth4(short) + b"\0" * 20)
    assert [fields(r) for r in recs] == [(1, A4, 0, B4, 0, 8)]
    assert recs[0].wirelen == 14 + len(short) + 20


def test_ipv4_zero_total_length_trusts_captured_bytes() -> None:
    """TSO captures on the sender carry total length 0: the captured bytes count."""
    packet = bytearray(V4_TCP)
    struct.pack_into("!H", packet, 2, 0)
    recs, _ = one(LINKTYPE_RAW, bytes(packet))
    assert [fields(r) for r in recs] == [EXP_V4_TCP]


def _v4_fragments(ident: int, proto: int, l4: bytes, src: str = A4,
                  dst: str = B4) -> list[bytes]:
    """Split ``l4`` into three IPv4 fragments (offsets in 8-byte units)."""
    return [
        ipv4(src, dst, proto, l4[:16], ident=ident, mf=True),
        ipv4(src, dst, proto, l4[16:32], ident=ident, mf=True, frag_offset=2),
        ipv4(src, dst, proto, l4[32:], ident=ident, frag_offset=4),
    ]


def test_ipv4_fragments_inherit_first_fragment_ports() -> None:
    dgram = udp(4444, 5555, b"u" * 40)
    seg = tcp(6000, 80, flags=PSH | ACK, payload=b"t" * 30)
    f_udp = _v4_fragments(0x1111, 17, dgram)
    f_tcp = _v4_fragments(0x2222, 6, seg)
    orphan = _v4_fragments(0x3333, 17, dgram)
    other_src = _v4_fragments(0x1111, 17, dgram, src=C4)  # same id, another sender
    frames = [
        f_udp[0], f_tcp[0], f_udp[1], f_tcp[1], f_tcp[2], f_udp[2],
        orphan[1], orphan[2],  # their first fragment was never captured
        other_src[2],
        f_udp[1],  # a late duplicate still finds the datagram
    ]
    recs, dec = decode(pcap(LINKTYPE_RAW, frames))
    assert [fields(r) for r in recs] == [
        (17, A4, 4444, B4, 5555, 0),
        (6, A4, 6000, B4, 80, PSH | ACK),
        (17, A4, 4444, B4, 5555, 0),
        (6, A4, 6000, B4, 80, 0),  # later TCP fragments carry no flags
        (6, A4, 6000, B4, 80, 0),
        (17, A4, 4444, B4, 5555, 0),
        (17, A4, 4444, B4, 5555, 0),
        # Held for a first fragment that never came: released unmatched at the end.
        (17, A4, 0, B4, 0, 0),
        (17, A4, 0, B4, 0, 0),
        (17, C4, 0, B4, 0, 0),
    ]
    assert [r.wirelen for r in recs] == [len(f) for f in frames[:6] + frames[9:] + frames[6:9]]
    assert dec.partial == 0 and not dec.skipped and dec.frags.unmatched == 3


def test_ipv4_later_fragment_before_first_is_held_for_its_ports() -> None:
    """Issue 19: fragments arriving before their first fragment (last-first) are held
    and released into the datagram's flow when the first one comes."""
    frags = _v4_fragments(7, 17, udp(1, 2, b"z" * 40))
    for order in ([2, 0, 1], [2, 1, 0], [1, 2, 0]):
        recs, dec = decode(pcap(LINKTYPE_RAW, [frags[i] for i in order]))
        assert [(r.sport, r.dport) for r in recs] == [(1, 2)] * 3, order
        assert sorted(r.wirelen for r in recs) == sorted(len(f) for f in frags)
        assert dec.frags.unmatched == 0 and dec.frags.held == 0


def test_ipv4_df_is_not_a_fragment() -> None:
    packet = ipv4(A4, B4, 17, udp(9, 10), df=True)
    recs, _ = one(LINKTYPE_RAW, packet)
    assert [fields(r) for r in recs] == [(17, A4, 9, B4, 10, 0)]


EXT_CHAIN = [
    (IPV6_HOP_BY_HOP, ipv6_hop_by_hop(0, b"\x05\x02\x00\x00")),  # router alert
    (IPV6_DEST_OPTS, ipv6_dest_opts(0, bytes([0x1E, 8]) + b"\xaa" * 8)),  # 16 bytes
    (IPV6_ROUTING, ipv6_routing(0, ["2001:db8::9", "2001:db8::a"], segments_left=1)),
    (IPV6_DEST_OPTS, ipv6_dest_opts(0)),
]


@pytest.mark.parametrize("chain", [EXT_CHAIN[:1], EXT_CHAIN[:3], EXT_CHAIN],
                         ids=["hbh", "hbh-dst-rt", "hbh-dst-rt-dst"])
def test_ipv6_extension_headers(chain: list) -> None:
    tcp6 = ipv6(A6, B6, 6, tcp(1234, 443, flags=SYN | ACK, options=b"\x02\x04\x05\xa0"),
                ext=chain)
    udp6 = ipv6(A6, B6, 17, udp(53, 33333, b"r"), ext=chain)
    icmp6 = ipv6(A6, B6, 58, icmpv6(135, 0, b"\0" * 20), ext=chain)
    recs, dec = decode(pcap(LINKTYPE_ETHERNET, [eth6(tcp6), eth6(udp6), eth6(icmp6)]))
    assert [fields(r) for r in recs] == [(6, A6, 1234, B6, 443, SYN | ACK),
                                         (17, A6, 53, B6, 33333, 0),
                                         (58, A6, 0, B6, 0, 135)]
    assert dec.partial == 0


def test_ipv6_no_next_header_and_ah() -> None:
    none = ipv6(A6, B6, 59, b"", ext=EXT_CHAIN[:1])
    ah = struct.pack("!BBH", 17, 4, 0) + b"\0" * 20  # AH, 24 bytes: (4 + 2) * 4
    with_ah = ipv6(A6, B6, 51, ah + udp(7, 8))
    recs, _ = decode(pcap(LINKTYPE_IPV6, [none, with_ah]))
    assert [fields(r) for r in recs] == [(59, A6, 0, B6, 0, 0), (17, A6, 7, B6, 8, 0)]


def test_ipv6_fragments() -> None:
    l4 = udp(2000, 3000, b"v" * 40)

    def frag(ident: int, off: int, more: bool, data: bytes, chain: tuple = ()) -> bytes:
        return ipv6(A6, B6, 17, data,
                    ext=[*chain, (IPV6_FRAGMENT, ipv6_fragment(0, off, more, ident))])

    hbh = (EXT_CHAIN[0],)
    frames = [
        frag(1, 0, True, l4[:24]),
        frag(1, 3, True, l4[24:40]),
        frag(1, 5, False, l4[40:]),
        frag(2, 3, False, l4[24:]),  # first fragment never seen
        frag(3, 0, True, l4[:16], hbh),  # extension header before the fragment header
        frag(3, 2, False, l4[16:], hbh),
        frag(4, 0, False, l4),  # atomic fragment: a whole datagram
        frag(4, 1, False, l4[8:]),  # ...whose ident must not hand out ports
    ]
    recs, dec = decode(pcap(LINKTYPE_RAW, frames))
    # Fragments without a first fragment are held, then released unmatched at the end.
    assert [(r.proto, r.sport, r.dport) for r in recs] == [
        (17, 2000, 3000), (17, 2000, 3000), (17, 2000, 3000),
        (17, 2000, 3000), (17, 2000, 3000), (17, 2000, 3000), (17, 0, 0), (17, 0, 0)]
    assert dec.frags.unmatched == 2
    assert all(r.src == packed(A6) and r.dst == packed(B6) for r in recs)


# --- transport ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [SYN, SYN | ACK, ACK, FIN | ACK, RST, RST | ACK, PSH | ACK,
                                   0xFF, 0x1FF, 0])
@pytest.mark.parametrize("opt_len", [0, 12, 40])
def test_tcp_flags_and_header_length(flags: int, opt_len: int) -> None:
    """Flags byte as on the wire (NS is not in it), whatever the header length."""
    seg = tcp(33000, 8080, flags=flags, options=b"\x01" * opt_len, payload=b"p" * 5)
    assert seg[12] >> 4 == 5 + opt_len // 4
    recs, dec = decode(pcap(LINKTYPE_RAW, [ipv4(A4, B4, 6, seg), ipv6(A6, B6, 6, seg)]))
    assert [fields(r) for r in recs] == [(6, A4, 33000, B4, 8080, flags & 0xFF),
                                         (6, A6, 33000, B6, 8080, flags & 0xFF)]
    assert dec.partial == 0


def test_udp_and_other_protocols() -> None:
    frames = [ipv4(A4, B4, 17, udp(0, 0)), ipv4(A4, B4, 17, udp(65535, 1, b"x" * 1000)),
              ipv4(A4, B4, 47, b"\0" * 8),  # GRE: no ports
              ipv6(A6, B6, 132, b"\x12\x34\x56\x78" + b"\0" * 8)]  # SCTP: ports not decoded
    recs, _ = decode(pcap(LINKTYPE_RAW, frames))
    assert [fields(r) for r in recs] == [(17, A4, 0, B4, 0, 0), (17, A4, 65535, B4, 1, 0),
                                         (47, A4, 0, B4, 0, 0), (132, A6, 0, B6, 0, 0)]


def test_icmp_and_icmpv6_type_in_flags() -> None:
    frames = [ipv4(A4, B4, 1, icmp(8, 0, b"\x12\x34\0\1")),
              ipv4(B4, A4, 1, icmp(0, 0, b"\x12\x34\0\1")),
              ipv4(C4, A4, 1, icmp(3, 3, b"\0" * 4 + V4_UDP[:28])),
              ipv6(A6, B6, 58, icmpv6(128, 0, b"\0\1\0\1")),
              ipv6(B6, A6, 58, icmpv6(129, 0, b"\0\1\0\1")),
              ipv6(A6, B6, 58, icmpv6(135, 0, b"\0" * 20))]
    recs, _ = decode(pcap(LINKTYPE_RAW, frames))
    assert [fields(r) for r in recs] == [(1, A4, 0, B4, 0, 8), (1, B4, 0, A4, 0, 0),
                                         (1, C4, 0, A4, 0, 3), (58, A6, 0, B6, 0, 128),
                                         (58, B6, 0, A6, 0, 129), (58, A6, 0, B6, 0, 135)]


# --- non-IP and undecodable frames ------------------------------------------------------------

ARP = bytes.fromhex("0001080006040001") + b"\x02\0\0\0\0\x01" + packed(A4) + b"\0" * 6 + packed(B4)


def test_non_ip_frames_are_counted() -> None:
    frames = [
        (LINKTYPE_ETHERNET, ethernet(ARP, ETHERTYPE_ARP)),
        (LINKTYPE_ETHERNET, ethernet(ARP, ETHERTYPE_ARP, vlans=[3])),
        (LINKTYPE_ETHERNET, ethernet(b"\x42\x42\x03" + b"\0" * 40, 43)),  # 802.3 + STP LLC
        (LINKTYPE_ETHERNET, ethernet(b"\0" * 46, 0x88CC)),  # LLDP
        (LINKTYPE_ETHERNET, ethernet(mpls(b"\x10" * 40, [5]), ETHERTYPE_MPLS)),
        (LINKTYPE_LINUX_SLL, sll(ARP, ETHERTYPE_ARP)),
        (LINKTYPE_LINUX_SLL2, sll2(ARP, ETHERTYPE_ARP)),
        (LINKTYPE_NULL, null_loopback(b"\0" * 30, 7)),
        (LINKTYPE_LOOP, loop(b"\0" * 30, 17)),
        (LINKTYPE_NFLOG, bytes([2, 0, 0, 0]) + struct.pack("<HH", 8, 1) + b"\0" * 4),
    ]
    data = pcapng_shb()
    for linktype, _ in frames:
        data += pcapng_idb(linktype)
    data += b"".join(pcapng_epb(i, T0, frame) for i, (_, frame) in enumerate(frames))
    data += pcapng_epb(0, T0, eth4(V4_TCP))
    recs, dec = decode(data)
    assert [fields(r) for r in recs] == [EXP_V4_TCP]
    assert dec.nonip == len(frames) and dec.frames == len(frames) + 1
    assert not dec.skipped


TRUNCATED = [
    # (id, linktype, captured bytes, skip reason or None when emitted as partial)
    ("eth-10", LINKTYPE_ETHERNET, eth4(V4_TCP)[:10], "short-link-header"),
    ("eth-ip-10", LINKTYPE_ETHERNET, eth4(V4_TCP)[:24], "short-ip-header"),
    ("eth-ip6-30", LINKTYPE_ETHERNET, eth6(V6_TCP)[:44], "short-ip-header"),
    ("eth-vlan-cut", LINKTYPE_ETHERNET, eth4(V4_TCP, vlans=[1])[:16], "short-link-header"),
    ("eth-mpls-cut", LINKTYPE_ETHERNET, ethernet(mpls(V4_TCP, [1, 2]), ETHERTYPE_MPLS)[:20],
     "short-mpls"),
    ("eth-mpls-empty", LINKTYPE_ETHERNET, ethernet(mpls(V4_TCP, [1]), ETHERTYPE_MPLS)[:18],
     "short-mpls"),
    ("ipv4-options-cut", LINKTYPE_RAW, ipv4(A4, B4, 6, b"", options=b"\x01" * 8)[:24],
     "bad-ip-header"),
    ("sll-12", LINKTYPE_LINUX_SLL, sll(V4_TCP, ETHERTYPE_IPV4)[:12], "short-link-header"),
    ("sll2-19", LINKTYPE_LINUX_SLL2, sll2(V4_TCP, ETHERTYPE_IPV4)[:19], "short-link-header"),
    ("null-3", LINKTYPE_NULL, null_loopback(V4_TCP, 2)[:3], "short-link-header"),
    ("loop-2", LINKTYPE_LOOP, loop(V4_TCP, 2)[:2], "short-link-header"),
    ("nflog-3", LINKTYPE_NFLOG, nflog(V4_TCP)[:3], "short-link-header"),
    ("raw-empty", LINKTYPE_RAW, b"", "short-ip-header"),
    ("raw-v4-19", LINKTYPE_RAW, V4_TCP[:19], "short-ip-header"),
    ("raw-v6-39", LINKTYPE_IPV6, V6_TCP[:39], "short-ip-header"),
    ("raw-bad-version", LINKTYPE_RAW, b"\x50" + V4_TCP[1:], "bad-ip-version"),
    ("ipv4-ihl-4", LINKTYPE_IPV4, b"\x44" + V4_TCP[1:], "bad-ip-header"),
    ("ethertype-v6-not-v6", LINKTYPE_ETHERNET, eth6(V4_TCP + b"\0" * 20), "bad-ip-header"),
    ("unsupported", 147, V4_TCP, "unsupported-linktype-147"),
]


@pytest.mark.parametrize(("linktype", "frame", "reason"), [c[1:] for c in TRUNCATED],
                         ids=[c[0] for c in TRUNCATED])
def test_undecodable_frames_counted_by_reason(linktype: int, frame: bytes, reason: str) -> None:
    recs, dec = one(linktype, frame, wirelen=1500)
    assert recs == [] and dec.skipped == {reason: 1}
    assert dec.frames == 1 and not dec.nonip
    assert not dec.error and not dec.warning


PARTIAL = [
    # (id, captured frame, expected fields, counted as partial): the IP header is whole,
    # the transport header is cut short by the snap length
    ("tcp-2", V4_TCP[:22], (6, A4, 0, B4, 0, 0), True),
    ("tcp-8", V4_TCP[:28], (6, A4, 40000, B4, 443, 0), True),
    ("tcp-13", V4_TCP[:33], (6, A4, 40000, B4, 443, 0), True),
    ("tcp-14", V4_TCP[:34], EXP_V4_TCP, False),  # flags byte present: enough for netmon
    ("udp-3", V4_UDP[:23], (17, A4, 0, C4, 0, 0), True),
    ("udp6-4", V6_UDP[:44], EXP_V6_UDP, False),  # ports are all a UDP flow needs
    ("ext-cut", ipv6(A6, B6, 6, tcp(1, 2, flags=SYN), ext=EXT_CHAIN)[:44],
     (IPV6_HOP_BY_HOP, A6, 0, B6, 0, 0), True),
    ("frag6-cut", ipv6(A6, B6, 17, udp(1, 2),
                       ext=[(IPV6_FRAGMENT, ipv6_fragment(0, 0, True, 5))])[:44],
     (IPV6_FRAGMENT, A6, 0, B6, 0, 0), True),
]


@pytest.mark.parametrize(("frame", "expected", "partial"), [c[1:] for c in PARTIAL],
                         ids=[c[0] for c in PARTIAL])
def test_truncated_transport_still_emits_record(frame: bytes, expected: tuple,
                                                partial: bool) -> None:
    recs, dec = one(LINKTYPE_RAW, frame, wirelen=1500)
    assert [fields(r) for r in recs] == [expected]
    assert recs[0].wirelen == 1500
    assert dec.partial == int(partial) and not dec.skipped


def test_icmp_without_type_byte() -> None:
    recs, dec = one(LINKTYPE_RAW, ipv4(A4, B4, 1, b""), wirelen=100)
    assert [fields(r) for r in recs] == [(1, A4, 0, B4, 0, 0)]
    assert not dec.skipped


# --- truncated streams, garbage, empty input ----------------------------------------------------


@pytest.mark.parametrize("cut", [1, 7, 15, 16, 17, 40])
def test_truncated_last_pcap_record_sets_warning(cut: int) -> None:
    frames = [eth4(V4_TCP), eth4(V4_UDP), eth6(V6_TCP)]
    whole = pcap(LINKTYPE_ETHERNET, frames)
    last = 16 + len(frames[-1])
    data = whole[:len(whole) - last + cut]
    recs, dec = decode(data)
    assert [fields(r) for r in recs] == [EXP_V4_TCP, EXP_V4_UDP]
    assert "cut short" in dec.warning and f"{cut} trailing bytes" in dec.warning
    assert not dec.error and dec.frames == 2


@pytest.mark.parametrize("cut", [4, 12, 30])
def test_truncated_last_pcapng_block_sets_warning(cut: int) -> None:
    good = pcapng_shb() + pcapng_idb(LINKTYPE_RAW) + pcapng_epb(0, T0, V4_TCP)
    recs, dec = decode(good + pcapng_epb(0, T0 + 1, V4_UDP)[:cut])
    assert [fields(r) for r in recs] == [EXP_V4_TCP]
    assert "cut short" in dec.warning and not dec.error


def test_truncated_pcap_header() -> None:
    recs, dec = decode(pcap_header(LINKTYPE_ETHERNET)[:20])
    assert recs == [] and dec.error and not dec.fmt


@pytest.mark.parametrize("data", [
    b"hello, world: this is certainly not a packet capture file\n" * 3,
    b"\x00" * 100,
    b"GIF89a" + bytes(range(200)),
    bytes(range(256)) * 4,
], ids=["text", "zeros", "gif", "bytes"])
def test_garbage_sets_error(data: bytes) -> None:
    recs, dec = decode(data)
    assert recs == [] and "not a pcap" in dec.error and dec.frames == 0
    assert dec.feed(pcap(LINKTYPE_RAW, [V4_TCP])) == []  # an errored decoder stays stopped


def test_corrupt_pcapng_sets_error() -> None:
    bad_bom = bytearray(pcapng_shb())
    bad_bom[8:12] = b"\x01\x02\x03\x04"
    recs, dec = decode(bytes(bad_bom) + pcapng_idb(LINKTYPE_RAW) + pcapng_epb(0, T0, V4_TCP))
    assert recs == [] and "byte-order" in dec.error
    bad_len = bytearray(pcapng_epb(0, T0 + 1, V4_UDP))
    struct.pack_into("<I", bad_len, 4, 13)  # not a multiple of 4
    good = pcapng_shb() + pcapng_idb(LINKTYPE_RAW) + pcapng_epb(0, T0, V4_TCP)
    recs, dec = decode(good + bytes(bad_len) + pcapng_epb(0, T0 + 2, V4_TCP))
    assert [fields(r) for r in recs] == [EXP_V4_TCP] and "block length" in dec.error
    assert not dec.warning


SHORT_BLOCKS = [("idb-0", 1, 0), ("idb-4", 1, 4), ("pb-0", 2, 0), ("pb-16", 2, 16),
                ("spb-0", 3, 0), ("epb-0", 6, 0), ("epb-16", 6, 16)]


@pytest.mark.parametrize(("btype", "body"), [c[1:] for c in SHORT_BLOCKS],
                         ids=[c[0] for c in SHORT_BLOCKS])
@pytest.mark.parametrize("at_end", [True, False], ids=["last", "middle"])
def test_pcapng_blocks_too_short_for_their_fields(btype: int, body: int,
                                                  at_end: bool) -> None:
    """A block shorter than its fixed fields is corrupt: an error, never an exception,
    never fields read from past its end (chunked input ends right there)."""
    tiny = ng_block(btype, b"\xff" * body)
    good = pcapng_shb() + pcapng_idb(LINKTYPE_RAW) + pcapng_epb(0, T0, V4_TCP)
    tail = b"" if at_end else pcapng_epb(0, T0 + 1, V4_UDP)
    recs, dec = decode(good + tiny + tail)
    assert [fields(r) for r in recs] == [EXP_V4_TCP]
    assert "too short" in dec.error and dec.frames == 1


def test_pcapng_idb_truncated_tsoffset_option_never_raises() -> None:
    body = struct.pack("<HHI", LINKTYPE_RAW, 0, 0) + struct.pack("<HH", 14, 8)
    data = pcapng_shb() + ng_block(1, body)
    for tail in (b"", pcapng_epb(0, T0, V4_TCP)):
        decode(data + tail)


def test_empty_input() -> None:
    recs, dec = decode(b"")
    assert recs == [] and "empty" in dec.error and dec.frames == 0


def test_corrupt_pcap_record_header_resynchronises() -> None:
    frames = [eth4(V4_TCP), eth4(V4_UDP), eth6(V6_TCP), eth6(V6_UDP), eth4(V4_TCP)]
    data = bytearray(pcap(LINKTYPE_ETHERNET, frames))
    second = 24 + 16 + len(frames[0])
    struct.pack_into("<I", data, second + 8, 0x7FFFFFF0)  # absurd caplen
    recs, dec = feed_whole(bytes(data))
    assert [fields(PacketRecord(*r)) for r in recs] == [EXP_V4_TCP, EXP_V6_TCP, EXP_V6_UDP,
                                                       EXP_V4_TCP]
    assert dec.skipped["corrupt-record-header"] == 1 and "resynchronised" in dec.warning
    # The same corrupt stream fed in small pieces recovers the same packets.
    for seed in (1, 2, 3):
        out_c, dec_c = feed_chunked(bytes(data), seed)
        assert out_c == recs and state(dec_c) == state(dec)


# --- properties -------------------------------------------------------------------------------

PROPS = settings(max_examples=200, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


def _prefixes() -> list[bytes]:
    out = []
    for linktype in (LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_NULL,
                     LINKTYPE_NFLOG, LINKTYPE_LINUX_SLL2):
        for be in (False, True):
            out.append(pcap_header(linktype, big_endian=be, nanosecond=be))
            out.append(pcapng_shb(be) + pcapng_idb(linktype, big_endian=be)
                       + pcapng_idb(LINKTYPE_ETHERNET, tsresol_exp=9, big_endian=be))
    return out


PREFIXES = _prefixes()


def _valid_captures() -> list[bytes]:
    frames = [eth4(V4_TCP), eth6(V6_UDP, vlans=[3, 4]), eth4(V4_UDP), ethernet(ARP, 0x0806),
              ethernet(mpls(V6_TCP, [1, 2]), ETHERTYPE_MPLS)]
    frames += [eth4(f) for f in _v4_fragments(9, 17, udp(1, 2, b"q" * 40))]
    mixed = pcapng_shb()
    for linktype, _, _ in (c[1:] for c in LINK_CASES[::3]):
        mixed += pcapng_idb(linktype, tsresol_exp=6)
    mixed += b"".join(pcapng_epb(i, T0 + i, c[2]) for i, c in enumerate(LINK_CASES[::3]))
    mixed += pcapng_spb(eth4(V4_TCP))
    mixed += pcapng_shb(big_endian=True) + pcapng_idb(LINKTYPE_RAW, big_endian=True)
    mixed += pcapng_epb(0, T0, V6_UDP, big_endian=True)
    return [pcap(LINKTYPE_ETHERNET, frames),
            pcap(LINKTYPE_ETHERNET, frames, big_endian=True, nanosecond=True),
            pcap(LINKTYPE_RAW, [V4_TCP, V6_UDP, V6_TCP, V4_UDP] * 2),
            mixed]


def _length_fields(data: bytes) -> list[tuple[int, str]]:
    """(offset, byte order) of the 32-bit length and index fields of a valid capture:
    what structure-aware mutations aim at (random flips rarely hit them just so)."""
    if data[:4] != b"\x0a\x0d\x0d\x0a":
        e = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        out, off = [(16, e)], 24
        while off < len(data):
            caplen = struct.unpack_from(e + "I", data, off + 8)[0]
            out += [(off + 8, e), (off + 12, e)]
            off += 16 + caplen
        return out
    out, off, e = [], 0, "<"
    while off < len(data):
        if data[off:off + 4] == b"\x0a\x0d\x0d\x0a":
            e = "<" if data[off + 8] == 0x4D else ">"
        btype, blen = struct.unpack_from(e + "II", data, off)
        out.append((off + 4, e))
        if btype == 6:
            out += [(off + 8, e), (off + 20, e), (off + 24, e)]
        elif btype == 3:
            out.append((off + 8, e))
        elif btype == 1 and blen > 20:
            out.append((off + 16, e))  # first option's code and length
        off += blen
    return out


VALID = _valid_captures()
VALID_FIELDS = [_length_fields(v) for v in VALID]
#: Values written into length fields: zero, tiny, unaligned, just short, huge.
LENGTHS = (0, 1, 4, 8, 12, 13, 16, 20, 24, 28, 31, 32, 36, 0xFFFF, 0x40000, 0x7FFFFFFF,
           0xFFFFFFFF)


def _check_sane(data: bytes, out: list[tuple], dec: PcapStreamDecoder) -> None:
    check_accounting(out, dec)
    # A record needs at least a 16-byte record header (pcap) or a 16-byte packet block
    # (pcapng SPB) plus a 20-byte IP header: there cannot be more records than that.
    assert len(out) <= len(data) // 36
    assert dec.frames <= len(data) // 12
    for ts, wirelen, proto, src, sport, dst, dport, flags in out:
        assert isinstance(ts, float) and math.isfinite(ts)
        assert 0 <= wirelen < 2**32 and 0 <= proto < 256 and 0 <= flags < 256
        assert len(src) == len(dst) and len(src) in (4, 16)
        assert 0 <= sport < 65536 and 0 <= dport < 65536


def _decode_both(data: bytes, seed: int) -> None:
    """Decode whole and chunked, with feed and feed_batch: never raises, sane counts,
    and neither chunking nor the entry point changes anything, even in corrupt input
    (a live pipe decides where chunks end)."""
    out, dec = feed_whole(data)
    _check_sane(data, out, dec)
    assert dec.error or dec.fmt
    for out_c, dec_c in (feed_chunked(data, seed), feed_batches(data, None),
                         feed_batches(data, seed)):
        assert out_c == out and state(dec_c) == state(dec)


@PROPS
@given(data=st.binary(max_size=3000), seed=st.integers(0, 2**16))
def test_random_bytes_never_raise(data: bytes, seed: int) -> None:
    _decode_both(data, seed)


@PROPS
@given(prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=3000),
       seed=st.integers(0, 2**16))
def test_random_bytes_after_valid_header_never_raise(prefix: bytes, body: bytes,
                                                     seed: int) -> None:
    _decode_both(prefix + body, seed)


_MUTATION = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "length", "length", "cut"]),
    st.integers(0, 2**20), st.integers(0, 255))


def _mutate(which: int, mutations: list[tuple[str, int, int]]) -> bytes:
    """Apply (kind, position, value) mutations to ``VALID[which]``. "length"
    writes one of LENGTHS into one of its length fields (applied first, while offsets
    still hold); "cut" truncates the capture."""
    data = bytearray(VALID[which])
    fields_ = VALID_FIELDS[which]
    for kind, where, value in mutations:
        if kind == "length":
            off, e = fields_[where % len(fields_)]
            struct.pack_into(e + "I", data, off, LENGTHS[value % len(LENGTHS)])
    for kind, where, value in mutations:
        pos = where % (len(data) or 1)
        if kind == "insert":
            data[pos:pos] = bytes([value]) * (1 + value % 5)
        elif not data or kind == "length":
            continue
        elif kind == "flip":
            data[pos] ^= 1 << (value & 7)
        elif kind == "set":
            data[pos] = value
        elif kind == "delete":
            del data[pos:pos + 1 + value % 5]
        else:
            del data[max(pos, 1):]
    return bytes(data)


@PROPS
@given(which=st.integers(0, len(VALID) - 1),
       mutations=st.lists(_MUTATION, min_size=1, max_size=6), seed=st.integers(0, 2**16))
def test_mutated_captures_never_raise(which: int, mutations: list, seed: int) -> None:
    _decode_both(_mutate(which, mutations), seed)


@pytest.mark.parametrize("which", range(len(VALID)))
def test_every_length_field_corruption(which: int) -> None:
    """Exhaustive: each length field of each base capture set to each of LENGTHS."""
    for off, e in VALID_FIELDS[which]:
        for value in LENGTHS:
            data = bytearray(VALID[which])
            struct.pack_into(e + "I", data, off, value)
            _decode_both(bytes(data), off + value)


@pytest.mark.parametrize("base", range(len(VALID)))
def test_valid_property_inputs_decode_cleanly(base: int) -> None:
    """The captures the mutation test starts from are themselves clean."""
    recs, dec = decode(VALID[base])
    assert recs and not dec.error and not dec.warning and not dec.skipped


# --- issue 19: hostile input against tshark ---------------------------------------------------


def test_records_longer_than_snaplen_are_read_like_tshark(tmp_path) -> None:
    """scapy's wrpcap writes snaplen 65535 whatever the packet size: a 66,042-byte
    record is a record (tshark reads it), not a corrupt header."""
    big = eth4(ipv4(A4, B4, 17, udp(7000, 7001, b"j" * 60000)))
    big += b"\0" * (66042 - len(big))  # trailer past the IP datagram
    frames = [eth4(V4_TCP), big, eth4(V4_UDP)]
    path = write_pcap(tmp_path / "snap.pcap", LINKTYPE_ETHERNET, frames, snaplen=65535)
    table, dec = compare(path)
    assert dec.frames == 3 and not dec.skipped and not dec.warning and table.packets == 3
    # Only a length no reader accepts (above MAX_RECORD) is corrupt.
    data = bytearray(path.read_bytes())
    struct.pack_into("<II", data, 24 + 16 + len(frames[0]) + 8, MAX_RECORD + 1, MAX_RECORD + 1)
    _, dec = feed_whole(bytes(data))
    assert dec.skipped["corrupt-record-header"] == 1


@pytest.mark.parametrize("count", [16, 17, 40, MAX_IPV6_EXT])
def test_long_ipv6_extension_chains_like_tshark(tmp_path, count: int) -> None:
    """17+ extension headers made a protocol-0, port-0 flow that hid the UDP flow."""
    chain = [(IPV6_DEST_OPTS, ipv6_dest_opts(0))] * count
    frames = [eth6(ipv6(A6, B6, 17, udp(5000 + i, 53, b"q"), ext=chain)) for i in range(2)]
    table, _ = compare(write_pcap(tmp_path / "ext.pcap", LINKTYPE_ETHERNET, frames))
    assert sorted((f.proto, f.port_a) for f in table.live_views()) == [(17, 5000), (17, 5001)]


def test_too_long_ipv6_extension_chain_is_skipped_with_a_reason() -> None:
    chain = [(IPV6_DEST_OPTS, ipv6_dest_opts(0))] * (MAX_IPV6_EXT + 1)
    frames = [ipv6(A6, B6, 17, udp(1, 2), ext=chain), V6_UDP]
    recs, dec = decode(pcap(LINKTYPE_RAW, frames))
    assert [fields(r) for r in recs] == [EXP_V6_UDP]
    assert dec.skipped == {"ipv6-ext-chain-too-long": 1} and dec.ip_frames == 1


def test_any_number_of_vlan_tags_like_tshark(tmp_path) -> None:
    """20 stacked tags were skipped as short-link-header; tshark decodes them."""
    frames = [eth4(V4_TCP, vlans=list(range(1, 21))), eth6(V6_UDP, vlans=list(range(1, 41))),
              eth4(V4_UDP, vlans=[5])]
    table, dec = compare(write_pcap(tmp_path / "vlan.pcap", LINKTYPE_ETHERNET, frames))
    assert table.packets == 3 and not dec.skipped
    recs, _ = decode(pcap(LINKTYPE_ETHERNET, frames))
    assert [fields(r) for r in recs] == [EXP_V4_TCP, EXP_V6_UDP, EXP_V4_UDP]
