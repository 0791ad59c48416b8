"""The HTTP/1.x request parser against tshark on every HTTP connection of the shared
captures (Host, method, target, User-Agent of each connection's first request, from the
client's reassembled payload), chunk independence, the 8 KB bound, hostile headers."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections import defaultdict

import pytest

from netmon.core.text import NAME_MAX, safe_text
from netmon.names.http import (
    HOST_MAX,
    HTTP_MAX,
    TARGET_MAX,
    HttpRequestParser,
    parse_http_request,
    parse_http_response,
)
from netmon.testing.names import random_chunks
from tests.conftest import capture_files, captures_dir

CURL = b"GET /hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\n\r\n"


def tshark_fields(path, display_filter: str, *fields: str) -> list[list[str]]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    args = [a for f in fields for a in ("-e", f)]
    run = subprocess.run(["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields",
                          "-E", "occurrence=f", *args], capture_output=True, text=True,
                         timeout=120)
    return [line.split("\t") for line in run.stdout.splitlines()]


def client_payloads(path, clients: dict[str, str]) -> dict[str, bytes]:
    """Each stream's client-to-server payload, reassembled by sequence number (so
    retransmissions and duplicates of the same segment count once)."""
    segments: dict[str, dict[int, bytes]] = defaultdict(dict)
    for stream, sport, seq, payload in tshark_fields(
            path, "tcp.len>0", "tcp.stream", "tcp.srcport", "tcp.seq", "tcp.payload"):
        if clients.get(stream) == sport:
            segments[stream].setdefault(int(seq), bytes.fromhex(payload.replace(":", "")))
    out = {}
    for stream, parts in segments.items():
        data, next_seq = bytearray(), min(parts)
        for seq in sorted(parts):
            if seq > next_seq:
                break  # a hole: what follows it was never captured
            data += parts[seq][next_seq - seq:]
            next_seq = max(next_seq, seq + len(parts[seq]))
        out[stream] = bytes(data)
    return out


HTTP_CAPTURES = [f for f in capture_files() if not f.startswith("14_")]  # 14 is a cut 04


@pytest.mark.parametrize("capture", HTTP_CAPTURES)
def test_first_request_of_every_connection_equals_tsharks(capture: str) -> None:
    path = captures_dir() / capture
    first: dict[str, list[str]] = {}
    for row in tshark_fields(path, "http.request && tcp", "tcp.stream", "tcp.srcport", "http.host",
                             "http.request.method", "http.request.uri", "http.user_agent"):
        first.setdefault(row[0], row)
    payloads = client_payloads(path, {s: row[1] for s, row in first.items()})
    rng = random.Random(capture)
    for stream, (_, _, host, method, uri, agent) in first.items():
        data = payloads[stream]
        req = parse_http_request(data)
        assert req is not None and req.complete, (stream, data[:200])
        assert (req.host, req.method) == (host, method), stream
        assert req.target == safe_text(uri, TARGET_MAX) and req.user_agent == agent[:NAME_MAX]
        parser = HttpRequestParser()
        for chunk in random_chunks(data[:HTTP_MAX], rng, 200):
            parser.feed(chunk)
        assert parser.finish() == req
    wanted = {"01_http_espn.pcapng": 25, "04_mixed_lan_android_1kxun.pcap": 86,
              "05_mixed_services_std_ports.pcap": 2, "10_vlan_mpls_mixed.pcap": 2,
              "11_vlan_tuple_collisions.pcap": 1, "13_nflog_http.pcap": 1}
    assert len(first) == wanted.get(capture, 0)
    # HTTP over UDP (SSDP's M-SEARCH): one request per datagram.
    for payload, host in tshark_fields(path, "http.request && udp", "udp.payload", "http.host"):
        assert parse_http_request(bytes.fromhex(payload)).host == host


def test_curl_request_and_header_case() -> None:
    req = parse_http_request(CURL)
    assert (req.method, req.target, req.version, req.host, req.user_agent, req.complete) == (
        "GET", "/hello?x=1", "HTTP/1.1", "127.0.0.1:8080", "curl/7.88.1", True)
    odd = b"POST /a HTTP/1.0\nhOST:   example.com  \nuser-AGENT:x\nHost: second\n\nbody"
    req = parse_http_request(odd)
    assert (req.host, req.user_agent, req.complete) == ("example.com", "x", True)
    assert parse_http_request(b"GET /\r\n").version == ""  # HTTP/0.9


@pytest.mark.parametrize("data", [
    b"", b"\x16\x03\x01\x02\x00\x01", b"SSH-2.0-x\r\n", b"get / HTTP/1.1\r\n\r\n",
    b"GET\r\n\r\n", b"GET  \r\n", b"A" * 30 + b" / HTTP/1.1\r\n\r\n", bytes(100)])
def test_not_http_gives_none(data: bytes) -> None:
    assert parse_http_request(data) is None
    parser = HttpRequestParser()
    parser.feed(data)
    assert parser.finish() is None


def test_not_http_is_decided_on_the_first_bytes() -> None:
    parser = HttpRequestParser()
    assert parser.feed(b"\x16") is None and parser.done
    parser = HttpRequestParser()
    assert parser.feed(b"GE") is None and not parser.done
    assert parser.feed(b"T / HTTP/1.1\r\nHost: h\r\n") is None and not parser.done
    assert parser.feed(b"\r\n").host == "h" and parser.done


@pytest.mark.parametrize("seed", range(5))
def test_random_splits_give_the_same_request(seed: int) -> None:
    rng = random.Random(seed)
    cut = b"GET /big HTTP/1.1\r\nX: " + b"y" * 9000 + b"\r\nHost: late\r\n\r\n"
    for data in (CURL, CURL[:-2], CURL + b"GET /second HTTP/1.1\r\nHost: other\r\n\r\n", cut,
                 b"GET / HTTP/1.1\r\nHost: a\r\nHo", b"GET /x"):
        want = parse_http_request(data)
        for _ in range(50):
            parser = HttpRequestParser()
            for chunk in random_chunks(data, rng, 50):
                parser.feed(chunk)
            assert parser.finish() == want
    assert parse_http_request(cut).complete is False and parse_http_request(cut).host == ""
    # A Host cut by the end of the bytes seen is not given (it may be partial).
    assert parse_http_request(b"GET / HTTP/1.1\r\nHost: exa").host == ""


def test_the_parser_keeps_at_most_8_kb() -> None:
    parser = HttpRequestParser()
    parser.feed(b"GET / HTTP/1.1\r\n")
    for _ in range(100):
        parser.feed(b"X-Pad: " + b"p" * 1000 + b"\r\n")
        assert len(parser._buf) <= HTTP_MAX
    assert parser.done and parser.result.complete is False


def test_hostile_values_are_capped_and_inert() -> None:
    evil = "\x1b]0;owned\x07\x1b[2J"
    req = parse_http_request(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: " + evil.encode()
                             + b"\x00\xff.example\r\nUser-Agent: " + b"\x9b" * 500 + b"\r\n\r\n")
    assert req is not None and len(req.target) == TARGET_MAX
    for text in (req.target, req.host, req.user_agent):
        assert text.isprintable() and "\x1b" not in text and len(text) <= HOST_MAX
    assert "\\x1b" in req.host and "\\x00" in req.host and "\\xff" in req.host


def test_fuzzed_requests_never_raise() -> None:
    rng = random.Random(80)
    for _ in range(3000):
        data = bytearray(CURL)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data))
            if rng.random() < 0.6:
                data[pos] = rng.choice([0, 0x0A, 0x0D, 0x20, 0x3A, rng.randrange(256)])
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 5))
        req = parse_http_request(bytes(data))
        parser = HttpRequestParser()
        for chunk in random_chunks(bytes(data), rng, 30):
            parser.feed(chunk)
        assert parser.finish() == req
        for text in (req.method, req.target, req.host, req.user_agent) if req else ():
            assert text.isprintable() and len(text) <= HOST_MAX


def test_response_status_line() -> None:
    resp = parse_http_response(b"HTTP/1.1 404 Not Found\r\nServer: x\r\n\r\n")
    assert (resp.version, resp.status, resp.reason) == ("HTTP/1.1", 404, "Not Found")
    assert parse_http_response(b"HTTP/1.0 200\r\n").reason == ""
    assert parse_http_response(b"HTTP/1.1 2000 x\r\n") is None
    assert parse_http_response(b"HTTP/1.1 200 OK") is None  # the line has not ended
    assert parse_http_response(b"SSH-2.0-x\r\n") is None
    assert "\x1b" not in parse_http_response(b"HTTP/1.1 200 \x1b[2J\r\n").reason
