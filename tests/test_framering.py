"""The frame ring and the raw-frame columns of PacketBatch: frames come back byte for
byte, per flow, in order; the ring stays within its budget and forgets oldest first."""

from __future__ import annotations

import random

import numpy as np
import pytest

from netmon.flows.table import FlowTable
from netmon.ingest.batch import PacketBatch
from netmon.ingest.framering import ROW_BYTES, FrameRing
from netmon.ingest.pcapstream import PcapStreamDecoder
from netmon.ingest.pcapwrite import pcap_header, pcap_record, pcapng_epb, pcapng_idb, pcapng_shb
from netmon.testing.frames import ethernet, ipv4, tcp, udp

SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01


def tcp_frame(src: str, sport: int, dst: str, dport: int, flags: int,
              payload: bytes = b"") -> bytes:
    seg = tcp(sport, dport, flags=flags, payload=payload)
    return ethernet(ipv4(src, dst, 6, seg), 0x0800)


def conversation(n: int, sport: int = 40000, size: int = 100) -> list[bytes]:
    """A TCP conversation: handshake, then ``n`` data segments alternating sides."""
    a, b = "10.0.0.1", "10.0.0.2"
    frames = [tcp_frame(a, sport, b, 80, SYN), tcp_frame(b, 80, a, sport, SYN | ACK),
              tcp_frame(a, sport, b, 80, ACK)]
    for i in range(n):
        if i % 2:
            frames.append(tcp_frame(b, 80, a, sport, PSH | ACK, bytes(size)))
        else:
            frames.append(tcp_frame(a, sport, b, 80, PSH | ACK, bytes(size)))
    return frames


def pcap_bytes(frames: list[bytes], t0: float = 1_700_000_000.0) -> bytes:
    return pcap_header(1) + b"".join(pcap_record(t0 + i * 0.001, f)
                                     for i, f in enumerate(frames))


class Pipeline:
    """Decoder -> flow table -> ring, as the engine wires them."""

    def __init__(self, budget: int = 1 << 20) -> None:
        self.decoder = PcapStreamDecoder()
        self.table = FlowTable()
        self.ring = FrameRing(budget)
        self.appended = 0

    def count(self, batch: PacketBatch) -> None:
        slots, lo_first, seq = self.table.add_batch(batch)
        self.ring.append(batch, self.table.flow_id[slots],
                         lo_first == self.table.a_is_lo[slots], seq)
        self.appended += len(batch)

    def feed(self, data: bytes, chunk: int | None = None) -> None:
        chunk = chunk or len(data)
        for i in range(0, len(data), chunk):
            self.count(self.decoder.feed_batch(data[i:i + chunk]))

    def flow_ids(self) -> list[int]:
        return sorted(v.flow_id for v in self.table.live_views())


def test_a_flows_packets_come_back_in_order_with_direction_flags_and_bytes() -> None:
    frames = conversation(4)
    other = [tcp_frame("10.0.0.9", 5000, "10.0.0.2", 443, SYN)]
    p = Pipeline()
    p.feed(pcap_bytes(frames[:3] + other + frames[3:]))
    fid = next(v.flow_id for v in p.table.live_views() if v.port_b == 80)
    got = p.ring.packets_of(fid)
    assert got.seq.tolist() == list(range(7))
    assert got.a2b.tolist() == [True, False, True, True, False, True, False]
    assert got.flags[:3].tolist() == [SYN, SYN | ACK, ACK]
    assert got.size.tolist() == [len(f) for f in frames]
    assert got.dropped_older == 0 and got.has_bytes.all()
    out = p.ring.frames_of(fid)
    assert [f.data for f in out] == frames
    assert {f.linktype for f in out} == {1}
    assert out[1].ts == pytest.approx(1_700_000_000.001)
    assert [f.seq for f in p.ring.frames_of(fid, upto_seq=4, limit=2)] == [3, 4]


@pytest.mark.parametrize("seed", range(4))
def test_frames_are_the_same_however_the_stream_is_chunked(seed: int) -> None:
    rng = random.Random(seed)
    convs = [conversation(rng.randrange(1, 30), sport=41000 + i, size=rng.randrange(0, 900))
             for i in range(6)]
    frames = [f for c in convs for f in c]
    rng.shuffle(frames)  # interleave the flows (handshakes out of order is fine here)
    p = Pipeline()
    data = pcap_bytes(frames)
    pos = 0
    while pos < len(data):
        step = rng.choice((1, 7, 64, 1500, 20000))
        p.count(p.decoder.feed_batch(data[pos:pos + step]))
        pos += step
    seen = []
    for fid in p.flow_ids():
        ring_frames = p.ring.frames_of(fid)
        assert [f.seq for f in ring_frames] == list(range(len(ring_frames)))
        seen.extend(f.data for f in ring_frames)
    assert sorted(seen) == sorted(frames)


