"""TLS ClientHello reader and JA3/JA4 (netmon.names.tls, netmon.names.ja).

Oracle: tshark's ``tls.handshake.extensions_server_name``, ``tls.handshake.ja3`` and
``tls.handshake.ja3_full`` for every ClientHello in the shared captures, netmon fed each
client stream (reassembled from tshark's per-segment ``tcp.payload``) in random chunks.
JA4 (tshark 4.0 lacks it) is pinned with vectors worked out from FoxIO's JA4.md, the
hashes checked with ``printf '%s' LIST | sha256sum``.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections import defaultdict
from functools import cache

import pytest

from netmon.names.ja import ja3, ja3_string, ja4, ja4_parts
from netmon.names.tls import (
    HELLO_MAX,
    SNI_MAX,
    ClientHello,
    ClientHelloReader,
    parse_handshake,
    parse_records,
)
from netmon.testing.tlshello import (
    client_hello,
    ext_alpn,
    ext_groups,
    ext_point_formats,
    ext_sig_algs,
    ext_sni,
    ext_versions,
    tls_records,
)
from tests.conftest import CAPTURES, captures_dir

#: Captures with ClientHellos, and how many TCP flows tshark shows an SNI for in each.
SNI_FLOWS = {"02_tls_firefox.pcap": 1, "03_ipv6_tls_reddit.pcap": 59,
             "04_mixed_lan_android_1kxun.pcap": 4, "14_truncated_midpacket_1kxun.pcap": 4}

Direction = tuple[int, int]  # (tcp.stream, tcp.srcport)


def _tshark(name: str, *args: str) -> list[list[str]]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    # 14_truncated_* makes tshark exit 2 after the packets it can read: use its output.
    out = subprocess.run(["tshark", "-r", str(captures_dir() / name), "-T", "fields",
                          "-E", "separator=|", "-E", "occurrence=f", *args],
                         capture_output=True, text=True, timeout=120).stdout
    return [line.split("|") for line in out.splitlines()]


@cache
def tshark_hellos(name: str) -> dict[Direction, tuple[str, str, str]]:
    """(stream, client port) -> (SNI, ja3, ja3_full) of its first ClientHello."""
    rows = _tshark(name, "-Y", "tls.handshake.type==1", "-e", "tcp.stream", "-e",
                   "tcp.srcport", "-e", "tls.handshake.extensions_server_name", "-e",
                   "tls.handshake.ja3", "-e", "tls.handshake.ja3_full")
    out: dict[Direction, tuple[str, str, str]] = {}
    for stream, port, sni, j, full in rows:
        out.setdefault((int(stream), int(port)), (sni, j, full))
    return out


@cache
def client_streams(name: str, limit: int = 4 * HELLO_MAX) -> dict[Direction, bytes]:
    """Each TCP direction's payload from its first seen byte, put back in sequence order
    (retransmissions and overlaps dropped), up to the first hole or ``limit`` bytes."""
    segs: dict[Direction, dict[int, bytes]] = defaultdict(dict)
    for stream, port, seq, payload in _tshark(name, "-Y", "tcp.len>0", "-e", "tcp.stream",
                                              "-e", "tcp.srcport", "-e", "tcp.seq",
                                              "-e", "tcp.payload"):
        seg = segs[(int(stream), int(port))]
        data = bytes.fromhex(payload)
        if len(data) > len(seg.get(int(seq), b"")):
            seg[int(seq)] = data
    out = {}
    for key, seg in segs.items():
        start = min(seg)
        buf = bytearray()
        for seq in sorted(seg):
            at = seq - start
            if at > len(buf) or len(buf) >= limit:
                break
            buf += seg[seq][len(buf) - at:]
        out[key] = bytes(buf)
    return out


def feed_chunks(data: bytes, rng: random.Random, most: int) -> ClientHello | None:
    reader = ClientHelloReader()
    result = None
    i = 0
    while i < len(data):
        n = rng.randint(1, most)
        result = reader.feed(data[i:i + n])
        i += n
    return result


@pytest.mark.parametrize("name", sorted(SNI_FLOWS))
def test_every_client_hello_matches_tshark(name: str) -> None:
    expected = tshark_hellos(name)
    streams = client_streams(name)
    assert expected, f"tshark found no ClientHello in {name}"
    for seed, most in ((1, 1), (2, 7), (3, 300), (4, 5000)):
        rng = random.Random(seed)
        for key, (sni, j, full) in expected.items():
            hello = feed_chunks(streams[key], rng, most)
            assert hello is not None, (name, key)
            assert (hello.server_name or "", ja3_string(hello), ja3(hello)) == (sni, full, j), \
                (name, key, seed)


@pytest.mark.parametrize("name", sorted(SNI_FLOWS))
def test_named_flows_are_exactly_tsharks(name: str) -> None:
    """Every TCP direction of the capture through a reader: the ones that yield a server
    name are exactly those tshark shows an SNI for (none missed, none invented)."""
    ours = {key for key, data in client_streams(name).items()
            if (h := parse_records(data)) is not None and h.server_name}
    theirs = {key for key, (sni, _, _) in tshark_hellos(name).items() if sni}
    assert ours == theirs
    assert len(ours) == SNI_FLOWS[name]


def test_captures_without_client_hellos_are_listed() -> None:
    """SNI_FLOWS names every shared capture where tshark sees a TCP ClientHello."""
    root = captures_dir()
    with_hellos = {p.name for p in sorted(root.iterdir()) if p.suffix in (".pcap", ".pcapng")
                   and any(row[0] for row in _tshark(p.name, "-Y", "tls.handshake.type==1 "
                                                     "&& tcp", "-e", "tcp.stream"))}
    assert with_hellos == set(SNI_FLOWS), CAPTURES


# A hello shaped like FoxIO's JA4.md example (Chrome), with GREASE everywhere it occurs.
SPEC_CIPHERS = [0x1A1A, 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9,
                0xCCA8, 0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
SPEC_EXTENSIONS = [
    (0x2A2A, b""), (0x001B, b"\x02\x00\x02"), ext_sni("www.example.com"), (0x0033, b"\x00\x00"),
    ext_alpn("h2", "http/1.1"), (0x4469, b"\x00\x03\x02h2"), (0x0017, b""), (0x002D, b"\x01\x01"),
    ext_sig_algs(0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601),
    (0x0005, b"\x01\x00\x00\x00\x00"), (0x0023, b""), (0x0012, b""),
    ext_versions(0x3A3A, 0x0304, 0x0303), (0xFF01, b"\x00"), ext_point_formats(0),
    ext_groups(0x4A4A, 0x001D, 0x0017, 0x0018), (0x0015, b"\x00\x00"), (0xFAFA, b"\x00")]


def test_ja4_of_the_spec_example_with_grease() -> None:
    hello = parse_handshake(client_hello(SPEC_CIPHERS, SPEC_EXTENSIONS))
    assert hello is not None
    assert ja4_parts(hello) == (
        "t13d1516h2",
        "002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9",
        "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_"
        "0403,0804,0401,0503,0805,0501,0806,0601")
    assert ja4(hello) == "t13d1516h2_8daaf6152771_e5627efa2ab1"  # JA4.md's own result
    assert ja4(hello, quic=True) == "q13d1516h2_8daaf6152771_e5627efa2ab1"
    # JA3 drops the same GREASE values but keeps order, SNI and ALPN.
    assert ja3_string(hello) == (
        "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,"
        "27-0-51-16-17513-23-45-13-5-35-18-43-65281-11-10-21,29-23-24,0")
    assert ja3(hello) == "c000e2caf3a25423f9de6c8a4b12a975"  # md5sum of that string
    assert hello.server_name == "www.example.com"
    assert hello.alpn == ("h2", "http/1.1")
    assert hello.version == 0x0304 and hello.legacy_version == 0x0303


def test_ja4_signature_algorithms_empty_gives_the_spec_second_example() -> None:
    exts = [e if e[0] != 0x000D else ext_sig_algs() for e in SPEC_EXTENSIONS]
    hello = parse_handshake(client_hello(SPEC_CIPHERS, exts))
    # JA4.md: "0005,...,4469,ff01 = 6d807ffa2a79" (no signature algorithms, no "_").
    assert ja4(hello) == "t13d1516h2_8daaf6152771_6d807ffa2a79"


def test_ja4_without_sni_and_without_alpn() -> None:
    """A TLS 1.2 hello (no supported_versions) to an address: "i", "00"."""
    hello = parse_handshake(client_hello(
        [0xC02C, 0xC02B, 0x009F, 0x00FF],
        [ext_point_formats(0, 1, 2), ext_groups(0x001D, 0x0017), (0x0023, b""),
         (0x0016, b""), (0x0017, b""), ext_sig_algs(0x0601, 0x0501, 0x0401)]))
    assert ja4_parts(hello) == ("t12i040600", "009f,00ff,c02b,c02c",
                                "000a,000b,000d,0016,0017,0023_0601,0501,0401")
    assert ja4(hello) == "t12i040600_bb6618faad38_974a7cdd77d3"
    assert hello.server_name is None and hello.alpn == ()
    assert ja3_string(hello) == "771,49196-49195-159-255,11-10-35-22-23-13,29-23,0-1-2"


def test_ja4_empty_lists_and_version_fallbacks() -> None:
    # Only GREASE ciphers; only SNI and ALPN extensions; a TLS 1.0 hello.
    hello = parse_handshake(client_hello([0x0A0A], [ext_sni("a.b"), ext_alpn("h2")],
                                         legacy_version=0x0301))
    assert ja4(hello) == "t10d0002h2_000000000000_000000000000"
    # supported_versions holding only GREASE falls back to the hello's version; an
    # unknown version is "00"; no extensions block at all.
    hello = parse_handshake(client_hello([0x1301], [ext_versions(0x7A7A)]))
    assert ja4_parts(hello)[0] == "t12i0101" + "00"
    hello = parse_handshake(client_hello([0x1301], None, legacy_version=0x0305))
    assert ja4_parts(hello) == ("t00i010000", "1301", "")
    assert ja4(hello) == "t00i010000_0f2cb44170f4_000000000000"


@pytest.mark.parametrize(("first", "chars"), [
    (b"h2", "h2"), (b"http/1.1", "h1"), (b"h", "hh"), (b"", "00"),
    (b"\xab", "ab"), (b"\xab\xcd", "ad"), (b"0\xab", "3b"), (b"01\xab\xcd", "3d"),
    (b"0\xab\xcd1", "01"), (b"\x1b[31m", "1d")])
def test_ja4_alpn_characters(first: bytes, chars: str) -> None:
    """JA4.md's ALPN rule, its own examples included (0xAB -> "ab", 0x30 0xAB -> "3b")."""
    hello = parse_handshake(client_hello([0x1301], [ext_alpn(first, "h2")]))
    assert ja4_parts(hello)[0] == "t12i0101" + chars


