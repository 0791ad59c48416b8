"""The DNS answer parser against tshark on every DNS response in the shared captures
(UDP, IP-fragmented, TCP, mDNS), CNAME chains back to the question, chunk independence
of DNS over TCP, and hostile messages (pointer loops, long names, escapes, fuzz)."""

from __future__ import annotations

import ipaddress
import json
import random
import shutil
import struct
import subprocess
from collections import defaultdict

import pytest

from netmon.names.dns import (
    LABEL_MAX,
    NAME_TEXT_MAX,
    TCP_MESSAGE_MAX,
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    TYPE_PTR,
    AddressName,
    DnsStream,
    parse_dns,
)
from netmon.testing.names import dns_response, random_chunks, tcp_framed
from tests.conftest import capture_files, captures_dir

V4 = bytes(12)
SECTIONS = {"Answers": 0, "Authoritative nameservers": 1, "Additional records": 2}


def addr16(text: str) -> bytes:
    ip = ipaddress.ip_address(text)
    return ip.packed if ip.version == 6 else V4 + ip.packed


def records(tree: object) -> list[dict]:
    """The records of one section of tshark's JSON (duplicate keys come as lists)."""
    out: list[dict] = []
    for value in (tree or {}).values() if isinstance(tree, dict) else []:
        out += value if isinstance(value, list) else [value]
    return out


def tshark_json(path, display_filter: str) -> list[dict]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    run = subprocess.run(["tshark", "-r", str(path), "-Y", display_filter, "-T", "json",
                          "--no-duplicate-keys", "-J", "frame udp tcp dns mdns"],
                         capture_output=True, text=True, timeout=120)
    return json.loads(run.stdout or "[]")


def expected(dns: dict) -> list[tuple]:
    """tshark's address records of one message as (section, addr, name, alias, ttl):
    answers named by walking CNAMEs forward from the question."""
    queries = [q["dns.qry.name"] for q in records(dns.get("Queries"))]
    cname = {r["dns.resp.name"].lower(): r["dns.cname"].lower()
             for r in records(dns.get("Answers")) if r.get("dns.resp.type") == str(TYPE_CNAME)}
    chain: dict[str, str] = {}  # every name reached from a question -> that question
    for q in queries:
        name, hops = q.lower(), 0
        while name not in chain and hops < 100:
            chain[name] = q
            name, hops = cname.get(name, ""), hops + 1
    out = []
    for title, section in SECTIONS.items():
        for r in records(dns.get(title)):
            rtype, owner = r.get("dns.resp.type"), r.get("dns.resp.name", "")
            ttl = int(r.get("dns.resp.ttl", -1))
            if rtype in (str(TYPE_A), str(TYPE_AAAA)):
                addr = r.get("dns.a") or r.get("dns.aaaa")
                name = chain.get(owner.lower(), owner) if section == 0 else owner
                alias = owner if name.lower() != owner.lower() else ""
                out.append((section, addr16(addr), name, alias, ttl))
            elif rtype == str(TYPE_PTR) and owner.endswith(".in-addr.arpa"):
                ip = ".".join(reversed(owner.split(".")[:4]))
                out.append((section, addr16(ip), r["dns.ptr.domain_name"], "", ttl))
    return out


def got(names: tuple[AddressName, ...]) -> list[tuple]:
    return [(n.section, n.addr, n.name, n.alias, n.ttl) for n in names]


DNS_CAPTURES = [f for f in capture_files() if not f.startswith("14_")]  # 14 is a cut 04


@pytest.mark.parametrize("capture", DNS_CAPTURES)
def test_udp_answers_equal_tsharks(capture: str) -> None:
    frames = tshark_json(captures_dir() / capture, "dns.flags.response==1 && udp")
    for frame in frames:
        layers = frame["_source"]["layers"]
        udp = layers["udp"]
        payload = bytes.fromhex(udp["udp.payload"].replace(":", ""))
        mdns = "5353" in (udp["udp.srcport"], udp["udp.dstport"])
        msg = parse_dns(payload, mdns=mdns)
        number = layers["frame"]["frame.number"]
        assert msg is not None and msg.complete, number
        assert got(msg.names) == expected(layers.get("dns") or layers["mdns"]), number


def test_the_shared_captures_hold_enough_dns_to_mean_something() -> None:
    counts = {}
    for capture in ("01_http_espn.pcapng", "05_mixed_services_std_ports.pcap",
                    "08_dns_edns_v4v6.pcap"):
        frames = tshark_json(captures_dir() / capture, "dns.flags.response==1 && udp")
        counts[capture] = sum(len(parse_dns(bytes.fromhex(
            f["_source"]["layers"]["udp"]["udp.payload"].replace(":", ""))).names)
            for f in frames)
    assert counts == {"01_http_espn.pcapng": 29, "05_mixed_services_std_ports.pcap": 222,
                      "08_dns_edns_v4v6.pcap": 212}


