"""FlowTable: packets -> bidirectional flows, with NetFlow-style expiry.

Pure module (numpy only). One owner: the reactor thread in netmon (the engine);
nothing here is locked, so no other thread may touch a FlowTable. Other threads get
immutable :class:`netmon.core.values.FlowView` copies or numpy copies.

Semantics (shared/DESIGN.md "Flow semantics", chosen to agree with tshark):
- key = protocol + the unordered pair of endpoints (address, port), see
  :mod:`netmon.flows.keys`;
- bytes are frame lengths on the wire;
- a tunnel's outer flow keeps its own counts and is flagged ``tunnel``; totals count
  its frames once, as inner packets (TUNNEL rows stay out of ``packets``/``bytes``);
- the initiator ("a") is the sender of the first packet seen, or the SYN sender
  when the first TCP packet seen is the SYN-ACK;
- a flow idle for ``idle_timeout`` seconds, or older than ``active_timeout``, ends
  at the next :meth:`FlowTable.expire` and a later packet starts a new flow (as
  NetFlow caches do); above ``max_flows`` the least recently seen flows are evicted
  and counted.

Layout, and why: per-flow counters live in numpy columns indexed by a slot number,
and a dict maps each flow key to its slot. The per-packet Python work is one key
build and one dict lookup; every counter update runs vectorised per batch. Measured
on a 50 k-flow, 1 M-packet replay this is ~3x faster than a Python object per flow,
takes ~1/3 of the memory, and hands the clusterer ready-made feature columns.
Statistics: sizes keep an exact integer sum of squares (exact variance); inter-
arrival times keep Welford's mean and M2, merged per batch with Chan's formula.
Reading flows out lives in :mod:`netmon.flows.views`, flows from exported records
and the listener in :mod:`netmon.flows.external`, how flows end (expiry, eviction,
the ended flows handed on and kept) in :mod:`netmon.flows.ending`; all three are
mixed into FlowTable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from netmon.flows.ending import EndingMixin
from netmon.flows.external import ExternalRecordsMixin
from netmon.flows.keys import FIRST_SIZES, address_digest, flow_keys
from netmon.flows.namecols import NameColumns
from netmon.flows.retained import EndedRows
from netmon.flows.views import FlowViewsMixin
from netmon.ingest.batch import TUNNEL, PacketBatch

_INT_COLS = ("pkts_ab", "bytes_ab", "pkts_ba", "bytes_ba", "flow_id")
_SMALL_COLS = ("syn", "synack", "fin", "rst", "psh")
_FLOAT_COLS = ("first", "last", "sizesq", "iat_mean", "iat_m2")
#: From this many rows on, the table frees kept ended rows before it doubles.
ROOM_FROM_KEPT = 1 << 18


class FlowTable(FlowViewsMixin, ExternalRecordsMixin, EndingMixin):
    """Bidirectional flow table with idle/active timeouts and an LRU cap.

    Counters are kept in the key's lo->hi orientation (lo = the smaller (address,
    port) endpoint), so the per-packet path needs one comparison; ``a_is_lo`` says
    whether the initiator is the lo endpoint and views turn counters around.
    """

    def __init__(self, *, idle_timeout: float = 60.0, active_timeout: float = 1800.0,
                 max_flows: int = 500_000, initial_capacity: int = 1024,
                 keep_ended: int = 0) -> None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.idle_timeout = float(idle_timeout)
        self.active_timeout = float(active_timeout)
        self.max_flows = max_flows
        self.index: dict[bytes, int] = {}  # flow key (see KEY_DTYPE) -> slot
        self.keys: list[bytes | None] = []  # slot -> flow key (None when free)
        self._free: list[int] = []
        self.cap = 0
        #: Names read from the flows' first bytes (netmon.flows.naming writes them).
        self.names = NameColumns(self.queryable_slots)
        #: Ended flows whose rows stay queryable (the newest ``keep_ended``).
        self.ended = EndedRows(keep_ended)
        self._grow(max(16, initial_capacity))
        # Ended flows not yet taken by drain_finished: (columns, keys, reason) chunks.
        self._finished: list[tuple[dict, list[bytes], str]] = []
        self._finished_n = 0
        #: Called with the slots of flows about to end, while their columns still hold
        #: them (the cluster rates count their last packets).
        self.on_finish: Callable[[np.ndarray], None] | None = None
        self.next_id = 1
        self.packets = 0
        self.bytes = 0
        self.flows_seen = 0
        self.expired = 0
        self.evicted = 0
        self.latest_ts = 0.0
        self.exported_live = False  # any exported flow may be live (expiry looks at touch)
        #: Names of the observation points, indexed by a key's last two bytes; the
        #: engine registers its sources and the exporters its collectors hear from.
        self.observers: list[str] = []
        #: Listener connections: slot -> (flow id, first bytes' class, escaped preview);
        #: an entry whose flow id is not the slot's flow any more is stale (slots are
        #: reused), so it is bounded by the slots and needs no cleanup.
        self.connections: dict[int, tuple[int, str, str]] = {}

    def observer_id(self, name: str) -> int:
        """The index of observation point ``name``, registering it when new."""
        try:
            return self.observers.index(name)
        except ValueError:
            if len(self.observers) >= 65535:
                return 65535  # more than a uint16 tells apart: they share the last one
            self.observers.append(name)
            return len(self.observers) - 1

    # ------------------------------------------------------------------ storage
    def _grow(self, new_cap: int) -> None:
        old = self.cap

        def grown(arr: np.ndarray | None, dtype: type, shape: tuple = ()) -> np.ndarray:
            new = np.zeros((new_cap, *shape), dtype=dtype)
            if arr is not None and old:
                new[:old] = arr[:old]
            return new

        for name in _INT_COLS:
            setattr(self, name, grown(getattr(self, name, None), np.int64))
        for name in _SMALL_COLS:
            setattr(self, name, grown(getattr(self, name, None), np.int32))
        for name in _FLOAT_COLS:
            setattr(self, name, grown(getattr(self, name, None), np.float64))
        self.proto = grown(getattr(self, "proto", None), np.uint8)
        self.port_lo = grown(getattr(self, "port_lo", None), np.int32)
        # 64-bit digests of the lo/hi addresses: distinct-host counts per cluster or
        # per host without touching the keys.
        self.host_lo = grown(getattr(self, "host_lo", None), np.uint64)
        self.host_hi = grown(getattr(self, "host_hi", None), np.uint64)
        #: Display cluster of each flow (-1: not clustered yet) and its outlier score;
        #: written by the engine from the clusterer's answers.
        self.cluster = grown(getattr(self, "cluster", None), np.int32)
        self.outlier = grown(getattr(self, "outlier", None), np.float32)
        self.port_hi = grown(getattr(self, "port_hi", None), np.int32)
        self.a_is_lo = grown(getattr(self, "a_is_lo", None), np.bool_)
        #: Flows built from exported flow records (NetFlow/IPFIX): no per-packet detail;
        #: they age out by ``touch``, the clock time their last record arrived.
        self.exported = grown(getattr(self, "exported", None), np.bool_)
        #: Outer flows of decoded tunnels (their frames count again in the inner flows).
        self.tunnel = grown(getattr(self, "tunnel", None), np.bool_)
        #: Observation point of each flow (index into ``observers``; also in its key).
        self.obs = grown(getattr(self, "obs", None), np.uint16)
        self.touch = grown(getattr(self, "touch", None), np.float64)
        self.live = grown(getattr(self, "live", None), np.bool_)
        #: Set for every slot that received packets; the engine clears it per tick.
        self.dirty = grown(getattr(self, "dirty", None), np.bool_)
        self.first_sizes = grown(getattr(self, "first_sizes", None), np.int32, (FIRST_SIZES,))
        self.names.grow(new_cap)
        self.ended.grow(new_cap)
        self.keys.extend([None] * (new_cap - old))
        self._free.extend(range(new_cap - 1, old - 1, -1))  # pop() hands out low slots
        self.cap = new_cap

    def __len__(self) -> int:
        return len(self.index)

    # ------------------------------------------------------------------ ingest
    def add_packets(self, records: Sequence[tuple]) -> None:
        """Account a batch of PacketRecord tuples (tests and slow paths)."""
        if records:
            self.add_batch(PacketBatch.from_records(records))

    def add_batch(self, b: PacketBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Account a columnar batch of packets (the hot path).

        Batches of a few thousand packets amortise the vectorised work; the engine
        collects them from its sources before calling this. Returns, per packet, the
        slot of its flow, whether it went lo->hi, and its number within its flow (0 =
        the flow's first packet): the engine's frame ring indexes packets by these.
        """
        n = len(b)
        if not n:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.bool_), \
                np.zeros(0, dtype=np.int64)
        lo_first, klist = flow_keys(b)
        at, new = self._slots(klist)
        seq = self._apply(at, lo_first, b, new)
        self._enforce_cap()
        return at, lo_first, seq

    def _slots(self, klist: list[bytes]) -> tuple[np.ndarray, list[int]]:
        """The slot of each key's flow, new flows made as needed, and the positions
        (in ``klist``) of the rows that made a new flow."""
        index = self.index
        slots = list(map(index.get, klist))
        new: list[int] = []
        if None in slots:
            for i in [i for i, slot in enumerate(slots) if slot is None]:
                slot = index.get(klist[i])  # an earlier row of this batch made it
                if slot is None:
                    slot = self._new_slot(klist[i])
                    new.append(i)
                slots[i] = slot
        return np.array(slots, dtype=np.int64), new

    def _new_slot(self, key: bytes) -> int:
        if not self._free:
            if self.ended.count and self.cap >= ROOM_FROM_KEPT:
                # A big table makes room for live flows from the oldest kept ended
                # rows rather than doubling for them (live flows come first).
                self._release(self.ended.release(max(self.cap // 16, 1)))
            if not self._free:
                self._grow(self.cap * 2)
        slot = self._free.pop()
        self.index[key] = slot
        self.keys[slot] = key
        return slot

    def _apply(self, s: np.ndarray, fwd: np.ndarray, b: PacketBatch,
               new: list[int]) -> np.ndarray:
        ts = b.ts
        wl = b.wirelen
        flags = np.where(b.proto == 6, b.flags, 0)  # the field means other things elsewhere
        npk = len(ts)
        self.packets += npk
        self.bytes += int(wl.sum())

        if new:
            self._init_new(s, fwd, b, new)
        outer = b.flags >= TUNNEL  # one compare per row: cheap next to the rest
        if outer.any():
            self.packets -= int(outer.sum())
            self.bytes -= int(wl[outer].sum())
            self.tunnel[s[outer]] = True
        # Group packets by flow, keeping arrival order inside each group.
        order = np.argsort(s, kind="stable")
        ss = s[order]
        starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
        u = ss[starts]  # the flows touched, one entry each
        counts = np.diff(np.r_[starts, npk])
        grp = np.repeat(np.arange(len(u)), counts)  # group number of each sorted packet
        t_s = ts[order]
        w_s = wl[order]
        f_s = fwd[order]

        prior = self.pkts_ab[u] + self.pkts_ba[u]  # packets before this batch
        n_fwd = np.add.reduceat(f_s.astype(np.int64), starts)
        b_fwd = np.add.reduceat(np.where(f_s, w_s, 0), starts)
        self.pkts_ab[u] += n_fwd
        self.pkts_ba[u] += counts - n_fwd
        self.bytes_ab[u] += b_fwd
        self.bytes_ba[u] += np.add.reduceat(w_s, starts) - b_fwd
        self.sizesq[u] += np.add.reduceat((w_s * w_s).astype(np.float64), starts)

        # Inter-arrival times: each packet against the latest time its flow has seen
        # before it (in this batch, or ``last`` from earlier ones). A flow's very first
        # packet has none. Out-of-order timestamps count as 0 s, not negative.
        prev = np.empty(npk)
        prev[1:] = t_s[:-1]
        back = t_s[1:] < t_s[:-1]
        back[starts[1:] - 1] = False  # a step from one flow's group to the next
        if back.any():
            # Fix (tests/test_flows.py): an out-of-order packet was measured against the
            # previous packet inside a batch but against the flow's latest time across
            # batches, so the statistics depended on where batches split. Use each
            # flow's running maximum, computed exactly on ranks (grp * npk + rank only
            # grows from one group to the next, so one accumulate serves all flows).
            by_time = np.argsort(t_s, kind="stable")
            rank = np.empty(npk, dtype=np.int64)
            rank[by_time] = np.arange(npk)
            base = grp * npk
            prev[1:] = t_s[by_time[(np.maximum.accumulate(base + rank) - base)[:-1]]]
        prev[starts] = self.last[u]
        prev = np.maximum(prev, self.last[u][grp])  # fix: later than an earlier batch
        iat = np.maximum(t_s - prev, 0.0)
        valid = np.ones(npk, dtype=np.bool_)
        valid[starts[prior == 0]] = False
        k = np.add.reduceat(valid.astype(np.int64), starts)
        has = k > 0
        if has.any():
            iat_v = np.where(valid, iat, 0.0)
            mean_b = np.add.reduceat(iat_v, starts) / np.maximum(k, 1)
            dev = np.where(valid, iat - mean_b[grp], 0.0)
            m2_b = np.add.reduceat(dev * dev, starts)
            n_a = np.maximum(prior - 1, 0).astype(np.float64)
            tot = n_a + k
            mean_a = self.iat_mean[u]
            delta = mean_b - mean_a
            frac = np.where(has, k / np.maximum(tot, 1), 0.0)
            self.iat_mean[u] = mean_a + delta * frac
            self.iat_m2[u] += np.where(has, m2_b + delta * delta * n_a * frac, 0.0)
        self.last[u] = np.maximum(self.last[u], np.maximum.reduceat(t_s, starts))

        # Signed sizes of each flow's first packets (+ = lo->hi).
        pos = prior[grp] + (np.arange(npk) - starts[grp])
        early = pos < FIRST_SIZES
        if early.any():
            signed = np.where(f_s, w_s, -w_s)
            self.first_sizes[ss[early], pos[early]] = signed[early]

        if flags.any():
            fl = flags[order]
            syn_bits = fl & 0x12
            for col, hit in ((self.syn, syn_bits == 0x02), (self.synack, syn_bits == 0x12),
                             (self.fin, (fl & 0x01) != 0), (self.rst, (fl & 0x04) != 0),
                             (self.psh, (fl & 0x08) != 0)):
                if hit.any():
                    col[u] += np.add.reduceat(hit.astype(np.int32), starts)
        self.dirty[u] = True
        latest = float(ts.max())
        if latest > self.latest_ts:
            self.latest_ts = latest
        seq = np.empty(npk, dtype=np.int64)  # each packet's number within its flow
        seq[order] = pos
        return seq

    def _init_new(self, s: np.ndarray, fwd: np.ndarray, b: PacketBatch, new: list[int]) -> None:
        at = np.array(new, dtype=np.int64)
        ns = s[at]
        for name in _INT_COLS + _SMALL_COLS + ("sizesq", "iat_mean", "iat_m2"):
            getattr(self, name)[ns] = 0
        self.first_sizes[ns] = 0
        self.names.reset(ns)
        self.first[ns] = b.ts[at]
        self.last[ns] = b.ts[at]
        proto = b.proto[at]
        self.proto[ns] = proto
        lo = fwd[at]
        self.port_lo[ns] = np.where(lo, b.sport[at], b.dport[at])
        self.port_hi[ns] = np.where(lo, b.dport[at], b.sport[at])
        src_h = address_digest(b.src[at])
        dst_h = address_digest(b.dst[at])
        self.host_lo[ns] = np.where(lo, src_h, dst_h)
        self.host_hi[ns] = np.where(lo, dst_h, src_h)
        self.cluster[ns] = -1
        self.outlier[ns] = 0.0
        self.exported[ns] = False
        self.tunnel[ns] = False
        self.obs[ns] = 0 if b.obs is None else b.obs[at]
        # The initiator sent the first packet, unless that was a SYN-ACK: then the
        # other side opened the connection.
        synack = (proto == 6) & ((b.flags[at] & 0x12) == 0x12)
        self.a_is_lo[ns] = lo ^ synack
        self.flow_id[ns] = np.arange(self.next_id, self.next_id + len(new))
        self.next_id += len(new)
        self.flows_seen += len(new)
        self.live[ns] = True

    # ------------------------------------------------------------------ reading
    def live_slots(self) -> np.ndarray:
        """Slots of all live flows."""
        return np.flatnonzero(self.live)

    def queryable_slots(self) -> np.ndarray:
        """Slots of the live flows and of the ended flows kept (see EndedRows)."""
        if not self.ended.count:
            return self.live_slots()
        return np.flatnonzero(self.live | self.ended.kept)
