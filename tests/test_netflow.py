"""The NetFlow v5/v9 and IPFIX decoder: datagrams built by netmon.testing.nfexport (or by hand,
with struct, for what the builder does not make) decode to exactly the flows sent;
templates, buffering, withdrawal and sequence numbers behave as RFC 3954 / 7011 say;
malformed datagrams are counted by reason and dropped whole, and no input raises."""

from __future__ import annotations

import ipaddress
import random
import struct

import numpy as np
import pytest

from netmon.netflow.decoder import NetflowDecoder
from netmon.netflow.templates import FlowRecords
from netmon.testing.nfexport import (
    IPFIX_FIELDS,
    Flow,
    flowset,
    ipfix_datagrams,
    ipfix_message,
    ipfix_withdrawal,
    template_record,
    v5_datagrams,
    v9_datagrams,
    v9_packet,
)

NOW = 1_700_000_000.0
EXP = "192.0.2.1"
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01

V4_FLOWS = [
    Flow("10.0.0.1", "10.0.0.2", 40000, 443, 6, 12, 3456, NOW - 5.123, NOW - 1.5,
         SYN | ACK | PSH | FIN),
    Flow("10.0.0.2", "10.0.0.1", 443, 40000, 6, 10, 98765, NOW - 5.1, NOW - 1.499, ACK | PSH),
    Flow("192.168.1.10", "8.8.8.8", 5353, 53, 17, 1, 80, NOW - 0.25, NOW - 0.25),
    Flow("172.16.0.1", "172.16.0.9", 0, 0, 1, 3, 252, NOW - 3.0, NOW - 1.0),
]
V6_FLOWS = [
    Flow("2001:db8::1", "2001:db8::2", 50000, 80, 6, 7, 1234, NOW - 2.002, NOW - 0.001, SYN),
    Flow("fe80::1", "ff02::fb", 0, 0, 58, 2, 160, NOW - 9.0, NOW - 8.5),
]


def addr16(text: str) -> list[int]:
    return list(ipaddress.ip_address(text).packed.rjust(16, b"\0"))


def check(rec: FlowRecords, flows: list[Flow], rev: tuple[int, int] = (0, 0)) -> None:
    """``rec`` holds exactly ``flows`` (in any order), times to the millisecond; every
    record has ``rev`` reverse (packets, octets)."""
    assert len(rec) == len(flows)
    order = sorted(range(len(flows)), key=lambda i: (flows[i].start, flows[i].src))
    got = np.lexsort((rec.src[:, 15], rec.src[:, 14], rec.start))
    for i, j in zip(order, got, strict=True):
        f = flows[i]
        ports = f.proto in (6, 17)
        assert rec.start[j] == pytest.approx(f.start, abs=1e-6)
        assert rec.end[j] == pytest.approx(f.end, abs=1e-6)
        assert (rec.proto[j], rec.fam[j]) == (f.proto, ipaddress.ip_address(f.src).version)
        assert rec.src[j].tolist() == addr16(f.src)
        assert rec.dst[j].tolist() == addr16(f.dst)
        assert (rec.sport[j], rec.dport[j]) == ((f.sport, f.dport) if ports else (0, 0))
        assert (rec.packets[j], rec.octets[j]) == (f.packets, f.octets)
        assert (rec.rpackets[j], rec.roctets[j]) == rev
        assert rec.tcp_flags[j] == (f.tcp_flags if f.proto == 6 else 0)


def decode(dec: NetflowDecoder, datagrams: list[bytes], now: float = NOW,
           exporter: str = EXP) -> FlowRecords:
    return FlowRecords.concat([r for d in datagrams for _, r in dec.decode(d, exporter, now)])


def ipfix_records(tid: int, fields: list, rows: list[bytes], *, domain: int = 0,
                  seq: int = 0, template: bool = True) -> bytes:
    """One IPFIX message: optionally the template, then one data set of ``rows``."""
    sets = [flowset(2, template_record(tid, fields))] if template else []
    return ipfix_message([*sets, flowset(tid, b"".join(rows))], domain=domain, seq=seq, now=NOW)