def test_cname_chain_named_after_the_question_in_a_real_answer() -> None:
    frames = tshark_json(captures_dir() / "08_dns_edns_v4v6.pcap",
                         'dns.flags.response==1 && udp && dns.qry.name=="www.netflix.com"'
                         " && dns.a")
    msg = parse_dns(bytes.fromhex(frames[-1]["_source"]["layers"]["udp"]["udp.payload"]
                                  .replace(":", "")))
    answers = [n for n in msg.names if n.section == 0]
    assert {(n.name, n.alias) for n in answers} == {
        ("www.netflix.com", "www.eu-west-1.prodaa.netflix.com")}
    assert addr16("34.252.114.84") in {n.addr for n in answers}
    assert {n.ttl for n in answers} == {60}


def test_mdns_reverse_answer_names_the_host_with_cache_flush() -> None:
    frames = tshark_json(captures_dir() / "05_mixed_services_std_ports.pcap",
                         "udp.port==5353 && dns.flags.response==1")
    assert frames
    for frame in frames:
        payload = bytes.fromhex(frame["_source"]["layers"]["udp"]["udp.payload"]
                                .replace(":", ""))
        msg = parse_dns(payload, mdns=True)
        assert msg.mdns and msg.questions == ()
        assert [(n.addr, n.family, n.name, n.rtype, n.ttl, n.cache_flush) for n in msg.names] \
            == [(addr16("172.16.238.1"), 4, "tangent.local", TYPE_PTR, 120, True)]
        # Read as unicast DNS, the cache-flush bit makes the class unknown: nothing named.
        assert parse_dns(payload).names == ()


def tcp_dns_streams(capture: str) -> dict[tuple[str, str], list[bytes]]:
    """Each TCP DNS connection's payload per direction (stream, src port), in order."""
    run = subprocess.run(["tshark", "-r", str(captures_dir() / capture), "-Y",
                          "tcp.port==53 && tcp.len>0", "-T", "fields", "-e", "tcp.stream",
                          "-e", "tcp.srcport", "-e", "tcp.payload"],
                         capture_output=True, text=True, timeout=120)
    streams: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for line in run.stdout.splitlines():
        stream, sport, payload = line.split("\t")
        streams[stream, sport].append(bytes.fromhex(payload.replace(":", "")))
    return streams


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tcp_answers_equal_tsharks_however_the_stream_is_split(seed: int) -> None:
    frames = tshark_json(captures_dir() / "08_dns_edns_v4v6.pcap", "dns.flags.response==1 && tcp")
    want: dict[str, list] = defaultdict(list)
    for frame in frames:
        layers = frame["_source"]["layers"]
        for dns in layers["dns"] if isinstance(layers["dns"], list) else [layers["dns"]]:
            want[layers["tcp"]["tcp.stream"]].append(expected(dns))
    assert len(want) == 8
    rng = random.Random(seed)
    for (stream, sport), segments in tcp_dns_streams("08_dns_edns_v4v6.pcap").items():
        whole = b"".join(segments)
        for chunks in (segments, random_chunks(whole, rng, 300), [whole]):
            parser = DnsStream()
            msgs = [m for c in chunks for m in parser.feed(c)]
            if sport == "53":
                assert [got(m.names) for m in msgs] == want[stream]
                assert all(m.complete for m in msgs)
            else:
                assert msgs == [] and parser.skipped == 1  # the query


CHAIN = dns_response([("www.reddit.com", TYPE_A)], [
    ("www.reddit.com", TYPE_CNAME, 300, "reddit.map.fastly.net"),
    ("reddit.map.fastly.net", TYPE_A, 30, bytes([151, 101, 1, 140])),
    ("reddit.map.fastly.net", TYPE_A, 30, bytes([151, 101, 65, 140])),
    ("unrelated.example", TYPE_AAAA, 5, bytes(15) + b"\x01"),
], [], [("ns1.fastly.net", TYPE_A, 3600, bytes([10, 0, 0, 1]))])


def test_answers_follow_cnames_back_to_the_question_and_keep_the_alias() -> None:
    msg = parse_dns(CHAIN)
    assert msg.complete and msg.questions == ("www.reddit.com",) and msg.txid == 0x1234
    assert [(n.name, n.alias, n.family, n.ttl, n.section) for n in msg.names] == [
        ("www.reddit.com", "reddit.map.fastly.net", 4, 30, 0),
        ("www.reddit.com", "reddit.map.fastly.net", 4, 30, 0),
        ("unrelated.example", "", 6, 5, 0),
        ("ns1.fastly.net", "", 4, 3600, 2)]
    assert msg.names[0].addr == V4 + bytes([151, 101, 1, 140])


