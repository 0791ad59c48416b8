"""FlowTable: packets -> bidirectional flows, with NetFlow-style expiry.

Pure module (numpy only). One owner: the reactor thread in netmon (the engine);
nothing here is locked, so no other thread may touch a FlowTable. Other threads get
immutable :class:`netmon.model.FlowView` copies or numpy copies.

Semantics (shared/DESIGN.md "Flow semantics", chosen to agree with tshark):
- key = protocol + the unordered pair of endpoints (address, port); ports are 0 for
  protocols without them, so ICMP is keyed by the address pair;
- bytes are frame lengths on the wire;
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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from netmon.model import FlowView, addr_text

#: How many leading packet sizes (signed by direction) a flow keeps for clustering.
FIRST_SIZES = 8

_PORT_INTS = list(range(65536))  # interned: one int object per port, not per flow

_INT_COLS = ("pkts_ab", "bytes_ab", "pkts_ba", "bytes_ba", "flow_id")
_SMALL_COLS = ("syn", "synack", "fin", "rst", "psh")
_FLOAT_COLS = ("first", "last", "sizesq", "iat_mean", "iat_m2")


class FlowTable:
    """Bidirectional flow table with idle/active timeouts and an LRU cap.

    Counters are kept in the key's lo->hi orientation (lo = the smaller (address,
    port) endpoint), so the per-packet path needs one comparison; ``a_is_lo`` says
    whether the initiator is the lo endpoint and views turn counters around.
    """

    def __init__(self, *, idle_timeout: float = 60.0, active_timeout: float = 1800.0,
                 max_flows: int = 500_000, initial_capacity: int = 1024) -> None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.idle_timeout = float(idle_timeout)
        self.active_timeout = float(active_timeout)
        self.max_flows = max_flows
        self.index: dict[tuple, int] = {}  # flow key -> slot
        self.keys: list[tuple | None] = []  # slot -> flow key (None when free)
        self._free: list[int] = []
        self.cap = 0
        self._grow(max(16, initial_capacity))
        #: Finished flows not yet taken by :meth:`drain_finished`.
        self.finished: list[FlowView] = []
        self.next_id = 1
        self.packets = 0
        self.bytes = 0
        self.flows_seen = 0
        self.expired = 0
        self.evicted = 0
        self.latest_ts = 0.0
        self._addrs: dict[bytes, bytes] = {}

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
        self.port_hi = grown(getattr(self, "port_hi", None), np.int32)
        self.a_is_lo = grown(getattr(self, "a_is_lo", None), np.bool_)
        self.live = grown(getattr(self, "live", None), np.bool_)
        #: Set for every slot that received packets; the engine clears it per tick.
        self.dirty = grown(getattr(self, "dirty", None), np.bool_)
        self.first_sizes = grown(getattr(self, "first_sizes", None), np.int32, (FIRST_SIZES,))
        self.keys.extend([None] * (new_cap - old))
        self._free.extend(range(new_cap - 1, old - 1, -1))  # pop() hands out low slots
        self.cap = new_cap

    def __len__(self) -> int:
        return len(self.index)

    # ------------------------------------------------------------------ ingest
    def add_packets(self, records: Sequence[tuple]) -> None:
        """Account a batch of PacketRecord tuples (the hot path).

        Batches of a few thousand records amortise the vectorised part; the engine
        collects records from its sources before calling this.
        """
        n = len(records)
        if not n:
            return
        index = self.index
        get = index.get
        # Columns are gathered here rather than by transposing the records later:
        # appends to lists are the cheapest way to get them into numpy.
        slots: list[int] = []
        fwds: list[bool] = []
        stamps: list[float] = []
        sizes: list[int] = []
        tcp_flags: list[int] = []
        add_slot = slots.append
        add_fwd = fwds.append
        add_ts = stamps.append
        add_wl = sizes.append
        add_fl = tcp_flags.append
        new: list[tuple] = []  # (slot, ts, fwd, proto, flags) of flows born here
        for ts, wl, proto, src, sport, dst, dport, flags in records:
            if src < dst or (src == dst and sport <= dport):
                key = (proto, src, sport, dst, dport)
                fwd = True
            else:
                key = (proto, dst, dport, src, sport)
                fwd = False
            slot = get(key)
            if slot is None:
                slot = self._new_slot(key)
                new.append((slot, ts, fwd, proto, flags))
            add_slot(slot)
            add_fwd(fwd)
            add_ts(ts)
            add_wl(wl)
            add_fl(flags if proto == 6 else 0)  # the field means other things elsewhere
        self._apply(slots, fwds, stamps, sizes, tcp_flags, new)
        if len(index) > self.max_flows:
            self._evict(len(index) - self.max_flows + self.max_flows // 100)

    def _new_slot(self, key: tuple) -> int:
        if not self._free:
            self._grow(self.cap * 2)
        slot = self._free.pop()
        addrs = self._addrs
        lo = addrs.setdefault(key[1], key[1])
        hi = addrs.setdefault(key[3], key[3])
        key = (key[0], lo, _PORT_INTS[key[2]], hi, _PORT_INTS[key[4]])
        self.index[key] = slot
        self.keys[slot] = key
        return slot

    def _apply(self, slots: list[int], fwds: list[bool], stamps: list[float],
               sizes: list[int], tcp_flags: list[int], new: list[tuple]) -> None:
        ts = np.array(stamps, dtype=np.float64)
        wl = np.array(sizes, dtype=np.int64)
        flags = np.array(tcp_flags, dtype=np.int64)
        s = np.array(slots, dtype=np.int64)
        fwd = np.array(fwds, dtype=np.bool_)
        npk = len(ts)
        self.packets += npk
        self.bytes += int(wl.sum())

        if new:
            self._init_new(new)

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

        # Inter-arrival times: each packet against the previous one of its flow (from
        # this batch, or the flow's last packet before it). A flow's very first packet
        # has none. Out-of-order timestamps count as 0 s, not negative.
        prev = np.empty(npk)
        prev[1:] = t_s[:-1]
        prev[starts] = self.last[u]
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

    def _init_new(self, new: list[tuple]) -> None:
        ns = np.array([x[0] for x in new], dtype=np.int64)
        for name in _INT_COLS + _SMALL_COLS + ("sizesq", "iat_mean", "iat_m2"):
            getattr(self, name)[ns] = 0
        self.first_sizes[ns] = 0
        first = np.array([x[1] for x in new], dtype=np.float64)
        self.first[ns] = first
        self.last[ns] = first
        self.proto[ns] = [x[3] for x in new]
        keys = self.keys
        self.port_lo[ns] = [keys[x[0]][2] for x in new]
        self.port_hi[ns] = [keys[x[0]][4] for x in new]
        # The initiator sent the first packet, unless that was a SYN-ACK: then the
        # other side opened the connection.
        self.a_is_lo[ns] = [fwd != (proto == 6 and flags & 0x12 == 0x12)
                            for _, _, fwd, proto, flags in new]
        self.flow_id[ns] = np.arange(self.next_id, self.next_id + len(new))
        self.next_id += len(new)
        self.flows_seen += len(new)
        self.live[ns] = True

    # ------------------------------------------------------------------ expiry
    def live_slots(self) -> np.ndarray:
        """Slots of all live flows."""
        return np.flatnonzero(self.live)

    def expire(self, now: float) -> int:
        """End flows idle since ``now - idle_timeout`` or older than the active timeout."""
        live = self.live
        idle = live & (self.last < now - self.idle_timeout)
        old = live & ~idle & (self.first <= now - self.active_timeout)
        n = 0
        for mask, reason in ((idle, "idle-timeout"), (old, "active-timeout")):
            slots = np.flatnonzero(mask)
            if len(slots):
                self._finish(slots, reason)
                n += len(slots)
        self.expired += n
        return n

    def _evict(self, count: int) -> None:
        live = self.live_slots()
        count = min(count, len(live))
        if count <= 0:
            return
        victims = live[np.argpartition(self.last[live], count - 1)[:count]]
        self._finish(victims, "evicted")
        self.evicted += count

    def _finish(self, slots: np.ndarray, reason: str) -> None:
        self.finished.extend(self.views(slots, reason))
        index = self.index
        keys = self.keys
        for slot in slots.tolist():
            del index[keys[slot]]
            keys[slot] = None
        self.live[slots] = False
        self.dirty[slots] = False
        self._free.extend(slots.tolist())
        if len(self._addrs) > 4 * self.max_flows + 1024:
            self._addrs.clear()  # interning is only an optimisation: keep it bounded

    def drain_finished(self) -> list[FlowView]:
        """Take the flows that ended since the last call."""
        done, self.finished = self.finished, []
        return done

    def end_all(self, reason: str = "end-of-capture") -> list[FlowView]:
        """End every live flow (at exit); return all finished flows not yet drained."""
        slots = self.live_slots()
        if len(slots):
            self._finish(slots, reason)
        return self.drain_finished()

    # ------------------------------------------------------------------ views
    def views(self, slots: np.ndarray | Sequence[int], reason: str = "") -> list[FlowView]:
        """Immutable copies of the flows in ``slots`` (vectorised reads)."""
        sl = np.asarray(slots, dtype=np.int64)
        if not len(sl):
            return []
        a_lo = self.a_is_lo[sl]
        pab = np.where(a_lo, self.pkts_ab[sl], self.pkts_ba[sl]).tolist()
        pba = np.where(a_lo, self.pkts_ba[sl], self.pkts_ab[sl]).tolist()
        bab = np.where(a_lo, self.bytes_ab[sl], self.bytes_ba[sl]).tolist()
        bba = np.where(a_lo, self.bytes_ba[sl], self.bytes_ab[sl]).tolist()
        n = self.pkts_ab[sl] + self.pkts_ba[sl]
        tot = (self.bytes_ab[sl] + self.bytes_ba[sl]).astype(np.float64)
        nf = np.maximum(n, 1).astype(np.float64)
        smean = tot / nf
        svar = np.maximum(self.sizesq[sl] / nf - smean * smean, 0.0)
        istd = np.sqrt(self.iat_m2[sl] / np.maximum(n - 1, 1))
        fs = np.where(a_lo[:, None], self.first_sizes[sl], -self.first_sizes[sl])
        cols = zip(sl.tolist(), a_lo.tolist(), self.flow_id[sl].tolist(), pab, bab, pba, bba,
                   self.first[sl].tolist(), self.last[sl].tolist(), self.syn[sl].tolist(),
                   self.synack[sl].tolist(), self.fin[sl].tolist(), self.rst[sl].tolist(),
                   self.psh[sl].tolist(), smean.tolist(), np.sqrt(svar).tolist(),
                   self.iat_mean[sl].tolist(), istd.tolist(), fs.tolist(), n.tolist(), strict=True)
        keys = self.keys
        out = []
        for (slot, alo, fid, pab_, bab_, pba_, bba_, first, last, syn, synack, fin, rst, psh,
             sm, ss, im, is_, sizes, npk) in cols:
            proto, lo, lop, hi, hip = keys[slot]
            a, pa, b, pb = (lo, lop, hi, hip) if alo else (hi, hip, lo, lop)
            out.append(FlowView(
                flow_id=fid, proto=proto, addr_a=addr_text(a), port_a=pa,
                addr_b=addr_text(b), port_b=pb, pkts_a2b=pab_, bytes_a2b=bab_,
                pkts_b2a=pba_, bytes_b2a=bba_, first_epoch=first, last_epoch=last,
                syn=syn, synack=synack, fin=fin, rst=rst, psh=psh,
                size_mean=sm, size_std=ss, iat_mean=im, iat_std=is_,
                first_sizes=tuple(sizes[:min(npk, FIRST_SIZES)]), end_reason=reason))
        return out

    def columns(self, slots: np.ndarray | Sequence[int]) -> dict[str, np.ndarray]:
        """Copies of the flows' counters as numpy columns, turned to initiator (a->b)
        orientation: the input of vectorised feature extraction.

        Keys: flow_id, proto, port_a, port_b, pkts_a2b, bytes_a2b, pkts_b2a,
        bytes_b2a, first, last, syn, synack, fin, rst, psh, size_mean, size_std,
        iat_mean, iat_std, first_sizes (n x FIRST_SIZES, + = a->b, 0 = none).
        """
        sl = np.asarray(slots, dtype=np.int64)
        a_lo = self.a_is_lo[sl]
        n = self.pkts_ab[sl] + self.pkts_ba[sl]
        nf = np.maximum(n, 1).astype(np.float64)
        tot = (self.bytes_ab[sl] + self.bytes_ba[sl]).astype(np.float64)
        smean = tot / nf
        return {
            "flow_id": self.flow_id[sl],
            "proto": self.proto[sl].astype(np.int64),
            "port_a": np.where(a_lo, self.port_lo[sl], self.port_hi[sl]),
            "port_b": np.where(a_lo, self.port_hi[sl], self.port_lo[sl]),
            "pkts_a2b": np.where(a_lo, self.pkts_ab[sl], self.pkts_ba[sl]),
            "bytes_a2b": np.where(a_lo, self.bytes_ab[sl], self.bytes_ba[sl]),
            "pkts_b2a": np.where(a_lo, self.pkts_ba[sl], self.pkts_ab[sl]),
            "bytes_b2a": np.where(a_lo, self.bytes_ba[sl], self.bytes_ab[sl]),
            "first": self.first[sl], "last": self.last[sl],
            "syn": self.syn[sl], "synack": self.synack[sl], "fin": self.fin[sl],
            "rst": self.rst[sl], "psh": self.psh[sl],
            "size_mean": smean,
            "size_std": np.sqrt(np.maximum(self.sizesq[sl] / nf - smean * smean, 0.0)),
            "iat_mean": self.iat_mean[sl],
            "iat_std": np.sqrt(self.iat_m2[sl] / np.maximum(n - 1, 1)),
            "first_sizes": np.where(a_lo[:, None], self.first_sizes[sl], -self.first_sizes[sl]),
        }

    def live_views(self) -> list[FlowView]:
        """Views of every live flow (for exports; O(live flows))."""
        return self.views(self.live_slots())