def ms(t: float) -> int:
    return round(t * 1000)


V4_ROW = struct.Struct("!4s4sHHBBQQQQ")  # the layout of IPFIX_FIELDS[4]


def v4_row(f: Flow) -> bytes:
    return V4_ROW.pack(ipaddress.ip_address(f.src).packed, ipaddress.ip_address(f.dst).packed,
                       f.sport, f.dport, f.proto, f.tcp_flags, f.packets, f.octets,
                       ms(f.start), ms(f.end))


# ------------------------------------------------------------------ round trips
def test_v5_round_trip() -> None:
    flows = [Flow(f"10.1.{i // 250}.{i % 250 + 1}", "10.9.9.9", 1024 + i, 80, 6, i + 1,
                  40 * (i + 1), NOW - 60 + i * 0.001, NOW - 1 + i * 0.001, SYN) for i in range(70)]
    flows += V4_FLOWS
    dec = NetflowDecoder()
    grams = v5_datagrams(flows, now=NOW + 0.25, engine_id=3, seq_start=100)
    assert len(grams) == 3
    out = [dec.decode(g, EXP, NOW) for g in grams]
    assert {dom for o in out for dom, _ in o} == {3}
    check(FlowRecords.concat([r for o in out for _, r in o]), flows)
    assert (dec.datagrams, dec.records, dec.by_version, dec.lost) == (3, 74, {5: 3}, 0)


def test_v5_uptime_wrap() -> None:
    """First/last switched from before the uptime counter wrapped still decode."""
    f = Flow("10.0.0.1", "10.0.0.2", 1, 2, 17, 1, 100, NOW - 10, NOW - 1)
    rec = decode(NetflowDecoder(), v5_datagrams([f], now=NOW, uptime_ms=3000))
    check(rec, [f])


def test_v5_rejects_ipv6() -> None:
    with pytest.raises(ValueError):
        v5_datagrams(V6_FLOWS)


@pytest.mark.parametrize("build", [v9_datagrams, ipfix_datagrams])
@pytest.mark.parametrize("flows", [V4_FLOWS, V6_FLOWS, V4_FLOWS + V6_FLOWS],
                         ids=["v4", "v6", "mixed"])
def test_v9_ipfix_round_trip(build, flows) -> None:
    dec = NetflowDecoder()
    grams = build(flows * 10, now=NOW, per_datagram=7, source_id=9) if build is v9_datagrams \
        else build(flows * 10, now=NOW, per_datagram=7, domain=9)
    parts = [dec.decode(g, EXP, NOW) for g in grams]
    assert all(dom == 9 for p in parts for dom, _ in p)
    check(FlowRecords.concat([r for p in parts for _, r in p]), flows * 10)
    assert dec.malformed == dec.lost == dec.unknown_buffered == 0
    assert dec.templates == len({f.fam for f in flows})


def test_v9_flowset_padding_tolerated() -> None:
    """nfexport pads v9 data flowsets to 4 bytes (34-byte records leave 2 or 0)."""
    grams = v9_datagrams(V4_FLOWS[:3], now=NOW)
    dec = NetflowDecoder()
    check(decode(dec, grams), V4_FLOWS[:3])
    assert dec.malformed == 0


def test_ipfix_set_padding_tolerated() -> None:
    rows = [v4_row(f) for f in V4_FLOWS] + [bytes(7)]  # 7 < 46: padding, not a record
    dec = NetflowDecoder()
    check(decode(dec, [ipfix_records(300, IPFIX_FIELDS[4], rows)]), V4_FLOWS)
    assert dec.malformed == 0