def test_mixed_case_chain_and_cname_loop_do_not_confuse_the_walk() -> None:
    msg = parse_dns(dns_response([("WWW.Example.COM", TYPE_A)], [
        ("www.example.com", TYPE_CNAME, 60, "a.cdn.net"),
        ("A.CDN.net", TYPE_A, 60, b"\x01\x02\x03\x04")], compress=False))
    assert [(n.name, n.alias) for n in msg.names] == [("WWW.Example.COM", "A.CDN.net")]
    loop = parse_dns(dns_response([("q.example", TYPE_A)], [
        ("x.example", TYPE_CNAME, 60, "y.example"), ("y.example", TYPE_CNAME, 60, "x.example"),
        ("y.example", TYPE_A, 60, b"\x01\x02\x03\x04")]))
    assert len(loop.names) == 1 and loop.names[0].name in ("x.example", "y.example")


def test_queries_and_non_dns_give_none() -> None:
    assert parse_dns(dns_response([("a.example", 1)], flags=0x0100)) is None  # a query
    assert parse_dns(dns_response([("a.example", 1)], flags=0x8000 | 0x2800)) is None  # opcode 5
    assert parse_dns(b"") is None and parse_dns(b"GET / HTTP/1.1\r\n") is None
    assert parse_dns(bytearray(CHAIN)) == parse_dns(CHAIN)  # any bytes-like input


def test_truncated_message_keeps_the_records_before_the_cut() -> None:
    cut = parse_dns(CHAIN[:len(CHAIN) - 20])
    assert not cut.complete and [n.name for n in cut.names] == ["www.reddit.com"] * 2 + [
        "unrelated.example"]
    whole = parse_dns(CHAIN)
    for n in range(12, len(CHAIN)):
        part = parse_dns(CHAIN[:n])
        assert part is not None and not part.complete
        assert part.names == whole.names[:len(part.names)]


def header(an: int = 1) -> bytes:
    return struct.pack("!HHHHHH", 1, 0x8180, 0, an, 0, 0)


def a_record(name_bytes: bytes) -> bytes:
    return name_bytes + struct.pack("!HHIH", TYPE_A, 1, 60, 4) + b"\x01\x02\x03\x04"


@pytest.mark.parametrize("name", [
    b"\xc0\x0c",  # points at itself
    b"\x01a\xc0\x0c",  # points back at its own start
    b"\xc0\x20" + bytes(20),  # points forward
    b"\x01a\xc0\x0e",  # points into its own middle (after the jump)
    b"\x40abc\x00",  # extended label type
    b"\x80abc\x00",
    b"\x05ab",  # label runs past the end
])
def test_bad_names_never_loop_or_raise(name: bytes) -> None:
    msg = parse_dns(header() + a_record(name))
    assert msg is not None and not msg.complete and msg.names == ()


def test_a_pointer_loop_through_two_names_is_cut() -> None:
    # Name at 12 ends with a pointer to 16, whose label ends with a pointer back to 12.
    body = b"\x01a\xc0\x10" + b"\x01b\xc0\x0c"
    assert parse_dns(header() + a_record(body)).names == ()


def test_long_pointer_chains_and_names_are_bounded() -> None:
    # Three questions, each a 63-byte label compressed onto the one before: the third
    # is 193 bytes on the wire. A record owned by one more label on it would be 257.
    msg = bytearray(struct.pack("!HHHHHH", 1, 0x8180, 3, 1, 0, 0))
    starts = []
    for i in range(3):
        starts.append(len(msg))
        msg += bytes([LABEL_MAX]) + bytes([0x61 + i]) * LABEL_MAX
        msg += struct.pack("!H", 0xC000 | starts[-2]) if i else b"\x00"
        msg += struct.pack("!HH", 1, 1)
    fits = parse_dns(bytes(msg) + a_record(struct.pack("!H", 0xC000 | starts[2])))
    assert fits.complete and [len(q) for q in fits.questions] == [63, 127, 191]
    assert fits.names[0].name == fits.questions[2]
    too_long = parse_dns(bytes(msg) + a_record(b"\x3f" + b"z" * 63
                                              + struct.pack("!H", 0xC000 | starts[2])))
    assert not too_long.complete and too_long.names == ()
    # A 64 KB name of short labels stops at 255 bytes too.
    huge = parse_dns(header() + a_record(b"\x01x" * 32768 + b"\x00"))
    assert huge.names == () and not huge.complete