def test_record_and_chunk_splits_give_the_same_hello() -> None:
    msg = client_hello(SPEC_CIPHERS, SPEC_EXTENSIONS)
    whole = parse_handshake(msg)
    rng = random.Random(7)
    for _ in range(200):
        sizes = [rng.randint(1, 64) for _ in range(rng.randint(0, 12))]
        stream = tls_records(msg, sizes) + b"\x17\x03\x03\x00\x05hello"
        assert feed_chunks(stream, rng, rng.choice((1, 3, 50, 4000))) == whole


def test_reader_states_and_what_it_keeps() -> None:
    msg = client_hello(SPEC_CIPHERS, SPEC_EXTENSIONS)
    stream = tls_records(msg, [40, 40])
    reader = ClientHelloReader()
    assert reader.feed(stream[:-1]) is None and reader.state == "reading"
    assert reader.feed(stream[-1:]) == parse_handshake(msg) and reader.state == "done"
    assert reader.feed(b"anything") == parse_handshake(msg)
    for not_tls in (b"GET / HTTP/1.1\r\n", b"SSH-2.0-OpenSSH_9.2\r\n",
                    b"\x17\x03\x03\x00\x10" + bytes(16),  # application data first
                    tls_records(b"\x02" + msg[1:]),  # a ServerHello-typed message
                    b"\x16\x03\x01\xff\xff"):  # a record longer than TLS allows
        reader = ClientHelloReader()
        assert reader.feed(not_tls) is None and reader.state == "malformed", not_tls