# ------------------------------------------------------------------ templates
def test_template_after_data_is_buffered_then_released() -> None:
    dec = NetflowDecoder()
    data_only = ipfix_datagrams(V4_FLOWS, now=NOW, with_template=False)
    assert dec.decode(data_only[0], EXP, NOW) == []
    assert dec.unknown_buffered == 1
    with_template = ipfix_datagrams(V6_FLOWS[:1] + V4_FLOWS[:1], now=NOW, seq_start=4)
    check(decode(dec, with_template, NOW + 1), V4_FLOWS + V6_FLOWS[:1] + V4_FLOWS[:1])
    assert (dec.unknown_buffered, dec.unknown_dropped, dec.lost) == (0, 0, 0)


def test_template_later_in_same_datagram() -> None:
    """A data set before its template in one message is decoded with it."""
    data = flowset(256, b"".join(v4_row(f) for f in V4_FLOWS))
    msg = ipfix_message([data, flowset(2, template_record(256, IPFIX_FIELDS[4]))], now=NOW)
    dec = NetflowDecoder()
    check(decode(dec, [msg]), V4_FLOWS)
    assert dec.unknown_buffered == 0


def test_unknown_template_dropped_after_hold() -> None:
    dec = NetflowDecoder(unknown_hold=10.0)
    for g in v9_datagrams(V4_FLOWS, now=NOW, with_template=False, per_datagram=2):
        dec.decode(g, EXP, NOW)
    assert dec.unknown_buffered == 2
    dec.expire(NOW + 9.9)
    assert (dec.unknown_buffered, dec.unknown_dropped) == (2, 0)
    dec.expire(NOW + 10.1)
    assert (dec.unknown_buffered, dec.unknown_dropped) == (0, 2)
    assert decode(dec, v9_datagrams(V4_FLOWS[:1], now=NOW), NOW + 11).src.shape == (1, 16)


def test_unknown_buffer_is_bounded() -> None:
    dec = NetflowDecoder(unknown_max=3)
    for i in range(5):
        dec.decode(ipfix_records(400 + i, [], [bytes(8)], template=False), EXP, NOW)
    assert (dec.unknown_buffered, dec.unknown_dropped) == (3, 2)
    # the two oldest (templates 400, 401) are gone; 404 is still held
    fields = [(8, 4), (12, 4)]
    assert len(decode(dec, [ipfix_records(400, fields, [])])) == 0
    assert len(decode(dec, [ipfix_records(404, fields, [])])) == 1


def test_template_refresh_with_other_layout() -> None:
    dec = NetflowDecoder()
    f = V4_FLOWS[0]
    check(decode(dec, [ipfix_records(256, IPFIX_FIELDS[4], [v4_row(f)])]), [f])
    # same template ID, new layout: destination first, 4-byte counters, seconds
    fields = [(12, 4), (8, 4), (4, 1), (2, 4), (1, 4), (150, 4), (151, 4)]
    row = struct.pack("!4s4sBIIII", bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]), 17, 5, 500,
                      int(NOW) - 3, int(NOW))
    rec = decode(dec, [ipfix_records(256, fields, [row], seq=1)])
    assert rec.src[0].tolist() == addr16("10.0.0.1") and rec.dst[0].tolist() == addr16("10.0.0.2")
    assert (rec.proto[0], rec.packets[0], rec.octets[0]) == (17, 5, 500)
    assert (rec.start[0], rec.end[0]) == (int(NOW) - 3, int(NOW))
    assert dec.templates == 1
    # and the old layout's data would no longer fit: it is read with the new one
    rec = decode(dec, [ipfix_records(256, fields, [row] * 3, template=False, seq=2)])
    assert len(rec) == 3


