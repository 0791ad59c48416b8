"""Follow stream (netmon.ingest.follow): TCP reassembled per direction by sequence
number as tshark's ``-z follow`` does, with gap chunks where bytes are missing; UDP
datagram by datagram. Synthetic segments (chunked, reordered, retransmitted, snapped,
lost) and real captures against tshark's own follow output."""

from __future__ import annotations

import ipaddress
import random
import re
import subprocess

import pytest

from netmon.core.link import FollowChunk
from netmon.core.text import payload_ascii
from netmon.core.values import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN
from netmon.ingest.follow import follow_frames
from netmon.ingest.keptpackets import RingFrame
from netmon.ingest.linktypes import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL
from netmon.ingest.pcapstream import PcapStreamDecoder
from netmon.testing.frames import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ethernet,
    ipv4,
    ipv6,
    sll,
    tcp,
    udp,
)
from tests.conftest import captures_dir

C, S = "10.0.0.1", "10.0.0.2"
A = (ipaddress.ip_address(C).packed, 40000)
B = (ipaddress.ip_address(S).packed, 80)
ISN_C, ISN_S = 1000, 0xFFFFFF00  # the server's numbers wrap past 2**32 mid-stream


def seg(n: int, from_client: bool, seq: int, data: bytes = b"", *, flags: int = TCP_ACK,
        ack: int = 0, snap: int | None = None) -> RingFrame:
    src, dst = (C, S) if from_client else (S, C)
    sp, dp = (A[1], B[1]) if from_client else (B[1], A[1])
    frame = ethernet(ipv4(src, dst, PROTO_TCP, tcp(sp, dp, flags=flags, seq=seq, ack=ack,
                                                    payload=data)), ETHERTYPE_IPV4)
    kept = frame if snap is None else frame[:snap]
    return RingFrame(n, float(n), len(frame), LINKTYPE_ETHERNET, kept)


def conversation(request: bytes, response: bytes, mss: int = 7) -> list[RingFrame]:
    """A whole connection: handshake, request and response in ``mss``-byte segments,
    every one acknowledged, FIN both ways."""
    frames = [seg(0, True, ISN_C, flags=TCP_SYN),
              seg(1, False, ISN_S, flags=TCP_SYN | TCP_ACK, ack=ISN_C + 1),
              seg(2, True, ISN_C + 1, ack=ISN_S + 1)]
    cs, ss = ISN_C + 1, ISN_S + 1
    for i in range(0, len(request), mss):
        frames.append(seg(len(frames), True, cs + i, request[i:i + mss], ack=ss,
                          flags=TCP_ACK | TCP_PSH))
    cs += len(request)
    frames.append(seg(len(frames), False, ss, ack=cs))
    for i in range(0, len(response), mss):
        frames.append(seg(len(frames), False, ss + i, response[i:i + mss], ack=cs))
    ss += len(response)
    frames.append(seg(len(frames), True, cs, ack=ss))
    frames.append(seg(len(frames), True, cs, flags=TCP_FIN | TCP_ACK, ack=ss))
    frames.append(seg(len(frames), False, ss, flags=TCP_FIN | TCP_ACK, ack=cs + 1))
    frames.append(seg(len(frames), True, cs + 1, ack=ss + 1))
    return frames


def streams(chunks: tuple[FollowChunk, ...]) -> tuple[bytes, bytes]:
    return (b"".join(c.data for c in chunks if c.direction == 1),
            b"".join(c.data for c in chunks if c.direction == -1))


def gaps(chunks: tuple[FollowChunk, ...]) -> list[tuple[int, int]]:
    return [(c.direction, c.missing) for c in chunks if c.missing]


REQ = b"GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello\x00\x01world"


