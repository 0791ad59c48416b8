"""QUIC Initial packets (netmon.names.quic): RFC vectors, tshark's decryption of a real
capture, ClientHellos split over Initials, and hostile datagrams.

Oracles: RFC 9001 Appendix A (QUIC v1) and RFC 9369 Appendix A (QUIC v2): the keys and
the client Initial packet, byte for byte; tshark's own decryption of
15_quic_firefox_google.pcap (``tls.handshake.extensions_server_name``, ``tls.handshake.ja3``
of each client datagram).
"""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest

from netmon.names.ja import ja3, ja4
from netmon.names.quic import (
    MAX_DATAGRAMS,
    QUIC_V1,
    QUIC_V2,
    QuicHelloReader,
    crypto_frames,
    initial_keys,
    open_initials,
    parse_datagram,
)
from netmon.names.tls import HELLO_MAX, parse_handshake
from netmon.testing.tlshello import (
    client_hello,
    crypto_frame,
    ext_alpn,
    ext_sni,
    ext_versions,
    quic_initial,
    varint,
)
from tests.conftest import captures_dir

RFC_DCID = bytes.fromhex("8394c8f03e515708")
#: The unprotected payload of RFC 9001 A.2 (and RFC 9369 A.2): a CRYPTO frame holding a
#: ClientHello to example.com with ALPN "alpn", then PADDING up to 1162 bytes.
RFC_CRYPTO = bytes.fromhex(
    "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868"
    "04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578"
    "616d706c652e636f6dff01000100000a00080006001d00170018001000070005"
    "04616c706e000500050100000000003300260024001d00209370b2c9caa47fba"
    "baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400"
    "0d0010000e0403050306030203080408050806002d00020101001c0002400100"
    "3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000"
    "75300901100f088394c8f03e51570806048000ffff")
RFC9001_A2 = bytes.fromhex("""
c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11
d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399
1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c
8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212
30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5
457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208
4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec
4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3
485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db
059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c
7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8
9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556
be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74
68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a
c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00
f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632
291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964
25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd
14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff
ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198
e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd
c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73
203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f
cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e
fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade
a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047
90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2
162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4
40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0
6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e
8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0
be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400
54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab
760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9
f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4
056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064
7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241
e221af44860018ab0856972e194cd934
""")
RFC9369_A2 = bytes.fromhex("""
d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485
dd04de806071bf03dceebfa162e75d6c96058bdbfb127cdfcbf903388e99ad04
9f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d
250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a
12834e3f249a78d395e0d18f4d766004f1a2674802a747eaa901c3f10cda5500
cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68
18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff33
12ae50b187c1433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3
d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd
6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520
bcfb7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045
636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f
ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c12
16ccce2d0193f958bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e5
4df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4
fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b
8017c25ca9052ca1079d8b78aebd47876d330a30f6a8c6d61dd1ab5589329de7
14d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9
9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91
abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff325ba3bd
80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db
848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18
d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15
c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc
7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61
f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cfa1e70710
10d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b
3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e
06ebfde206bfb0fcbc0edc4ebec309661bdd908d532eb0c6adc38b7ca7331dce
8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1
34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1
e86215c2d54e6670e07383a27bbffb5addf47d66aa85a0c6f9f32e59d85a44dd
5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3
8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89
d5974ee12e5cf7d5da4d6a31123041f33e61407e76cffcdcfd7e19ba58cf4b53
6f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19
9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96b
a18b2faa745b6fe189cf772a9f84cbfc
""")


@pytest.mark.parametrize(("version", "key", "iv", "hp"), [
    (QUIC_V1, "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c",
     "9f50449e04a0e810283a1e9933adedd2"),  # RFC 9001 A.1
    (QUIC_V2, "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f",
     "45b95e15235d6f45a6b19cbcb0294ba9"),  # RFC 9369 A.1
])
def test_initial_keys_match_the_rfcs(version: int, key: str, iv: str, hp: str) -> None:
    keys = initial_keys(RFC_DCID, version)
    assert (keys.key.hex(), keys.iv.hex(), keys.hp.hex()) == (key, iv, hp)