def test_ipfix_withdrawal_makes_data_unknown() -> None:
    dec = NetflowDecoder()
    decode(dec, ipfix_datagrams(V4_FLOWS + V6_FLOWS, now=NOW))
    assert dec.templates == 2
    decode(dec, [ipfix_withdrawal(256, now=NOW, seq=len(V4_FLOWS + V6_FLOWS))])
    assert (dec.templates, dec.template_withdrawn) == (1, 1)
    assert len(decode(dec, ipfix_datagrams(V4_FLOWS, now=NOW, with_template=False))) == 0
    assert dec.unknown_buffered == 1
    assert len(decode(dec, ipfix_datagrams(V6_FLOWS, now=NOW, with_template=False))) == 2
    decode(dec, [ipfix_withdrawal(2, now=NOW)])  # all templates of the domain
    assert (dec.templates, dec.template_withdrawn) == (0, 2)
    assert len(decode(dec, ipfix_datagrams(V6_FLOWS, now=NOW, with_template=False))) == 0
    assert dec.unknown_buffered == 2


def test_withdraw_all_is_per_domain_and_exporter() -> None:
    dec = NetflowDecoder()
    decode(dec, ipfix_datagrams(V4_FLOWS, now=NOW, domain=1))
    decode(dec, ipfix_datagrams(V4_FLOWS, now=NOW, domain=2))
    decode(dec, ipfix_datagrams(V4_FLOWS, now=NOW, domain=1), exporter="198.51.100.7")
    decode(dec, [ipfix_withdrawal(2, domain=1, now=NOW)])
    assert dec.templates == 2


def test_options_data_skipped_not_unknown() -> None:
    # IPFIX options template (set 3): scope observationDomainId, then two counters
    opt = struct.pack("!HHH", 300, 3, 1) + struct.pack("!HHHHHH", 149, 4, 40, 8, 41, 8)
    msg = ipfix_message([flowset(3, opt), flowset(300, bytes(20) * 4),
                         flowset(256, v4_row(V4_FLOWS[0])),
                         flowset(2, template_record(256, IPFIX_FIELDS[4]))], now=NOW)
    dec = NetflowDecoder()
    check(decode(dec, [msg]), V4_FLOWS[:1])
    # v9 options template (flowset 1): scope length 4, option length 8 (bytes)
    v9opt = struct.pack("!HHH", 300, 4, 8) + struct.pack("!HHHHHH", 1, 4, 34, 4, 36, 2)
    pkt = v9_packet([flowset(1, v9opt, align=4), flowset(300, bytes(10) * 3, align=4)],
                    count=4, now=NOW)
    assert len(decode(dec, [pkt])) == 0
    assert (dec.unknown_buffered, dec.unknown_dropped, dec.malformed) == (0, 0, 0)
    assert dec.templates == 3
    assert dec.records == 1


def test_records_without_addresses_are_skipped() -> None:
    dec = NetflowDecoder()
    msg = ipfix_records(256, [(2, 8), (1, 8)], [struct.pack("!QQ", 1, 2)] * 3)
    assert dec.decode(msg, EXP, NOW) == []
    assert (dec.skipped_records, dec.records, dec.malformed) == (3, 0, 0)


# ------------------------------------------------------------------ IPFIX encodings
def varlen(value: bytes, long: bool = False) -> bytes:
    if long or len(value) >= 255:
        return b"\xff" + struct.pack("!H", len(value)) + value
    return bytes([len(value)]) + value


VAR_FIELDS = [(8, 4), (12, 4), (82, 65535), (4, 1), (7, 2), (11, 2), (6, 1), (1, 65535),
              (2, 4), (152, 8), (153, 8)]  # interfaceName (string) and a variable octet count


def var_row(f: Flow, name: bytes, long: bool = False) -> bytes:
    return (ipaddress.ip_address(f.src).packed + ipaddress.ip_address(f.dst).packed
            + varlen(name, long) + struct.pack("!BHHB", f.proto, f.sport, f.dport, f.tcp_flags)
            + varlen(f.octets.to_bytes(3, "big")) + struct.pack("!IQQ", f.packets, ms(f.start),
                                                                ms(f.end)))