def test_in_order_segments_are_one_chunk_each_alternating_by_direction() -> None:
    frames = conversation(REQ, RESP)
    out = follow_frames(frames, PROTO_TCP, A, B)
    assert streams(out.chunks) == (REQ, RESP)
    assert not gaps(out.chunks) and not any(c.packets for c in out.chunks)
    assert [c.data for c in out.chunks] == [REQ[i:i + 7] for i in range(0, len(REQ), 7)] + [
        RESP[i:i + 7] for i in range(0, len(RESP), 7)]
    assert [c.direction for c in out.chunks] == [1] * 7 + [-1] * 8
    assert out.frames_used == len(frames) and out.frames_skipped == 0
    # Either side may be named first: directions follow the initiator given.
    swapped = follow_frames(frames, PROTO_TCP, B, A)
    assert streams(swapped.chunks) == (RESP, REQ)


def test_reordered_and_retransmitted_segments_in_any_order_give_the_stream_once() -> None:
    base = conversation(REQ, RESP, mss=5)
    handshake, rest = base[:3], base[3:]
    rng = random.Random(15)
    for _ in range(200):
        data = [f for f in rest if len(f.data) > 54]
        # Shuffle the data segments within each direction, duplicate some, keep the
        # ACK-only packets out (an ACK past a hole would declare it missing).
        client = [f for f in data if f.data[26:30] == ipaddress.ip_address(C).packed]
        server = [f for f in data if f not in client]
        rng.shuffle(client)
        rng.shuffle(server)
        client += rng.sample(client, 3)
        server = rng.sample(server, 4) + server
        out = follow_frames(handshake + client + server, PROTO_TCP, A, B)
        assert streams(out.chunks) == (REQ, RESP)
        assert not gaps(out.chunks)


def test_overlapping_retransmission_adds_only_its_new_bytes() -> None:
    s = ISN_C + 1
    frames = [seg(0, True, ISN_C, flags=TCP_SYN),
              seg(1, True, s, b"abcdef"),
              seg(2, True, s + 3, b"defghij"),  # overlaps 3 bytes, brings 4 new
              seg(3, True, s, b"abcdefghij"),  # nothing new
              seg(4, True, s + 12, b"mn"),  # ahead: waits
              seg(5, True, s + 8, b"ijkl")]  # fills the hole and overlaps 2 bytes
    out = follow_frames(frames, PROTO_TCP, A, B)
    assert [c.data for c in out.chunks] == [b"abcdef", b"ghij", b"kl", b"mn"]


def test_a_hole_the_receiver_acknowledged_becomes_a_gap_where_it_was() -> None:
    frames = conversation(REQ, RESP)
    lost = [f for f in frames if f.seq in (5, 12, 13)]  # one request, two response segments
    kept = [f for f in frames if f not in lost]
    out = follow_frames(kept, PROTO_TCP, A, B)
    assert gaps(out.chunks) == [(1, 7), (-1, 14)]
    c2s, s2c = streams(out.chunks)
    assert c2s == REQ[:14] + REQ[21:] and s2c == RESP[:7] + RESP[21:]
    # The gap sits between the bytes around it, in arrival order.
    pos = next(i for i, c in enumerate(out.chunks) if c.missing == 7)
    assert out.chunks[pos - 1].data == REQ[7:14] and out.chunks[pos + 1].data == REQ[21:28]


def test_bytes_lost_at_the_end_or_never_acknowledged_are_still_a_gap() -> None:
    frames = conversation(REQ, RESP)
    resp_segments = [f for f in frames if f.seq >= 10 and len(f.data) > 54 and
                     f.data[26:30] == ipaddress.ip_address(S).packed]
    # The last response segment and everything after it are not kept.
    cut = resp_segments[-1].seq
    out = follow_frames([f for f in frames if f.seq < cut], PROTO_TCP, A, B)
    assert gaps(out.chunks) == []  # nothing says those bytes existed
    # Its acknowledgement was kept: the bytes were sent, and are missing.
    ack_only = [f for f in frames if f.seq < cut or f.seq == cut + 1]
    out = follow_frames(ack_only, PROTO_TCP, A, B)
    assert gaps(out.chunks) == [(-1, len(RESP) - (len(resp_segments) - 1) * 7)]
    # A segment waiting behind a hole nobody acknowledged: the hole is a gap at the end.
    no_acks = [f for f in frames if len(f.data) > 54 and f.seq != 4]
    out = follow_frames(no_acks, PROTO_TCP, A, B)
    assert (1, 7) in gaps(out.chunks)
    assert streams(out.chunks)[0] == REQ[:7] + REQ[14:]