def test_escapes_nuls_and_bad_utf8_in_names_come_out_inert() -> None:
    evil = "\x1b]0;pwned\x07\x1b[2J\x00evil"
    msg = parse_dns(dns_response([("q.example", TYPE_A)], [
        (evil + ".example", TYPE_A, 60, b"\x01\x02\x03\x04")]))
    name = msg.names[0].name
    assert name.isprintable() and "\x1b" not in name and "\\x1b" in name and "\\x00" in name
    raw = header() + a_record(b"\x04\xff\xfe\x9b\x1b\x03com\x00")
    name = parse_dns(raw).names[0].name
    assert name.isprintable() and name.endswith(".com") and "\x9b" not in name


def test_reverse_names_of_both_families_and_junk_reverse_names() -> None:
    v6 = ipaddress.ip_address("2001:db8::1")
    v6_owner = ".".join(reversed(v6.exploded.replace(":", ""))) + ".ip6.arpa"
    msg = parse_dns(dns_response([], [
        ("4.3.2.1.in-addr.arpa", TYPE_PTR, 120, "host.local"),
        (v6_owner, TYPE_PTR, 120, "six.local"),
        ("300.3.2.1.in-addr.arpa", TYPE_PTR, 120, "bad.local"),
        ("3.2.1.in-addr.arpa", TYPE_PTR, 120, "short.local"),
        ("_http._tcp.local", TYPE_PTR, 120, "printer._http._tcp.local")]), mdns=True)
    assert [(n.addr, n.family, n.name) for n in msg.names] == [
        (V4 + bytes([1, 2, 3, 4]), 4, "host.local"), (v6.packed, 6, "six.local")]


def test_tcp_stream_of_several_messages_in_random_splits() -> None:
    msgs = [CHAIN, dns_response([("a.example", 1)], flags=0x0100),
            dns_response([("b.example", 1)], [("b.example", TYPE_A, 9, b"\x05\x06\x07\x08")])]
    data = tcp_framed(msgs) + b"\x00\x00" + tcp_framed([CHAIN])
    want = [parse_dns(CHAIN), parse_dns(msgs[2]), parse_dns(CHAIN)]
    rng = random.Random(7)
    for _ in range(300):
        parser = DnsStream()
        assert [m for c in random_chunks(data, rng, 40) for m in parser.feed(c)] == want
        assert parser.messages == 3 and parser.skipped == 2


def test_tcp_message_over_the_cap_is_read_from_its_prefix_and_skipped() -> None:
    big = dns_response([("big.example", 1)], [
        ("big.example", TYPE_A, 60, bytes([10, 0, i // 256, i % 256])) for i in range(2000)])
    assert len(big) > TCP_MESSAGE_MAX
    after = dns_response([("next.example", 1)], [("next.example", TYPE_A, 1, b"\x01\x01\x01\x01")])
    rng = random.Random(3)
    for chunks in ([tcp_framed([big, after])], random_chunks(tcp_framed([big, after]), rng, 999)):
        parser = DnsStream()
        out = [m for c in chunks for m in parser.feed(c)]
        assert [m.complete for m in out] == [False, True]
        assert 0 < len(out[0].names) < 2000 and out[1].names[0].name == "next.example"
        assert len(parser._buf) == 0


def test_fuzzed_messages_never_raise_and_strings_stay_capped_and_safe() -> None:
    rng = random.Random(14)
    seeds = [CHAIN, dns_response([("x" * 63 + ".example", 1)], [
        ("x" * 63 + ".example", TYPE_A, 60, b"\x01\x02\x03\x04")]),
        dns_response([], [("4.3.2.1.in-addr.arpa", TYPE_PTR, 1, "h.local")], rclass=0x8001)]
    for i in range(4000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            op = rng.random()
            pos = rng.randrange(len(data))
            if op < 0.5:
                data[pos] = rng.randrange(256)
            elif op < 0.7:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif op < 0.85:
                del data[pos:pos + rng.randint(1, 8)]
            else:
                data[pos] = 0xC0 | rng.randrange(4)
        if i % 4 == 0:
            data = bytearray(rng.randbytes(rng.randint(3, 600)))
            data[2] |= 0x80
        for mdns in (False, True):
            msg = parse_dns(bytes(data), mdns=mdns)
            for n in (msg.names if msg else ()):
                for text in (n.name, n.alias):
                    assert len(text) <= NAME_TEXT_MAX and text.isprintable()
                assert len(n.addr) == 16
        stream = DnsStream()
        for chunk in random_chunks(tcp_framed([bytes(data)]), rng, 100):
            stream.feed(chunk)
