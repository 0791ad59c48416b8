"""The packet store and the raw-frame columns of PacketBatch: every flow keeps its first
and most recent packets, byte for byte up to the snap length, with exact metadata;
the store stays within its budget and gives way fairly (stale, ended, biggest first)."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from netmon.flows.table import FlowTable
from netmon.ingest.batch import PacketBatch
from netmon.ingest.keptpackets import TIER_FIRST, TIER_RECENT
from netmon.ingest.packetarena import BLOCK
from netmon.ingest.packetevict import plan
from netmon.ingest.packetstore import LOW_WATER, ROW_BYTES, SNAP, PacketStore, flow_counts
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
    """Decoder -> flow table -> store, as the engine wires them (``exact``: the engine's
    per-row flow totals; else the store sorts the batch itself)."""

    def __init__(self, budget: int = 1 << 20, exact: bool = True, **kw: int) -> None:
        self.decoder = PcapStreamDecoder()
        self.table = FlowTable(idle_timeout=1e9, active_timeout=1e9)
        self.store = PacketStore(budget, **kw)
        self.exact = exact
        self.appended = 0

    def count(self, batch: PacketBatch) -> None:
        t = self.table
        slots, lo_first, seq = t.add_batch(batch)
        total = t.pkts_ab[slots] + t.pkts_ba[slots] if self.exact else None
        self.store.append(batch, t.flow_id[slots], lo_first == t.a_is_lo[slots], seq, total)
        self.appended += len(batch)

    def feed(self, data: bytes, chunk: int | None = None) -> None:
        chunk = chunk or len(data)
        for i in range(0, len(data), chunk):
            self.count(self.decoder.feed_batch(data[i:i + chunk]))

    def flow_ids(self) -> list[int]:
        return sorted(v.flow_id for v in self.table.live_views())

    def flow_of(self, port: int) -> int:
        return next(v.flow_id for v in self.table.live_views()
                    if port in (v.port_a, v.port_b))


def kept_seqs(n: int, first: int = 32, recent: int = 32) -> list[int]:
    """What a flow of ``n`` packets keeps with room to spare."""
    return sorted(set(range(min(n, first))) | set(range(max(n - recent, 0), n)))


def test_a_flows_packets_come_back_in_order_with_exact_metadata_and_bytes() -> None:
    frames = conversation(4)
    other = [tcp_frame("10.0.0.9", 5000, "10.0.0.2", 443, SYN)]
    p = Pipeline()
    p.feed(pcap_bytes(frames[:3] + other + frames[3:]))
    fid = p.flow_of(80)
    got = p.store.packets_of(fid)
    assert got.seq.tolist() == list(range(7))
    assert got.a2b.tolist() == [True, False, True, True, False, True, False]
    assert got.flags.tolist() == [SYN, SYN | ACK, ACK] + [PSH | ACK] * 4
    assert got.proto.tolist() == [6] * 7
    assert got.size.tolist() == [len(f) for f in frames]
    t0 = 1_700_000_000.0
    assert got.ts.tolist() == pytest.approx([t0 + i * 0.001 for i in (0, 1, 2, 4, 5, 6, 7)])
    assert got.has_bytes.all() and (got.tier == TIER_FIRST).all() and got.newest == 6
    out = p.store.frames_of(fid)
    assert [f.data for f in out] == frames
    assert [f.wirelen for f in out] == [len(f) for f in frames]
    assert {f.linktype for f in out} == {1}
    assert out[1].ts == pytest.approx(t0 + 0.001)
    assert [f.seq for f in p.store.frames_of(fid, upto_seq=4, limit=2)] == [3, 4]
    assert p.store.packets_of(fid + 100).seq.tolist() == []


@pytest.mark.parametrize("seed", range(4))
def test_frames_are_the_same_however_the_stream_is_chunked(seed: int) -> None:
    rng = random.Random(seed)
    convs = [conversation(rng.randrange(1, 80), sport=41000 + i, size=rng.randrange(0, 1400))
             for i in range(6)]
    frames = {c[0]: c for c in convs}
    flat = [f for c in convs for f in c]
    rng.shuffle(flat)  # interleave the flows (handshakes out of order is fine here)
    p = Pipeline(exact=bool(seed % 2))
    data = pcap_bytes(flat)
    pos = 0
    while pos < len(data):
        step = rng.choice((1, 7, 64, 1500, 20000))  # frames end near buffer ends too
        p.count(p.decoder.feed_batch(data[pos:pos + step]))
        pos += step
    for fid in p.flow_ids():
        got = p.store.frames_of(fid)
        conv = next(c for c in convs if c[0] in [f.data for f in got])
        order = [f for f in flat if f in conv]  # the flow's packets as they came
        assert [f.seq for f in got] == kept_seqs(len(order))
        assert [f.data for f in got] == [order[i] for i in kept_seqs(len(order))]
    assert len(frames) == len(p.flow_ids())


def test_the_first_32_stay_and_the_recent_32_move_on() -> None:
    p = Pipeline()
    frames = conversation(297)  # 300 packets
    data = pcap_bytes(frames)
    for cut in range(0, len(data), 5000):
        p.count(p.decoder.feed_batch(data[cut:cut + 5000]))
        fid = p.flow_ids()[0]
        n = int(p.table.pkts_ab[0] + p.table.pkts_ba[0])
        got = p.store.packets_of(fid)
        assert got.seq.tolist() == kept_seqs(n)
        assert got.tier.tolist() == [TIER_FIRST if s < 32 else TIER_RECENT
                                     for s in kept_seqs(n)]
    assert [f.data for f in p.store.frames_of(fid)] == [frames[i] for i in kept_seqs(300)]
    # Stale recent rows are hidden at once and dropped at the next compaction.
    assert len(p.store) > 64
    p.store._compact(0, 0)
    assert len(p.store) == 64 and p.store.dropped["stale"] > 0
    assert [f.data for f in p.store.frames_of(fid)] == [frames[i] for i in kept_seqs(300)]


def test_other_first_and_recent_counts() -> None:
    p = Pipeline(first=5, recent=3)
    p.feed(pcap_bytes(conversation(17)), chunk=900)
    assert p.store.packets_of(p.flow_ids()[0]).seq.tolist() == kept_seqs(20, 5, 3)


def test_snapped_bytes_are_the_frames_prefix() -> None:
    big = tcp_frame("10.0.0.1", 40000, "10.0.0.2", 80, PSH | ACK, bytes(range(256)) * 12)
    small = tcp_frame("10.0.0.2", 80, "10.0.0.1", 40000, ACK)
    p = Pipeline(snap=300)
    p.feed(pcap_bytes([big, small, big]))
    out = p.store.frames_of(p.flow_ids()[0])
    assert [f.data for f in out] == [big[:300], small, big[:300]]
    assert [f.wirelen for f in out] == [len(big), len(small), len(big)]
    p = Pipeline()
    p.feed(pcap_bytes([big]))
    assert p.store.frames_of(p.flow_ids()[0])[0].data == big[:SNAP] and len(big) > SNAP


def test_width_classes_keep_small_frames_small() -> None:
    p = Pipeline()
    frames = conversation(20, size=0)  # ACK-sized frames: one 128-byte block each
    p.feed(pcap_bytes(frames))
    fid = p.flow_ids()[0]
    assert p.store._bt == 0  # held in the decoder's buffer until a compaction
    p.store._compact(0, 0)
    assert p.store._bt == len(frames) and p.store._held_bytes == 0
    assert p.store.used_bytes == len(frames) * (ROW_BYTES + BLOCK)
    assert [f.data for f in p.store.frames_of(fid)] == frames


def test_a_bulk_buffer_is_not_held_for_its_few_kept_frames() -> None:
    p = Pipeline(8 << 20)
    frames = conversation(2000, size=1400)
    data = pcap_bytes(frames)
    p.feed(data[:len(data) // 2])
    p.feed(data[len(data) // 2:])
    s = p.store
    # The second half keeps only its last 32 frames: gathered, not the whole buffer.
    assert s._held_bytes < 36 * 1500 + len(data) // 2 < len(data)
    assert [f.data for f in s.frames_of(p.flow_ids()[0])] == [frames[i] for i in
                                                                kept_seqs(len(frames))]


def test_the_budget_is_never_exceeded_and_all_of_it_counts() -> None:
    budget = 400 << 10
    p = Pipeline(budget)
    rng = random.Random(5)
    convs = [conversation(rng.randrange(1, 200), sport=20000 + i, size=rng.randrange(0, 1400))
             for i in range(300)]
    flat = [f for c in convs for f in c]
    rng.shuffle(flat)
    data = pcap_bytes(flat)
    for cut in range(0, len(data), 30000):
        p.count(p.decoder.feed_batch(data[cut:cut + 30000]))
        assert p.store.nbytes <= budget
        assert p.store.used_bytes <= p.store.nbytes
    s = p.store
    assert s.compactions > 0
    assert s.nbytes == (len(s._cols["flow"]) * ROW_BYTES + s._arena.nbytes + s._held_bytes
                        + s._ended.nbytes)
    for fid in p.flow_ids()[:50]:  # what is kept is still each flow's own, in order
        got = s.packets_of(fid)
        assert list(got.seq) == sorted(set(got.seq.tolist()))
        assert all(f.data in flat for f in s.frames_of(fid))


def many_flows(n: int, packets: int, size: int, sport: int = 10000) -> list[list[bytes]]:
    return [conversation(packets - 3, sport=sport + i, size=size) for i in range(n)]


def test_a_bulk_flow_cannot_push_out_the_first_packets_of_others() -> None:
    budget = int((288 << 10) / LOW_WATER)
    p = Pipeline(budget)
    # 150 small flows of 8 ~100-byte packets (~206 KB: 128-byte blocks) and a bulk flow
    # of 1450-byte ones, whose first 32 and recent 32 take ~50 KB each: not all fits
    # under the low-water mark (288 KB less the ended flows' reserve), the small flows'
    # packets and the bulk's first ones do.
    small = many_flows(150, 8, 50)
    bulk = conversation(20000, sport=9, size=1400)
    rng = random.Random(1)
    flat = [f for c in small for f in c]
    rng.shuffle(flat)
    stream = bulk[:3] + [x for pair in zip(flat, bulk[3:3 + len(flat)], strict=True)
                         for x in pair] + bulk[3 + len(flat):]
    p.feed(pcap_bytes(stream), chunk=64000)
    s = p.store
    s._compact(0, 0)
    assert s.nbytes <= budget
    assert s.dropped["recent"] > 0 and s.dropped["first"] == 0
    assert all(len(s.packets_of(p.flow_of(10000 + i))) == 8 for i in range(150))
    got = s.packets_of(p.flow_of(9))
    # The bulk flow lost recent packets, oldest first; it keeps its first 32.
    assert got.seq[:32].tolist() == list(range(32)) and 32 < len(got) < 64
    assert got.seq[32:].tolist() == list(range(len(bulk) - len(got) + 32, len(bulk)))


def test_ended_flows_go_first_oldest_first() -> None:
    budget = 800 << 10  # low-water mark ~120 KB: the ended flows cannot all stay
    p = Pipeline(budget)
    # Flows of 10 packets: ~3.3 KB each as captured (held buffers), 4.6 KB once copied
    # (3 in 128-byte blocks, 7 in 512-byte ones, and their index rows).
    old = many_flows(160, 10, 400, sport=10000)
    new = many_flows(70, 10, 400, sport=20000)
    p.feed(pcap_bytes([f for c in old for f in c]))
    old_ids = p.flow_ids()
    assert p.store.compactions == 0
    p.store.end_flows(np.array(old_ids[:80]))  # these ended first
    p.store.end_flows(np.array(old_ids[80:]))
    p.feed(pcap_bytes([f for c in new for f in c], t0=1_700_000_100.0)[24:])
    s = p.store
    assert s.nbytes <= budget and s.compactions > 0
    assert s.dropped["ended"] > 0 and s.dropped["recent"] == s.dropped["first"] == 0
    new_ids = [i for i in p.flow_ids() if i not in old_ids]
    assert len(new_ids) == 70 and all(len(s.packets_of(i)) == 10 for i in new_ids)
    left = [len(s.packets_of(i)) for i in old_ids]
    assert set(left) <= {0, 10}  # an ended flow goes whole
    # The oldest ended go first: a run of dropped flows, then the kept ones.
    assert left == sorted(left) and left[0] == 0 and left[-1] == 10
    assert s.dropped["ended"] == 10 * left.count(0)


def test_many_small_flows_hold_the_budget() -> None:
    budget = 2 << 20
    p = Pipeline(budget)
    frames = [udp_frame(i) for i in range(40000)]
    p.feed(pcap_bytes(frames), chunk=200000)
    s = p.store
    assert s.nbytes <= budget and s.dropped["first"] > 0
    s._compact(0, 0)  # every kept frame copied to the arena: a row and a block each
    assert s.used_bytes <= s.nbytes <= budget
    assert len(s) * (ROW_BYTES + BLOCK) <= budget * LOW_WATER


def udp_frame(i: int) -> bytes:
    return ethernet(ipv4(f"10.1.{i >> 8 & 255}.{i & 255}", "10.0.0.1", 17,
                         udp(1024 + (i >> 16), 53, b"q" * 30)), 0x0800)


def test_packets_without_bytes_are_listed_but_cannot_be_dissected() -> None:
    p = Pipeline()
    recs = PcapStreamDecoder().feed(pcap_bytes(conversation(3)))
    p.count(PacketBatch.from_records(recs))
    fid = p.flow_ids()[0]
    got = p.store.packets_of(fid)
    assert len(got) == 6 and not got.has_bytes.any()
    assert p.store.frames_of(fid) == []
    assert p.store._bt == 0


def test_a_zero_budget_keeps_nothing() -> None:
    p = Pipeline(0)
    p.feed(pcap_bytes(conversation(3)))
    assert len(p.store) == 0 and p.store.nbytes == 0
    assert p.store.packets_of(1).newest == -1


def test_flow_counts_match_the_tables() -> None:
    rng = np.random.default_rng(3)
    flow = rng.integers(0, 50, 3000)
    seq = np.empty(3000, dtype=np.int64)
    for f in np.unique(flow):
        at = np.flatnonzero(flow == f)
        seq[at] = np.arange(len(at)) + int(f) * 7
    want = np.array([seq[flow == f].max() + 1 for f in flow])
    assert flow_counts(flow, seq).tolist() == want.tolist()


def test_pcapng_interfaces_with_different_link_types() -> None:
    ip_only = ipv4("10.0.0.1", "10.0.0.2", 17, udp(53000, 53, b"q"))
    eth = ethernet(ipv4("10.0.0.2", "10.0.0.1", 17, udp(53, 53000, b"r")),
                         0x0800)
    data = (pcapng_shb() + pcapng_idb(101) + pcapng_idb(1)
            + pcapng_epb(0, 1.0, ip_only) + pcapng_epb(1, 1.5, eth))
    for chunk in (13, len(data)):  # blocks complete at odd places; or one batch
        p = Pipeline()
        for i in range(0, len(data), chunk):
            p.count(p.decoder.feed_batch(data[i:i + chunk]))
        fid = p.flow_ids()[0]
        out = p.store.frames_of(fid)
        assert [(f.linktype, f.data) for f in out] == [(101, ip_only), (1, eth)]
        assert p.store.packets_of(fid).a2b.tolist() == [True, False]


def test_a_batch_of_several_buffers_and_rows_without_bytes() -> None:
    f1, f2 = conversation(3, sport=1111, size=700), conversation(40, sport=2222, size=50)
    b1 = PcapStreamDecoder().feed_batch(pcap_bytes(f1))
    b2 = PcapStreamDecoder().feed_batch(pcap_bytes(f2, t0=1_700_000_001.0))
    recs = PacketBatch.from_records(PcapStreamDecoder().feed(
        pcap_bytes(conversation(1, sport=3333))))
    p = Pipeline()
    p.count(PacketBatch.concat([b1, recs, b2]))
    assert [f.data for f in p.store.frames_of(p.flow_of(1111))] == f1
    assert [f.data for f in p.store.frames_of(p.flow_of(2222))] == [f2[i]
                                                                    for i in kept_seqs(43)]
    nobytes = p.store.packets_of(p.flow_of(3333))
    assert len(nobytes) == 4 and not nobytes.has_bytes.any()


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


def random_rows(rng: np.random.Generator, flows: int, span: int, rows: int,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows as the store holds them: each flow's packets in seq order, flows mixed;
    its first 32 packets, then some of its newest (stale ones among them)."""
    ids = np.sort(rng.choice(span, size=flows, replace=False)) + 1_000
    flow, seq = [], []
    for fid in ids.tolist():
        count = int(rng.integers(1, 250))  # the flow's packets so far
        n_first = min(count, 32)  # all kept on append; then some of the newest
        recent = np.arange(max(32, count - int(rng.integers(0, 40))), count)
        flow += [fid] * (n_first + len(recent))
        seq += list(range(n_first)) + recent.tolist()
    flow_a, seq_a = np.array(flow, dtype=np.int64), np.array(seq, dtype=np.int64)
    # Flows interleaved by a random time increasing within each flow; the earliest
    # ``rows`` rows, in time order (each flow's rows stay in seq order).
    t = np.zeros(len(flow_a))
    starts = np.r_[0, np.flatnonzero(np.diff(flow_a)) + 1, len(flow_a)]
    for lo, hi in itertools.pairwise(starts.tolist()):
        t[lo:hi] = np.sort(rng.random(hi - lo))
    sub = np.argsort(t, kind="stable")[:rows]
    return flow_a[sub], seq_a[sub], rng.integers(164, 2100, size=len(sub))