def test_the_budget_bounds_the_ring_and_the_oldest_batches_go_first() -> None:
    budget = 64 << 10
    p = Pipeline(budget)
    frames = conversation(2000, size=200)
    data = pcap_bytes(frames)
    fid = None
    for i in range(0, len(data), 8000):
        p.count(p.decoder.feed_batch(data[i:i + 8000]))
        assert p.ring.nbytes <= budget or len(p.ring._segments) == 1
        fid = fid or p.flow_ids()[0]
        got = p.ring.packets_of(fid)
        # What is left is the newest packets, contiguous, ending with the last one.
        assert got.seq.tolist() == list(range(got.dropped_older, got.dropped_older + len(got)))
        assert got.seq[-1] == p.table.pkts_ab[0] + p.table.pkts_ba[0] - 1
    assert p.ring.evicted_packets > 0
    assert len(p.ring) + p.ring.evicted_packets == p.appended == len(frames)
    assert p.ring.buffer_bytes + len(p.ring) * ROW_BYTES == p.ring.nbytes


def test_a_batch_split_at_a_tick_keeps_its_buffer_once() -> None:
    p = Pipeline(1 << 20)
    batch = p.decoder.feed_batch(pcap_bytes(conversation(10)))
    assert len(batch.bufs) == 1
    p.count(batch.head(5))
    p.count(batch.tail(5))
    assert p.ring.buffer_bytes == len(batch.bufs[0])
    p.ring._evict_oldest()  # the first half goes; the buffer stays for the second
    assert p.ring.buffer_bytes == len(batch.bufs[0])
    assert len(p.ring.frames_of(p.flow_ids()[0])) == 8
    p.ring.clear()
    assert p.ring.buffer_bytes == 0 and len(p.ring) == 0 and p.ring.nbytes == 0


def test_packets_without_bytes_are_listed_but_cannot_be_dissected() -> None:
    p = Pipeline()
    recs = PcapStreamDecoder().feed(pcap_bytes(conversation(3)))
    p.count(PacketBatch.from_records(recs))
    fid = p.flow_ids()[0]
    got = p.ring.packets_of(fid)
    assert len(got) == 6 and not got.has_bytes.any()
    assert p.ring.frames_of(fid) == []
    assert p.ring.buffer_bytes == 0


def test_a_zero_budget_keeps_nothing() -> None:
    p = Pipeline(0)
    p.feed(pcap_bytes(conversation(3)))
    assert len(p.ring) == 0 and p.ring.nbytes == 0
    assert p.ring.packets_of(1).dropped_older == -1


def test_index_columns_grow_and_compact() -> None:
    p = Pipeline(10 << 20)
    data = pcap_bytes(conversation(5000, size=10))
    p.feed(data, chunk=3000)
    assert len(p.ring) == 5003
    assert p.ring._cap >= len(p.ring)
    fid = p.flow_ids()[0]
    assert [f.seq for f in p.ring.frames_of(fid)] == list(range(5003))


def test_pcapng_interfaces_with_different_link_types() -> None:
    ip_only = ipv4("10.0.0.1", "10.0.0.2", 17, udp(53000, 53, b"q"))
    eth = ethernet(ipv4("10.0.0.2", "10.0.0.1", 17, udp(53, 53000, b"r")),
                         0x0800)
    data = (pcapng_shb() + pcapng_idb(101) + pcapng_idb(1)
            + pcapng_epb(0, 1.0, ip_only) + pcapng_epb(1, 1.5, eth))
    p = Pipeline()
    for i in range(0, len(data), 13):  # blocks complete at odd places
        p.count(p.decoder.feed_batch(data[i:i + 13]))
    fid = p.flow_ids()[0]
    out = p.ring.frames_of(fid)
    assert [(f.linktype, f.data) for f in out] == [(101, ip_only), (1, eth)]
    assert p.ring.packets_of(fid).a2b.tolist() == [True, False]


def test_concat_head_and_rows_keep_each_rows_bytes() -> None:
    d1, d2 = PcapStreamDecoder(), PcapStreamDecoder()
    f1, f2 = conversation(3, sport=1111), conversation(4, sport=2222)
    b1 = d1.feed_batch(pcap_bytes(f1))
    b2 = d2.feed_batch(pcap_bytes(f2))
    plain = PacketBatch.from_records(d1.feed(b""))  # nothing new: an empty batch
    recs = PacketBatch.from_records(PcapStreamDecoder().feed(pcap_bytes(f1[:2])))
    both = PacketBatch.concat([b1, plain, recs, b2])
    assert len(both.bufs) == 2 and both.buf is None and both.linktype == 1
    expect = [*f1, None, None, *f2]

    def frame(b: PacketBatch, i: int) -> bytes | None:
        c = int(b.raw_chunk[i])
        if c < 0:
            return None
        off, n = int(b.raw_off[i]), int(b.raw_len[i])
        return b.bufs[c][off:off + n]

    assert [frame(both, i) for i in range(len(both))] == expect
    picked = both.rows(np.array([8, 0, 6]))
    assert [frame(picked, i) for i in range(3)] == [expect[8], expect[0], expect[6]]
    assert [frame(both.head(2), i) for i in range(2)] == expect[:2]
    assert [frame(both.tail(9), i) for i in range(len(both) - 9)] == expect[9:]
    assert b1.buf is b1.bufs[0] and b1.raw_nbytes == len(b1.bufs[0])
    assert PacketBatch.concat([b1, b1]).raw_nbytes == len(b1.bufs[0])