def test_variable_length_fields() -> None:
    flows = [*V4_FLOWS[:3], V4_FLOWS[0]]
    rows = [var_row(flows[0], b"eth0"), var_row(flows[1], b""),
            var_row(flows[2], b"x" * 300), var_row(flows[3], b"long form", long=True)]
    dec = NetflowDecoder()
    check(decode(dec, [ipfix_records(256, VAR_FIELDS, [*rows, b"\0\0"])]), flows)
    assert dec.malformed == 0


def test_variable_length_overrun_is_malformed() -> None:
    row = var_row(V4_FLOWS[0], b"eth0")
    bad = row[:8] + b"\x30" + row[9:]  # claims 48 bytes of name: runs past the set
    dec = NetflowDecoder()
    assert dec.decode(ipfix_records(256, VAR_FIELDS, [row, bad]), EXP, NOW) == []
    assert dec.malformed_reasons == {"varlen overrun": 1}
    assert dec.templates == 0  # the whole datagram is dropped, its template too


def test_biflow_reverse_information_elements() -> None:
    pen = 29305
    fields = [*IPFIX_FIELDS[4], (1, 8, pen), (2, 4, pen), (6, 1, pen)]
    f = V4_FLOWS[0]
    rec = decode(NetflowDecoder(),
                 [ipfix_records(256, fields, [v4_row(f) + struct.pack("!QIB", 4321, 9, 0x12)])])
    check(rec, [f], rev=(9, 4321))


def test_total_counts_when_no_delta() -> None:
    fields = [(8, 4), (12, 4), (86, 8), (85, 8), (86, 8, 29305), (85, 8, 29305)]
    row = bytes(8) + struct.pack("!QQQQ", 3, 300, 4, 400)
    rec = decode(NetflowDecoder(), [ipfix_records(256, fields, [row])])
    assert (rec.packets[0], rec.octets[0], rec.rpackets[0], rec.roctets[0]) == (3, 300, 4, 400)


@pytest.mark.parametrize(("pk_len", "oct_len"), [(1, 2), (3, 5), (4, 4), (2, 6), (3, 7)])
def test_reduced_size_encoding(pk_len: int, oct_len: int) -> None:
    """Counters in fewer than 8 bytes, odd widths included (RFC 7011 6.2); 2-byte flags."""
    packets, octets = 2 ** (8 * pk_len) - 2, 2 ** (8 * oct_len - 1) + 5
    f = Flow("10.0.0.1", "10.0.0.2", 40000, 443, 6, packets, octets, NOW - 2, NOW, 0x1D)
    fields = [(8, 4), (12, 4), (4, 1), (7, 2), (11, 2), (6, 2), (1, oct_len), (2, pk_len),
              (152, 8), (153, 8)]
    row = (ipaddress.ip_address(f.src).packed + ipaddress.ip_address(f.dst).packed
           + struct.pack("!BHHH", 6, f.sport, f.dport, f.tcp_flags)
           + octets.to_bytes(oct_len, "big") + packets.to_bytes(pk_len, "big")
           + struct.pack("!QQ", ms(f.start), ms(f.end)))
    check(decode(NetflowDecoder(), [ipfix_records(256, fields, [row] * 5)]), [f] * 5)


@pytest.mark.parametrize("kind", ["s", "us", "ns", "delta", "uptime+init", "uptime"])
def test_ipfix_time_fields(kind: str) -> None:
    start, end = NOW - 7.25, NOW - 0.5
    ntp = 2_208_988_800

    def ntp64(t: float) -> bytes:
        return struct.pack("!II", int(t) + ntp, round((t % 1) * 2**32))

    layouts = {
        "s": ([(150, 4), (151, 4)], struct.pack("!II", int(start), int(end)), int(start),
              int(end)),
        "us": ([(154, 8), (155, 8)], ntp64(start) + ntp64(end), start, end),
        "ns": ([(156, 8), (157, 8)], ntp64(start) + ntp64(end), start, end),
        "delta": ([(158, 4), (159, 4)], struct.pack("!II", 7_250_000, 500_000), start, end),
        "uptime+init": ([(160, 8), (22, 4), (21, 4)],
                        struct.pack("!QII", ms(NOW - 3600), 3_592_750, 3_599_500), start, end),
        "uptime": ([(22, 4), (21, 4)], struct.pack("!II", 1000, 7750), NOW - 6.75, NOW),
    }
    fields, tail, want_start, want_end = layouts[kind]
    row = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + tail
    rec = decode(NetflowDecoder(), [ipfix_records(256, [(8, 4), (12, 4), *fields], [row])])
    assert rec.start[0] == pytest.approx(want_start, abs=1e-6)
    assert rec.end[0] == pytest.approx(want_end, abs=1e-6)