def test_snapped_payload_keeps_its_prefix_and_counts_the_rest() -> None:
    s = ISN_C + 1
    frames = [seg(0, True, ISN_C, flags=TCP_SYN),
              seg(1, True, s, b"0123456789", snap=14 + 20 + 20 + 4),  # 4 payload bytes kept
              seg(2, True, s + 10, b"abc"),
              seg(3, True, s + 13, b"XYZXYZ", snap=14 + 20 + 10)]  # TCP header cut
    out = follow_frames(frames, PROTO_TCP, A, B)
    assert [(c.data, c.missing) for c in out.chunks] == [
        (b"0123", 0), (b"", 6), (b"abc", 0)]
    assert out.frames_skipped == 1  # no sequence number in it: it cannot be placed
    # A header cut after the flags: the sequence number places the missing payload.
    frames[3] = seg(3, True, s + 13, b"XYZXYZ", snap=14 + 20 + 16)
    out = follow_frames(frames, PROTO_TCP, A, B)
    assert out.chunks[-1] == FollowChunk(1, missing=6)


def test_packets_before_the_first_kept_one_are_noted() -> None:
    frames = conversation(REQ, RESP)[5:]
    out = follow_frames(frames, PROTO_TCP, A, B)
    assert out.chunks[0] == FollowChunk(0, packets=5)
    assert streams(out.chunks)[0] == REQ[14:]


def test_other_flows_and_link_types_and_ipv6() -> None:
    v6c, v6s = "2001:db8::1", "2001:db8::2"
    a6 = (ipaddress.ip_address(v6c).packed, 5000)
    b6 = (ipaddress.ip_address(v6s).packed, 443)

    def f6(n: int, fwd: bool, seq: int, data: bytes, flags: int = TCP_ACK) -> RingFrame:
        src, dst, sp, dp = (v6c, v6s, 5000, 443) if fwd else (v6s, v6c, 443, 5000)
        raw = sll(ipv6(src, dst, PROTO_TCP, tcp(sp, dp, flags=flags, seq=seq, payload=data)),
                  ETHERTYPE_IPV6)
        return RingFrame(n, 0.0, len(raw), LINKTYPE_LINUX_SLL, raw)

    other = seg(2, True, 5, b"not this flow")
    frames = [f6(0, True, 9, b"", TCP_SYN), f6(1, True, 10, b"hello"), other,
              f6(3, False, 77, b"", TCP_SYN | TCP_ACK), f6(4, False, 78, b"world")]
    out = follow_frames(frames, PROTO_TCP, a6, b6)
    assert streams(out.chunks) == (b"hello", b"world")
    assert out.frames_skipped == 1
    with pytest.raises(ValueError, match="TCP and UDP"):
        follow_frames(frames, 1, a6, b6)


def test_udp_is_each_datagram_in_order_with_notes_for_packets_not_kept() -> None:
    def dg(n: int, fwd: bool, payload: bytes, snap: int | None = None) -> RingFrame:
        src, dst, sp, dp = (C, S, 5353, 53) if fwd else (S, C, 53, 5353)
        raw = ethernet(ipv4(src, dst, PROTO_UDP, udp(sp, dp, payload)), ETHERTYPE_IPV4)
        return RingFrame(n, 0.0, len(raw), LINKTYPE_ETHERNET, raw if snap is None else raw[:snap])

    a, b = (A[0], 5353), (B[0], 53)
    frames = [dg(0, True, b"query"), dg(1, False, b"answer"), dg(4, True, b"q2"),
              dg(5, False, b"x" * 100, snap=14 + 28 + 30), dg(6, True, b"")]
    out = follow_frames(frames, PROTO_UDP, a, b)
    assert list(out.chunks) == [
        FollowChunk(1, b"query"), FollowChunk(-1, b"answer"), FollowChunk(0, packets=2),
        FollowChunk(1, b"q2"), FollowChunk(-1, b"x" * 30), FollowChunk(-1, missing=70)]
    assert out.frames_used == 5