@pytest.mark.parametrize("span", [200, 70_000, 5_000_000_000])
def test_a_plan_is_fair_keeps_prefixes_and_fills_the_target(span: int) -> None:
    """Invariants of packetevict.plan on random rows: within the target; stale rows
    gone; ended flows whole, oldest ended first; every live flow keeps its newest
    recent packets and its first packets up to a common level; little room wasted;
    and the same answer whatever the flow ids' span."""
    rng = np.random.default_rng(span % 1000)
    flow, seq, cost = random_rows(rng, 150, span, 20_000)
    uniq = np.unique(flow)
    ended = np.full(len(uniq), -1)
    ended[rng.choice(len(uniq), size=30, replace=False)] = rng.permutation(30)
    er = ended[np.searchsorted(uniq, flow)]
    gone = 10**12  # an ended flow with no rows left
    given = (np.r_[uniq[ended >= 0], gone], np.r_[ended[ended >= 0], 99])
    tiers = set()
    for share in (0, 0.11, 0.33, 0.7, 0.85, 1):
        target = int(cost.sum() * share)
        p = plan(flow, seq, cost, given, first=32, recent=32, target=target)
        tiers.update(k for k in ("ended", "recent", "first") if getattr(p, k))
        kept = np.zeros(len(flow), dtype=np.bool_)
        kept[p.rows] = True
        assert np.all(np.diff(p.rows) > 0) and int(cost[kept].sum()) <= target
        newest = {f: seq[flow == f].max() for f in uniq.tolist()}
        age = seq - np.array([newest[f] for f in flow.tolist()])
        stale = (seq >= 32) & (age <= -32)
        assert not (kept & stale).any() and p.stale == int(stale.sum())
        levels: dict[str, list[tuple[int, int]]] = {"first": [], "recent": []}
        dropped_ended = []
        for f in uniq.tolist():
            mine = flow == f
            k, s_, a = kept[mine], seq[mine], -age[mine]
            if er[mine][0] >= 0:
                assert k.all() or not k.any() or (k == ~stale[mine]).all()
                if not k.any():
                    dropped_ended.append(er[mine][0])
                continue
            first_kept = s_[k & (s_ < 32)]
            assert first_kept.tolist() == list(range(len(first_kept)))  # a prefix
            recent = (s_ >= 32) & ~stale[mine]
            levels["first"].append((len(first_kept), int((s_ < 32).sum())))
            levels["recent"].append((int((k & recent).sum()), int(recent.sum())))
            # The recent rows kept are the newest ones.
            assert (a[k & recent] < (a[recent & ~k].min(initial=1 << 40))).all()
        ended_order = sorted(set(er[er >= 0].tolist()))
        assert sorted(dropped_ended) == ended_order[:len(dropped_ended)]
        for rows in levels.values():
            cut = [r[0] for r in rows if r[0] < r[1]]  # flows that lost some
            if cut:  # one common level L: they keep L or L+1, the others had no more
                assert max(cut) - min(cut) <= 1
                assert all(r[1] <= max(cut) for r in rows if r[0] == r[1])
        if p.first or p.recent:  # water-filling drops no more than a row's worth per flow
            assert int(cost[kept].sum()) > target - 2100 * len(uniq)
        relabelled = np.searchsorted(uniq, flow).astype(np.int64)
        q = plan(relabelled, seq, cost, (np.r_[np.searchsorted(uniq, given[0][:-1]), gone],
                                          given[1]), first=32, recent=32, target=target)
        assert q.rows.tolist() == p.rows.tolist()
        assert p.ended_left is not None and q.ended_left is not None
        still = set(flow[kept].tolist())
        assert p.ended_left.tolist() == [i in still for i in given[0].tolist()]
        assert q.ended_left.tolist() == p.ended_left.tolist()
    assert tiers == {"ended", "recent", "first"}  # every tier was exercised