def test_missing_times_use_export_time() -> None:
    rec = decode(NetflowDecoder(), [ipfix_records(256, [(8, 4), (12, 4)], [bytes(8)])])
    assert (rec.start[0], rec.end[0]) == (NOW, NOW)
    assert rec.fam[0] == 4


def test_template_with_v4_and_v6_fields() -> None:
    fields = [(8, 4), (12, 4), (27, 16), (28, 16)]
    v4 = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + bytes(32)
    v6 = bytes(8) + bytes(addr16("2001:db8::1")) + bytes(addr16("2001:db8::2"))
    rec = decode(NetflowDecoder(), [ipfix_records(256, fields, [v4, v6])])
    assert rec.fam.tolist() == [4, 6]
    assert rec.src[1].tolist() == addr16("2001:db8::1")
    assert rec.dst[0].tolist() == addr16("10.0.0.2")


# ------------------------------------------------------------------ sequence numbers
def test_sequence_gaps_are_lost() -> None:
    flows = V4_FLOWS * 30  # 120 flows
    dec = NetflowDecoder()
    v5 = v5_datagrams(flows, now=NOW)  # 4 datagrams of 30
    decode(dec, [v5[0], v5[2], v5[3]])
    assert dec.lost == 30
    v9 = v9_datagrams(flows, now=NOW, per_datagram=10)  # 12 packets, seq 0..11
    decode(dec, v9[:3] + v9[5:])
    assert dec.lost == 32  # v9 counts export packets
    ipfix = ipfix_datagrams(flows, now=NOW, per_datagram=10)
    decode(dec, ipfix[:4] + ipfix[6:])
    assert dec.lost == 52  # IPFIX counts data records
    # a restart (sequence back to 0) resyncs without counting anything
    decode(dec, ipfix_datagrams(flows[:20], now=NOW, per_datagram=10))
    decode(dec, v5_datagrams(flows[:30], now=NOW, seq_start=0))
    assert dec.lost == 52
    assert dec.records == 120 - 30 + 120 - 20 + 120 - 20 + 20 + 30


def test_sequence_is_per_exporter_and_domain() -> None:
    dec = NetflowDecoder()
    a = ipfix_datagrams(V4_FLOWS, now=NOW, domain=1, seq_start=0)
    b = ipfix_datagrams(V4_FLOWS, now=NOW, domain=2, seq_start=1000)
    c = ipfix_datagrams(V4_FLOWS, now=NOW, domain=1, seq_start=4)
    decode(dec, a + b + c)
    decode(dec, ipfix_datagrams(V4_FLOWS, now=NOW, domain=1, seq_start=5000), exporter="x")
    assert dec.lost == 0


def test_sequence_counting_the_message_itself_is_not_loss() -> None:
    """softflowd numbers an IPFIX message by the records sent including its own (RFC
    7011: before it). Told apart once the message sizes differ; real gaps still count."""
    import struct

    flows = V4_FLOWS * 10  # 40 flows
    sizes = [10, 6, 10, 4, 10]  # records per message: a stream of uneven messages
    grams, at, total = [], 0, 0
    for n in sizes:
        total += n
        g = bytearray(ipfix_datagrams(flows[at:at + n], now=NOW, per_datagram=n)[0])
        struct.pack_into("!I", g, 8, total)  # the inclusive count
        grams.append(bytes(g))
        at += n
    dec = NetflowDecoder()
    decode(dec, grams)
    assert dec.lost == 0 and dec.records == sum(sizes)
    # then a real gap: one message of 10 missing, the next numbered inclusively
    g = bytearray(ipfix_datagrams(flows[:7], now=NOW, per_datagram=7)[0])
    struct.pack_into("!I", g, 8, total + 10 + 7)
    decode(dec, [bytes(g)])
    assert dec.lost == 10


