"""Flows measured elsewhere, added to a FlowTable: exported NetFlow/IPFIX records
and the listener's connection records.

Pure module (numpy only). One owner: the reactor thread in netmon (the engine); these
methods write the FlowTable they are mixed into, so, like it, they are not locked.
They reuse the table's packet machinery once per call (keys, slots, new-flow setup,
the cap), never per packet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from netmon.core.values import ConnectionRecord
from netmon.flows.keys import FIRST_SIZES, flow_keys
from netmon.ingest.batch import PacketBatch

if TYPE_CHECKING:
    from netmon.netflow.templates import FlowRecords


class ExternalRecordsMixin:
    """The FlowTable methods that account flows it did not see as packets (mixed into
    :class:`netmon.flows.table.FlowTable`; uses its slots, ``_init_new``, ``_finish``
    and ``_enforce_cap``)."""

    # ------------------------------------------------------------------ flow export
    def add_records(self, r: FlowRecords, obs: np.ndarray, now: float) -> None:
        """Account exported flow records (NetFlow v5/v9, IPFIX) seen at ``obs``.

        Each record is one direction of a flow (or both, for RFC 5103 biflows) with
        delta counts: records add up, and the two directions of a 5-tuple meet in one
        bidirectional flow as packets do. The initiator is the sender of the record
        that started earliest. What records do not say stays unknown rather than
        guessed: packet sizes beyond each direction's mean, gaps beyond their mean,
        first packet sizes; TCP flags are known only as "seen at least once". ``now``
        (the clock) is when they arrived: exported flows age out from there.
        """
        n = len(r)
        if not n:
            return
        # The earliest record creates a flow and names its initiator. Exporters often
        # stamp both directions with the same millisecond: then the side that looks
        # like the answer goes second -- RST without SYN, or else sending from the
        # lower port -- and a SYN without ACK (a connection attempt) goes first.
        fl = np.where(r.proto == 6, r.tcp_flags, 0)
        answer = np.where((fl & 0x12) == 0x02, False,
                          ((fl & 0x06) == 0x04) | (r.sport < r.dport))
        order = np.lexsort((answer, r.start))
        batch = PacketBatch(
            ts=r.start[order], wirelen=r.octets[order], proto=r.proto[order],
            fam=r.fam[order], src=r.src[order], sport=r.sport[order], dst=r.dst[order],
            dport=r.dport[order], flags=np.zeros(n, dtype=np.int64),
            obs=np.asarray(obs, dtype=np.uint16)[order])
        start, end = batch.ts, r.end[order]
        pk, by = r.packets[order], r.octets[order]
        rpk, rby = r.rpackets[order], r.roctets[order]
        tflags = np.where(batch.proto == 6, r.tcp_flags[order], 0)
        fwd, klist = flow_keys(batch)
        s, new = self._slots(klist)
        if new:
            self._init_new(s, fwd, batch, new)
            self.exported[s[new]] = True
        old_first = self.first[s].copy()
        np.minimum.at(self.first, s, start)
        np.maximum.at(self.last, s, np.maximum(end, start))
        earlier = start < old_first  # a record older than its flow's first: it opened it
        if earlier.any():
            self.a_is_lo[s[earlier]] = fwd[earlier]
        np.add.at(self.pkts_ab, s, np.where(fwd, pk, rpk))
        np.add.at(self.pkts_ba, s, np.where(fwd, rpk, pk))
        np.add.at(self.bytes_ab, s, np.where(fwd, by, rby))
        np.add.at(self.bytes_ba, s, np.where(fwd, rby, by))
        # Sizes as if each record's packets were all of its mean size: the variance
        # between directions is known, the one within a record is not.
        sq = np.where(pk > 0, by.astype(np.float64) ** 2 / np.maximum(pk, 1), 0.0)
        sq += np.where(rpk > 0, rby.astype(np.float64) ** 2 / np.maximum(rpk, 1), 0.0)
        np.add.at(self.sizesq, s, sq)
        # Flags OR-ed over a record: SYN from the initiator's side counts as the SYN,
        # from the other side as the SYN-ACK; each flag at most once per record.
        from_a = fwd == self.a_is_lo[s]
        syn = (tflags & 0x02) != 0
        np.add.at(self.syn, s, (syn & from_a).astype(np.int32))
        np.add.at(self.synack, s, (syn & ~from_a).astype(np.int32))
        np.add.at(self.fin, s, ((tflags & 0x01) != 0).astype(np.int32))
        np.add.at(self.rst, s, ((tflags & 0x04) != 0).astype(np.int32))
        np.add.at(self.psh, s, ((tflags & 0x08) != 0).astype(np.int32))
        u = np.unique(s)
        # The mean gap is exact from the span and the count; its spread is unknown.
        npk = self.pkts_ab[u] + self.pkts_ba[u]
        self.iat_mean[u] = (self.last[u] - self.first[u]) / np.maximum(npk - 1, 1)
        self.touch[u] = now
        self.dirty[u] = True
        self.exported_live = True
        self.packets += int(pk.sum() + rpk.sum())
        self.bytes += int(by.sum() + rby.sum())
        self.latest_ts = max(self.latest_ts, float(end.max()))
        self._enforce_cap()

    # ------------------------------------------------------------------ listener
    def add_connections(self, records: Sequence[ConnectionRecord]) -> None:
        """Account the listener's connection records as TCP flows, the peer initiating.

        A record carries its connection's totals so far, so the listener can report an
        open connection now and then and once more when it ends: a record whose flow
        is in the table (same key and start) replaces that flow's counters. A new
        connection on a 5-tuple an earlier connection still holds ends the earlier
        flow ("port-reuse"), so each connection is exactly one flow, in one slot like
        a captured flow. Payload bytes and reads stand in for frame bytes and packets;
        the handshake counts one SYN and one SYN-ACK, a client's close one FIN, any
        other end one RST. Ended connections stay live until the idle timeout, as
        captured flows do after their FIN.
        """
        n = len(records)
        if not n:
            return
        # Each connection as its opening SYN, peer -> local (columns built directly:
        # fewer temporary objects than PacketBatch.from_records, so less heap left over).
        def addr16(addrs: list[bytes]) -> np.ndarray:  # IPv4 in the last 4 bytes
            return np.frombuffer(b"".join([a.rjust(16, b"\0") for a in addrs]),
                                 dtype=np.uint8).reshape(-1, 16)

        peers = [r.peer for r in records]
        batch = PacketBatch(
            ts=np.array([r.start for r in records], dtype=np.float64),
            wirelen=np.zeros(n, dtype=np.int64), proto=np.full(n, 6, dtype=np.int64),
            fam=np.array([4 if len(a) == 4 else 6 for a in peers], dtype=np.int64),
            src=addr16(peers), sport=np.array([r.peer_port for r in records], dtype=np.int64),
            dst=addr16([r.local for r in records]),
            dport=np.array([r.local_port for r in records], dtype=np.int64),
            flags=np.full(n, 0x02, dtype=np.int64))
        del peers
        lo_first, klist = flow_keys(batch)
        starts = batch.ts.tolist()

        def account(lo: int, hi: int, slots: list[int], new: list[int]) -> None:
            if new:  # (``new`` holds positions in the whole batch)
                s_all = np.zeros(n, dtype=np.int64)
                s_all[lo:hi] = slots
                self._init_new(s_all, lo_first, batch, new)
            s = np.array(slots, dtype=np.int64)
            fwd = lo_first[lo:hi]
            # Several reports of one connection: the last one holds its totals.
            _, at_rev = np.unique(s[::-1], return_index=True)
            keep = len(s) - 1 - at_rev
            recs = [records[lo + i] for i in keep.tolist()]
            s, fwd = s[keep], fwd[keep]
            p_in = np.array([r.pkts_in for r in recs], dtype=np.int64)
            p_out = np.array([r.pkts_out for r in recs], dtype=np.int64)
            b_in = np.array([r.bytes_in for r in recs], dtype=np.int64)
            b_out = np.array([r.bytes_out for r in recs], dtype=np.int64)
            self.packets += int((p_in + p_out).sum() - (self.pkts_ab[s] + self.pkts_ba[s]).sum())
            self.bytes += int((b_in + b_out).sum() - (self.bytes_ab[s] + self.bytes_ba[s]).sum())
            self.pkts_ab[s] = np.where(fwd, p_in, p_out)
            self.pkts_ba[s] = np.where(fwd, p_out, p_in)
            self.bytes_ab[s] = np.where(fwd, b_in, b_out)
            self.bytes_ba[s] = np.where(fwd, b_out, b_in)
            end = np.array([r.end for r in recs])
            self.last[s] = np.maximum(end, self.first[s])
            self.sizesq[s] = [r.sizesq for r in recs]
            self.iat_mean[s] = [r.iat_mean for r in recs]
            self.iat_m2[s] = [r.iat_m2 for r in recs]
            reason = [r.end_reason for r in recs]
            self.syn[s] = 1
            self.synack[s] = 1
            self.fin[s] = [why == "client-closed" for why in reason]
            self.rst[s] = [why not in ("", "client-closed") for why in reason]
            self.psh[s] = p_in + p_out
            sizes = np.zeros((len(recs), FIRST_SIZES), dtype=np.int32)
            for row, r in enumerate(recs):
                first = r.first_sizes[:FIRST_SIZES]
                sizes[row, :len(first)] = first
            self.first_sizes[s] = np.where(fwd[:, None], sizes, -sizes)
            conns = self.connections
            for slot, fid, r in zip(s.tolist(), self.flow_id[s].tolist(), recs, strict=True):
                conns[slot] = (fid, r.first_class, r.preview)
            self.dirty[s] = True
            self.latest_ts = max(self.latest_ts, float(end.max()))

        index = self.index
        lo = 0
        slots: list[int] = []
        new: list[int] = []
        seen: dict[int, float] = {}  # slot -> connection start, for this run's slots
        for i, key in enumerate(klist):
            slot = index.get(key)
            if slot is not None and seen.get(slot, starts[i]) != starts[i]:
                # Two connections on one 5-tuple in this run: account the earlier one
                # before the later one ends its flow.
                account(lo, i, slots, new)
                lo, slots, new, seen = i, [], [], {}
            if slot is not None and slot not in seen and float(self.first[slot]) != starts[i]:
                self._finish(np.array([slot], dtype=np.int64), "port-reuse")
                slot = None
            if slot is None:
                slot = self._new_slot(key)
                new.append(i)
            seen[slot] = starts[i]
            slots.append(slot)
        account(lo, n, slots, new)
        self._enforce_cap()
