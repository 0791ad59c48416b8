"""The SSH banner parser against tshark's ssh.protocol for both sides of every SSH
connection in the shared captures, lines before the server's banner, the 255-byte
bound, chunk independence and hostile banners."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections import defaultdict

import pytest

from netmon.names.ssh import BANNER_MAX, PRE_LINES_MAX, SshBannerParser, parse_ssh_banner
from netmon.testing.names import random_chunks
from tests.conftest import captures_dir

DEBIAN = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


def first_payloads(capture: str) -> dict[tuple[str, str], bytes]:
    """Each (tcp stream, source port)'s first 2 KB of payload, in capture order."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    run = subprocess.run(["tshark", "-r", str(captures_dir() / capture), "-Y", "tcp.len>0",
                          "-T", "fields", "-e", "tcp.stream", "-e", "tcp.srcport", "-e",
                          "tcp.payload"], capture_output=True, text=True, timeout=120)
    out: dict[tuple[str, str], bytes] = defaultdict(bytes)
    for line in run.stdout.splitlines():
        stream, sport, payload = line.split("\t")
        if len(out[stream, sport]) < 2048:
            out[stream, sport] += bytes.fromhex(payload)
    return out


@pytest.mark.parametrize("capture", ["07_ssh_bruteforce_sshguess.pcap",
                                     "05_mixed_services_std_ports.pcap"])
def test_banners_equal_tsharks_on_both_sides(capture: str) -> None:
    run = subprocess.run(["tshark", "-r", str(captures_dir() / capture), "-Y", "ssh.protocol",
                          "-T", "fields", "-e", "tcp.stream", "-e", "tcp.srcport", "-e",
                          "ssh.protocol"], capture_output=True, text=True, timeout=120)
    want = {(s, p): proto for s, p, proto in (line.split("\t")
                                              for line in run.stdout.splitlines())}
    payloads = first_payloads(capture)
    rng = random.Random(capture)
    for key, proto in want.items():
        banner = parse_ssh_banner(payloads[key])
        assert banner is not None and banner.protocol == proto, key
        parser = SshBannerParser()
        results = [parser.feed(c) for c in random_chunks(payloads[key], rng, 7)]
        assert [r for r in results if r is not None] == [banner]
    # Nothing else in the capture reads as a banner.
    others = {k for k, data in payloads.items() if parse_ssh_banner(data) is not None}
    assert others == set(want)
    assert len(want) == {"07_ssh_bruteforce_sshguess.pcap": 22}.get(capture, 4)


def test_fields_of_a_banner() -> None:
    b = parse_ssh_banner(DEBIAN)
    assert (b.protocol, b.proto_version, b.software, b.comments) == (
        "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", "2.0", "OpenSSH_9.2p1", "Debian-2+deb12u3")
    b = parse_ssh_banner(b"SSH-1.99-Cisco-1.25\n")  # bare LF, dashes in the software
    assert (b.proto_version, b.software, b.comments) == ("1.99", "Cisco-1.25", "")


def test_lines_before_the_servers_banner_are_skipped_within_bounds() -> None:
    pre = b"Welcome\r\nauthorised use only\r\n"
    assert parse_ssh_banner(pre + DEBIAN).software == "OpenSSH_9.2p1"
    too_many = b"x\r\n" * PRE_LINES_MAX + DEBIAN
    assert parse_ssh_banner(too_many) is None
    too_long = b"y" * 5000 + b"\r\n" + DEBIAN
    assert parse_ssh_banner(too_long) is None


def test_banner_line_is_at_most_255_bytes() -> None:
    fits = b"SSH-2.0-" + b"a" * (BANNER_MAX - 10) + b"\r\n"
    assert len(fits) == BANNER_MAX and parse_ssh_banner(fits) is not None
    over = b"SSH-2.0-" + b"a" * (BANNER_MAX - 9) + b"\r\n"
    assert parse_ssh_banner(over) is None
    parser = SshBannerParser()
    for _ in range(1000):  # a banner line that never ends: bounded, then given up
        parser.feed(b"SSH-2.0-" if not parser._cur else b"z" * 100)
        assert len(parser._line) <= BANNER_MAX
    assert parser.done and parser.result is None


@pytest.mark.parametrize("data", [b"", b"SSH-2.0", b"SSH-", b"SSH-2.0-x", b"GET / HTTP/1.1\r\n",
                                  b"SSH-\r\n", b"SSH--x\r\n", b"\x16\x03\x01" * 50])
def test_no_banner(data: bytes) -> None:
    assert parse_ssh_banner(data) is None


def test_a_banner_still_arriving_is_not_guessed() -> None:
    parser = SshBannerParser()
    assert parser.feed(DEBIAN[:-2]) is None and not parser.done
    assert parser.finish() is None
    assert parse_ssh_banner(DEBIAN[:-1], final=False) is None
    assert parse_ssh_banner(DEBIAN, final=False).software == "OpenSSH_9.2p1"


def test_hostile_banners_are_inert_and_fuzz_never_raises() -> None:
    b = parse_ssh_banner(b"SSH-2.0-\x1b]0;pwn\x07\x00\xff \x1b[2J\xc2\x9b\r\n")
    for text in (b.protocol, b.software, b.comments):
        assert text.isprintable() and "\x1b" not in text and "\x9b" not in text
    assert "\\x1b" in b.software and "\\x00" in b.software
    rng = random.Random(22)
    for _ in range(3000):
        data = bytearray(b"hello\r\n" + DEBIAN)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data))
            data[pos:pos + rng.randint(0, 2)] = rng.randbytes(rng.randint(0, 4))
        whole = parse_ssh_banner(bytes(data))
        parser = SshBannerParser()
        for chunk in random_chunks(bytes(data), rng, 9):
            parser.feed(chunk)
        assert parser.finish() == whole
        if whole is not None:
            assert whole.protocol.isprintable() and len(whole.protocol) <= BANNER_MAX