def test_sequence_wraps_modulo_2_32() -> None:
    dec = NetflowDecoder()
    decode(dec, ipfix_datagrams(V4_FLOWS * 2, now=NOW, seq_start=2**32 - 4, per_datagram=4))
    assert dec.lost == 0


# ------------------------------------------------------------------ malformed input
def _tpl_set(*records: bytes, set_id: int = 2) -> bytes:
    return flowset(set_id, b"".join(records))


MALFORMED = {
    "too short": [b"", b"\x00", b"\x00\x05" + bytes(10), b"\x00\x09" + bytes(10),
                  b"\x00\x0a" + bytes(10)],
    "unknown version": [b"\x00\x07" + bytes(40), b"\xff\xff"],
    "bad length": [ipfix_message([], now=NOW) + b"\0", ipfix_message([], now=NOW)[:2]
                   + b"\x00\x20" + ipfix_message([], now=NOW)[4:]],
    "v5 count": [v5_datagrams(V4_FLOWS, now=NOW)[0][:-1],
                 b"\x00\x05\x00\x1f" + bytes(20) + bytes(48 * 31)],
    "bad set length": [ipfix_message([b"\x01\x00\x00\x03"], now=NOW),
                       ipfix_message([b"\x01\x00\x00\x40" + bytes(8)], now=NOW),
                       v9_packet([b"\x01\x00\x00\x30" + bytes(8)], count=1, now=NOW)],
    "zero-length field": [ipfix_message([_tpl_set(template_record(256, [(8, 4), (1, 0)]))],
                                        now=NOW)],
    "zero record length": [v9_packet([_tpl_set(struct.pack("!HH", 256, 0), set_id=0)],
                                     count=1, now=NOW),
                           v9_packet([flowset(1, struct.pack("!HHH", 256, 0, 0))], count=1,
                                     now=NOW)],
    "template overrun": [ipfix_message([_tpl_set(struct.pack("!HHHH", 256, 3, 8, 4))],
                                       now=NOW)],
    "bad template id": [ipfix_message([_tpl_set(template_record(17, [(8, 4)]))], now=NOW)],
    "bad scope": [ipfix_message([flowset(3, struct.pack("!HHHHH", 256, 1, 2, 8, 4))],
                                now=NOW)],
    "varlen overrun": [ipfix_records(256, [(8, 4), (12, 4), (82, 65535)],
                                     [bytes(8) + b"\xff\x00"]),
                       ipfix_records(256, [(8, 4), (12, 4), (82, 65535)],
                                     [bytes(8) + b"\x05ab"])],
}


@pytest.mark.parametrize("reason", sorted(MALFORMED))
def test_malformed_counted_by_reason(reason: str) -> None:
    dec = NetflowDecoder()
    for datagram in MALFORMED[reason]:
        assert dec.decode(datagram, EXP, NOW) == []
    n = len(MALFORMED[reason])
    assert dec.malformed == n and dec.malformed_reasons == {reason: n}
    assert dec.records == 0 and dec.templates == 0
    # a valid datagram still decodes afterwards
    check(decode(dec, ipfix_datagrams(V4_FLOWS, now=NOW)), V4_FLOWS)
    check(decode(dec, v5_datagrams(V4_FLOWS, now=NOW)), V4_FLOWS)