def _hostile(sni: bytes) -> bytes:
    return client_hello([0x1301], [ext_sni(sni), ext_alpn(b"\x1b]0;x\x07", b"h2")])


def test_hostile_names_come_out_capped_and_inert() -> None:
    for raw in (b"evil\x1b]0;pwned\x07.com", b"a\x00b\x00c", b"\x9b2J\xc3\x28\xff.example",
                b"\xe2\x80\xaeevil", b"x" * 10_000):
        hello = parse_records(tls_records(_hostile(raw)))
        assert hello is not None
        for text in (hello.server_name, *hello.alpn):
            assert text.isprintable(), text
            assert "\x1b" not in text and "\x00" not in text
        assert len(hello.server_name) <= SNI_MAX
    assert parse_records(tls_records(_hostile(b"x" * 10_000))).server_name.endswith("…")
    assert parse_records(tls_records(_hostile(b"a\x00b"))).server_name == "a\\x00b"


def test_a_64_kb_server_name_is_refused_with_bounded_memory() -> None:
    """A hello over HELLO_MAX is given up as soon as its length is read; until then the
    reader holds at most one record and the message so far."""
    msg = _hostile(b"A" * 65_000)
    stream = tls_records(msg)
    reader = ClientHelloReader()
    for i in range(0, len(stream), 1000):
        assert reader.feed(stream[i:i + 1000]) is None
        assert len(reader._rec) + len(reader._hs) <= 5 + 18432 + HELLO_MAX
    assert reader.state == "malformed"
    assert parse_handshake(msg) is None  # handed over whole: too long, cut, refused
    assert parse_records(stream) is None