@pytest.mark.parametrize(("version", "packet"), [(QUIC_V1, RFC9001_A2), (QUIC_V2, RFC9369_A2)])
def test_rfc_client_initial_opens_and_names_example_com(version: int, packet: bytes) -> None:
    (initial,) = open_initials(packet)
    assert (initial.version, initial.dcid) == (version, RFC_DCID)
    assert initial.payload == RFC_CRYPTO + bytes(1162 - len(RFC_CRYPTO))
    assert crypto_frames(initial.payload) == [(0, RFC_CRYPTO[4:])]
    hello = parse_datagram(packet)
    assert hello is not None
    assert (hello.server_name, hello.alpn) == ("example.com", ("alpn",))
    # Worked by hand: 2 ciphers, 11 extensions, ALPN "alpn" -> "an"; the hashes are
    # sha256sum of "1301,1302" and of "0005,000a,000d,001c,002b,002d,0033,0039,ff01_
    # 0403,0503,0603,0203,0804,0805,0806".
    assert ja4(hello, quic=True) == "q13d0211an_62ed6f6ca7ad_4d634acda6c0"
    # The test builder protects the same payload into the RFC's bytes exactly.
    assert quic_initial(RFC_DCID, RFC_CRYPTO, version=version, pn=2) == packet


def test_every_client_hello_in_the_quic_capture_matches_tshark() -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    path = captures_dir() / "15_quic_firefox_google.pcap"
    out = subprocess.run(["tshark", "-r", str(path), "-Y", "udp", "-T", "fields", "-E",
                          "separator=|", "-E", "occurrence=f", "-e", "udp.srcport",
                          "-e", "udp.payload", "-e",
                          "tls.handshake.extensions_server_name", "-e", "tls.handshake.ja3"],
                         capture_output=True, text=True, timeout=120).stdout
    reader = QuicHelloReader()
    named = 0
    client = None
    for line in out.splitlines():
        sport, payload, sni, j = line.split("|")
        client = client or sport  # the first datagram is the client's Initial
        if sport != client:
            continue
        datagram = bytes.fromhex(payload)
        hello = parse_datagram(datagram)
        # Every client datagram: netmon names it exactly when tshark does.
        assert (hello.server_name if hello else "", ja3(hello) if hello else "") == (sni, j)
        reader.feed(datagram)
        named += bool(sni)
    assert named == 1
    assert reader.state == "done" and reader.result.server_name == "www.google.com"
    assert reader.version == QUIC_V1


def _big_hello(sni: str = "split.example") -> bytes:
    """A ClientHello of ~1.4 KB (an X25519MLKEM768 key share): more than one Initial holds."""
    share = b"\x11\xec" + (1216).to_bytes(2, "big") + bytes(range(256)) * 4 + bytes(192)
    return client_hello([0x1301, 0x1302, 0x1303],
                        [ext_sni(sni), ext_alpn("h3"), ext_versions(0x0304),
                         (0x0033, (len(share) + 36).to_bytes(2, "big") + share
                          + b"\x00\x1d\x00\x20" + bytes(32)), (0x0039, bytes(60))])


def test_hello_split_over_two_initials_with_shuffled_crypto_frames() -> None:
    msg = _big_hello()
    assert len(msg) > 1300
    dcid = bytes.fromhex("0011223344556677")
    # Chrome-like: the first packet holds pieces out of order between PING and PADDING.
    first = (b"\x01" + crypto_frame(700, msg[700:1100]) + bytes(5) + crypto_frame(0, msg[:700])
             + b"\x01")
    second = (b"\x02" + varint(0) + varint(0) + varint(0) + varint(0)  # ACK
              + crypto_frame(1100, msg[1100:]))
    one = quic_initial(dcid, first, pn=0)
    two = quic_initial(dcid, second, pn=1, size=1400)
    reader = QuicHelloReader()
    assert reader.feed(one) is None and reader.state == "reading"
    hello = reader.feed(two)
    assert hello == parse_handshake(msg) and hello.server_name == "split.example"
    assert reader.feed(one) == hello  # done: later datagrams change nothing
    # Reordered datagrams, and both coalesced in one datagram, give the same hello.
    reader = QuicHelloReader()
    assert reader.feed(two) is None
    assert reader.feed(one) == hello
    assert parse_datagram(one + two) == hello
    assert parse_datagram(one) is None