def test_malformed_datagram_is_all_or_nothing() -> None:
    """Records and a template before the fault are dropped with the datagram; data
    buffered earlier stays buffered."""
    dec = NetflowDecoder()
    dec.decode(ipfix_datagrams(V6_FLOWS, now=NOW, with_template=False)[0], EXP, NOW)
    good = ipfix_datagrams(V4_FLOWS + V6_FLOWS, now=NOW)[0]
    bad = good[:2] + struct.pack("!H", len(good) + 4) + good[4:] + b"\x01\x00\x00\x09"
    assert dec.decode(bad, EXP, NOW) == []
    assert dec.malformed_reasons == {"bad set length": 1}
    assert (dec.templates, dec.unknown_buffered, dec.records) == (0, 1, 0)
    check(decode(dec, [good]), V4_FLOWS + V6_FLOWS + V6_FLOWS)


def test_malformed_buffered_set_dropped_alone() -> None:
    dec = NetflowDecoder()
    fields = [(8, 4), (12, 4), (82, 65535)]
    dec.decode(ipfix_records(256, fields, [bytes(8) + b"\x09ab"], template=False), EXP, NOW)
    rec = decode(dec, [ipfix_records(256, fields, [bytes(8) + b"\x02ab"])])
    assert len(rec) == 1
    assert dec.malformed_reasons == {"varlen overrun": 1}
    assert dec.unknown_buffered == 0


def valid_datagrams() -> list[bytes]:
    opt = struct.pack("!HHH", 300, 2, 1) + struct.pack("!HHHH", 149, 4, 82, 65535)
    return [
        v5_datagrams(V4_FLOWS, now=NOW)[0],
        v9_datagrams(V4_FLOWS + V6_FLOWS, now=NOW)[0],
        ipfix_datagrams(V4_FLOWS + V6_FLOWS, now=NOW)[0],
        ipfix_records(256, VAR_FIELDS, [var_row(V4_FLOWS[0], b"eth0"),
                                        var_row(V4_FLOWS[1], b"y" * 260)]),
        ipfix_message([flowset(3, opt), flowset(300, struct.pack("!I", 1) + varlen(b"abc"))],
                      now=NOW),
    ]


def test_truncated_datagrams_never_raise() -> None:
    dec = NetflowDecoder()
    for datagram in valid_datagrams():
        for n in range(len(datagram) + 1):
            for out in dec.decode(datagram[:n], EXP, NOW):
                assert isinstance(out[1], FlowRecords)
    assert dec.malformed > 0


def test_random_and_mutated_bytes_never_raise() -> None:
    rng = random.Random(7)
    dec = NetflowDecoder(unknown_max=50)
    valid = valid_datagrams()
    for i in range(3000):
        if i % 3 == 0:
            version = rng.choice([b"\x00\x05", b"\x00\x09", b"\x00\x0a"])
            data = version + rng.randbytes(rng.randrange(0, 300))
        else:
            data = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        dec.decode(data, rng.choice(["a", "b"]), NOW + i)
        if i % 100 == 0:
            dec.expire(NOW + i)
    assert dec.datagrams == 3000
    assert dec.unknown_buffered <= 50


def test_flow_records_empty_and_concat() -> None:
    e = FlowRecords.empty()
    assert len(e) == 0 and e.src.shape == (0, 16) and e.proto.dtype == np.int64
    rec = decode(NetflowDecoder(), ipfix_datagrams(V4_FLOWS, now=NOW))
    both = FlowRecords.concat([e, rec, rec])
    assert len(both) == 2 * len(V4_FLOWS) and both.src.shape == (8, 16)
    assert FlowRecords.concat([e, rec]) is rec


def test_a_sender_spraying_domains_and_templates_cannot_grow_memory() -> None:
    dec = NetflowDecoder(max_streams=50)
    for domain in range(200):
        decode(dec, ipfix_datagrams(V4_FLOWS, now=NOW, domain=domain,
                                    template_id=256 + domain % 7))
    assert dec.templates == 50 and dec.templates_refused == 150
    assert len(dec._seq) <= 50
    assert dec.malformed == 0