# ---------------------------------------------------------------- against tshark

def capture_frames(name: str) -> list[RingFrame]:
    """Every frame of a shared capture, read by netmon's own decoder (``seq``: the
    frame's number in the file, from 0)."""
    dec = PcapStreamDecoder()
    b = dec.feed_batch((captures_dir() / name).read_bytes())
    assert b.raw_off is not None
    out = []
    for i, (chunk, off, ln) in enumerate(zip(b.raw_chunk.tolist(), b.raw_off.tolist(),
                                             b.raw_len.tolist(), strict=True)):
        out.append(RingFrame(i, float(b.ts[i]), int(b.wirelen[i]), b.linktypes[chunk],
                             b.bufs[chunk][off:off + ln]))
    return out


def tshark_follow(path: str, proto: str, stream: int) -> tuple[list[str], list[tuple[int, str]]]:
    """tshark's ``-z follow,PROTO,ascii,N``: the two nodes and the chunks (direction,
    text), parsed by the byte counts it prints before each chunk."""
    out = subprocess.run(["tshark", "-r", path, "-q", "-z", f"follow,{proto},ascii,{stream}"],
                         capture_output=True, check=True).stdout.decode("ascii")
    head, _, body = out.partition("Node 1: ")
    nodes = [re.search(r"Node 0: (\S+)", head).group(1)]  # type: ignore[union-attr]
    node1, _, body = body.partition("\n")
    nodes.append(node1)
    chunks = []
    pos = 0
    while not body.startswith("=====", pos):
        nl = body.index("\n", pos)
        count = body[pos:nl]
        n = int(count.lstrip("\t"))
        chunks.append((-1 if count.startswith("\t") else 1, body[nl + 1:nl + 1 + n]))
        pos = nl + 1 + n
        assert body[pos] == "\n"
        pos += 1
    return nodes, chunks


def endpoint(text: str) -> tuple[bytes, int]:
    addr, _, port = text.rpartition(":")
    return ipaddress.ip_address(addr.strip("[]")).packed, int(port)


def as_tshark(chunks: tuple[FollowChunk, ...]) -> list[tuple[int, str]]:
    """Our chunks printed the way tshark prints them (a gap as its dummy chunk)."""
    out = []
    for c in chunks:
        if c.missing:
            out.append((c.direction, f"[{c.missing} bytes missing in capture file]."))
        else:
            out.append((c.direction, payload_ascii(c.data)))
    return out


@pytest.mark.parametrize("stream", [0, 1, 2, 3, 9, 16])
def test_tcp_follow_equals_tshark_for_http_flows_of_a_real_capture(stream: int) -> None:
    path = captures_dir() / "01_http_espn.pcapng"
    nodes, expected = tshark_follow(str(path), "tcp", stream)
    out = follow_frames(capture_frames(path.name), PROTO_TCP, endpoint(nodes[0]),
                        endpoint(nodes[1]))
    assert len(expected) > 1
    assert as_tshark(out.chunks) == expected
    # Stream 3 lost 3038 bytes in the capture; tshark notes them too.
    assert [c.missing for c in out.chunks if c.missing] == ([3038] if stream == 3 else [])


def test_udp_follow_equals_tshark_for_a_real_capture() -> None:
    path = captures_dir() / "05_mixed_services_std_ports.pcap"
    frames = capture_frames(path.name)
    done = 0
    for stream in range(6):
        nodes, expected = tshark_follow(str(path), "udp", stream)
        out = follow_frames(frames, PROTO_UDP, endpoint(nodes[0]), endpoint(nodes[1]))
        data = [c for c in out.chunks if not c.packets]
        assert as_tshark(tuple(data)) == expected, stream
        done += bool(expected)
    assert done >= 3