def test_truncated_lengths_never_raise() -> None:
    msg = client_hello(SPEC_CIPHERS, SPEC_EXTENSIONS)
    for n in range(len(msg)):
        assert parse_handshake(msg[:n]) is None
        reader = ClientHelloReader()
        assert reader.feed(tls_records(msg)[:n + 5]) is None
    # Lengths that overrun their container, field by field.
    body = bytearray(msg)
    for pos in range(4, len(body)):
        for value in (0x00, 0x7F, 0xFF):
            mutated = bytes(body[:pos]) + bytes([value]) + bytes(body[pos + 1:])
            result = parse_handshake(mutated)
            assert result is None or isinstance(result, ClientHello)


def test_random_bytes_and_mutations_never_raise() -> None:
    rng = random.Random(14)
    base = tls_records(client_hello(SPEC_CIPHERS, SPEC_EXTENSIONS), [100])
    for i in range(4000):
        if i % 2:
            data = bytearray(base)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            data = bytearray(b"\x16\x03\x01" + rng.randbytes(rng.randint(0, 600)))
        hello = feed_chunks(bytes(data), rng, 64)
        if hello is not None:
            ja3(hello), ja4(hello)
            for text in (hello.server_name or "", *hello.alpn):
                assert text.isprintable() and len(text) <= SNI_MAX