def test_later_initials_keep_the_first_dcids_keys_and_a_retry_starts_over() -> None:
    msg = _big_hello("keys.example")
    first_dcid, server_cid, retry_cid = b"\xa1" * 8, b"\x21\x33\xc4", b"\xb2" * 12
    one = quic_initial(first_dcid, crypto_frame(0, msg[:1000]))
    # After the server's Initial the client writes to the server's chosen connection ID,
    # still under the keys of its first DCID (RFC 9001 5.2).
    two = quic_initial(server_cid, crypto_frame(1000, msg[1000:]), pn=1, keys_dcid=first_dcid)
    reader = QuicHelloReader()
    reader.feed(one)
    assert reader.feed(two).server_name == "keys.example"
    # After a Retry the client starts over with the Retry's connection ID and its keys.
    reader = QuicHelloReader()
    reader.feed(one)
    assert reader.feed(quic_initial(retry_cid, crypto_frame(1000, msg[1000:]), pn=1)) is not None


def test_coalesced_packets_around_the_initial() -> None:
    """An Initial after a Handshake-typed packet and before a short-header packet."""
    initial = quic_initial(RFC_DCID, RFC_CRYPTO, pn=2, size=600)
    handshake = (bytes([0xE0]) + QUIC_V1.to_bytes(4, "big") + b"\x03abc\x00"
                 + varint(40) + bytes(40))
    short = b"\x40" + bytes(60)
    hello = parse_datagram(handshake + initial + short)
    assert hello is not None and hello.server_name == "example.com"
    # v2 numbers its packet types differently: a v1-typed Initial in v2 is a Retry.
    v2 = bytearray(quic_initial(RFC_DCID, RFC_CRYPTO, version=QUIC_V2, size=600))
    assert parse_datagram(bytes(v2)) is not None
    assert parse_datagram(bytes([v2[0] & 0xCF]) + bytes(v2[1:])) is None


def test_bounds_big_hellos_far_offsets_and_many_datagrams() -> None:
    dcid = b"\x01" * 8
    # A hello claiming more than HELLO_MAX is given up once its length is read.
    huge = b"\x01" + (HELLO_MAX + 10).to_bytes(3, "big") + bytes(500)
    reader = QuicHelloReader()
    reader.feed(quic_initial(dcid, crypto_frame(0, huge)))
    assert reader.state == "malformed" and reader.result is None
    # CRYPTO data beyond HELLO_MAX is not stored; the reader stays empty-handed.
    reader = QuicHelloReader()
    for i in range(10):
        reader.feed(quic_initial(dcid, crypto_frame(HELLO_MAX + 1000 * i, bytes(900)), pn=i))
    assert reader._pieces == {} and reader.state == "reading"
    # A connection that never completes a hello is dropped after MAX_DATAGRAMS.
    for _ in range(MAX_DATAGRAMS + 1):
        reader.feed(b"\x40" + bytes(30))
    assert reader.state == "malformed" and reader._openers == {}
    # A first handshake message that is not a ClientHello.
    assert parse_datagram(quic_initial(dcid, crypto_frame(0, b"\x02\x00\x00\x10" + bytes(16)))) \
        is None


def test_hostile_datagrams_give_none() -> None:
    rng = random.Random(9001)
    for n in range(0, len(RFC9001_A2), 7):
        assert parse_datagram(RFC9001_A2[:n]) is None
    for _ in range(500):  # any change to a protected packet fails authentication
        data = bytearray(RFC9001_A2)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        assert parse_datagram(bytes(data)) is None
    for i in range(3000):
        head = rng.choice((b"", b"\xc0\x00\x00\x00\x01", b"\xd0\x6b\x33\x43\xcf",
                           b"\xc3\x00\x00\x00\x01\x08" + RFC_DCID + b"\x00\x00"))
        data = head + rng.randbytes(rng.randint(0, 1300 if i % 10 == 0 else 80))
        assert parse_datagram(data) is None
    # Frames with lengths past the payload end the frame walk quietly.
    assert crypto_frames(b"\x06" + varint(0) + varint(5000) + b"abc") == []
    assert crypto_frames(b"\x02" + b"\x3f" * 2 + varint(1 << 30)) == []
    assert crypto_frames(b"\x1c\x06\x00\x01a") == []  # CONNECTION_CLOSE first: stop
    # A hostile server name inside a valid Initial comes out inert and capped.
    msg = client_hello([0x1301], [ext_sni(b"\x1b[2J" + b"q" * 900), ext_alpn(b"\x07")])
    hello = parse_datagram(quic_initial(b"\x05" * 8, crypto_frame(0, msg)))
    assert hello.server_name.startswith("\\x1b[2J") and hello.server_name.isprintable()
    assert len(hello.server_name) <= 255 and hello.alpn == ("\\x07",)
