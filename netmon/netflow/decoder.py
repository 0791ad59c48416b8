"""NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) datagrams -> columns of flows.

Pure module (stdlib and numpy only). It runs on the reactor thread in netmon, inside the
flow-export collector (:mod:`netmon.sources.collector`), which is the decoder's one
owner; nothing here is locked, so no other thread may touch a :class:`NetflowDecoder`.
What it hands out (:class:`FlowRecords`) is immutable by convention and may cross threads.

This module holds the decoder's state: templates per exporter, version, observation
domain and template ID; data sets waiting for their template; sequence numbers. How
templates and records become columns is :mod:`netmon.netflow.templates`; template
sets and the per-datagram work caps are :mod:`netmon.netflow.tsets`; one datagram's
staged changes :mod:`netmon.netflow.txn`.

- A datagram is all or nothing: its template changes, buffered sets and sequence
  numbers are staged in a :class:`Txn` and applied only once the whole datagram has
  parsed, so a malformed tail cannot leave half of a datagram behind.
- Data sets for templates not seen yet are held (bounded, for ``unknown_hold`` seconds)
  and decoded when their template arrives: exporters send templates only now and then.
  They are kept per template key, so a template finds its own sets without a scan.
- Work is linear in the datagram and capped (:class:`netmon.netflow.tsets.Limits`): a
  datagram reaching a cap is cut there and counted in ``shed``, never decoded at a
  cost a sender chooses.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import replace

import numpy as np

from netmon.netflow.templates import (
    HALF,
    U32,
    V5_DTYPE,
    V5_HEADER,
    V5_MAX_COUNT,
    V5_RECORD,
    V5_ROLES,
    Ctx,
    FlowRecords,
    Malformed,
    Shed,
    Template,
    build_records,
    walk_records,
)
from netmon.netflow.tsets import Budget, Limits, TemplateCache, TemplateOp
from netmon.netflow.txn import Group, Pending, Txn

__all__ = ["NetflowDecoder"]

#: Default cap on templates and on sequence-tracked streams (see NetflowDecoder).
MAX_STREAMS = 4096
#: Default caps on the work of one datagram.
LIMITS = Limits()


class NetflowDecoder:
    """Decodes NetFlow v5/v9 and IPFIX datagrams, keeping templates, buffered data sets
    and sequence numbers per exporter and observation domain. Counters are plain
    attributes the owner reads."""

    def __init__(self, *, unknown_hold: float = 10.0, unknown_max: int = 1000,
                 unknown_max_bytes: int = 4 << 20,
                 max_streams: int = MAX_STREAMS, limits: Limits = LIMITS) -> None:
        self.unknown_hold = unknown_hold
        self.unknown_max = unknown_max
        self.unknown_max_bytes = unknown_max_bytes  # held sets' bytes: bounded memory
        #: Cap on templates, and on (exporter, domain) streams tracked for sequence and
        #: init time: UDP senders are unauthenticated, and one spraying made-up domains
        #: or template IDs must not grow memory without bound.
        self.max_streams = max_streams
        #: Caps on the work one datagram may cause (see netmon.netflow.tsets).
        self.limits = limits
        self.templates_refused = 0  #: new templates refused because the table was full
        self.datagrams = 0  #: datagrams received, malformed ones included
        self.records = 0  #: flow records returned
        self.malformed = 0  #: datagrams dropped as malformed (and buffered sets, see decode)
        self.malformed_reasons: dict[str, int] = {}
        self.shed = 0  #: datagrams cut short at a cap of ``limits`` (the rest skipped)
        self.shed_reasons: dict[str, int] = {}  #: ... by the cap that cut them
        self.unknown_dropped = 0  #: data sets dropped: their template never came
        self.template_withdrawn = 0  #: IPFIX withdrawal records (withdraw-all counts once)
        self.skipped_records = 0  #: records with neither IPv4 nor IPv6 addresses
        self.lost = 0  #: records (v9: datagrams) missing by sequence numbers
        self.by_version: dict[int, int] = {}  #: datagrams per version (5, 9, 10)
        self._templates: dict[tuple[str, int, int, int], Template] = {}
        #: the keys of _templates by (exporter, version, domain, options?): a
        #: withdraw-all touches its own templates only, not every exporter's
        self._kinds: dict[tuple[str, int, int, bool], set[tuple[str, int, int, int]]] = {}
        self._seq: dict[tuple[str, int, int], tuple[int, int]] = {}  # (last seq, its count)
        self._inclusive: set[tuple[str, int, int]] = set()  # see _sequence
        self._init_ms: dict[tuple[str, int], int] = {}  # IPFIX (exporter, domain) -> IE 160
        self._pending: dict[tuple[str, int, int, int], list[Pending]] = {}
        self._order: deque[Pending] = deque()
        self._npending = 0
        self._pending_bytes = 0
        self._cache = TemplateCache()

    @property
    def templates(self) -> int:
        """Templates known now (all exporters and domains)."""
        return len(self._templates)

    @property
    def unknown_buffered(self) -> int:
        """Data sets held now for templates not seen yet."""
        return self._npending

    # ---------------------------------------------------------------- entry points
    def decode(self, data: bytes, exporter: str, now: float) -> list[tuple[int, FlowRecords]]:
        """Decode one datagram from ``exporter`` (address text) received at ``now`` (epoch s).

        Returns (domain, records) pairs: domain is the v9 source ID / IPFIX observation
        domain ID / for v5 (engine_type << 8 | engine_id). May also return records of data
        sets buffered earlier for a template that this datagram defined. Never raises on
        bad input: a malformed datagram is counted in ``malformed`` and dropped whole
        (records already decoded from a datagram that turns out malformed later are also
        dropped — a datagram is all or nothing). A buffered set that turns out malformed
        once its template comes is dropped alone and counted in ``malformed`` too. A
        datagram that reaches a cap of ``limits`` is cut there and counted in ``shed``:
        what came before the cap counts, the rest is skipped.
        """
        self.datagrams += 1
        if not isinstance(data, bytes):
            data = bytes(data)
        try:
            if len(data) < 2:
                raise Malformed("too short")
            version = (data[0] << 8) | data[1]
            if version not in (5, 9, 10):
                raise Malformed("unknown version")
            self.by_version[version] = self.by_version.get(version, 0) + 1
            if version == 5:
                return self._decode_v5(data, exporter)
            return self._decode_sets(data, exporter, now, version)
        except Malformed as bad:
            self._count_malformed(bad.args[0])
            return []

    def expire(self, now: float) -> None:
        """Drop buffered data sets older than unknown_hold seconds, counting their sets
        in unknown_dropped."""
        limit = now - self.unknown_hold
        order = self._order
        while order and (not order[0].alive or order[0].at < limit):
            p = order.popleft()
            if p.alive:
                self._drop_pending(p)

    # ---------------------------------------------------------------- versions
    def _decode_v5(self, data: bytes, exporter: str) -> list[tuple[int, FlowRecords]]:
        if len(data) < V5_HEADER:
            raise Malformed("too short")
        count, uptime, secs, nsecs, seq, etype, eid = struct.unpack_from("!HIIIIBB", data, 2)
        if count > V5_MAX_COUNT or len(data) != V5_HEADER + V5_RECORD * count:
            raise Malformed("v5 count")
        domain = etype << 8 | eid
        self._sequence((exporter, 5, domain), seq, count)
        if not count:
            return []
        rec = np.frombuffer(data, V5_DTYPE, count, V5_HEADER)
        records = build_records(rec, V5_ROLES, Ctx(secs + nsecs / 1e9, uptime))
        self.records += count
        return [(domain, records)]

    def _decode_sets(self, data: bytes, exporter: str, now: float, version: int
                     ) -> list[tuple[int, FlowRecords]]:
        """v9 and IPFIX: a header, then sets (flowsets) of templates or data."""
        if version == 9:
            if len(data) < 20:
                raise Malformed("too short")
            uptime, secs, seq, domain = struct.unpack_from("!IIII", data, 4)
            ctx, off, tset, oset = Ctx(float(secs), uptime), 20, 0, 1
        else:
            if len(data) < 16:
                raise Malformed("too short")
            length, secs, seq, domain = struct.unpack_from("!HIII", data, 2)
            if length != len(data):
                raise Malformed("bad length")
            ctx, off, tset, oset = Ctx(float(secs), None,
                                        self._init_ms.get((exporter, domain))), 16, 2, 3
        txn = Txn(Budget.of(self.limits))
        budget = txn.budget
        end = len(data)
        try:
            while end - off >= 4:  # a v9 datagram may end in a few bytes of padding
                set_id, set_len = struct.unpack_from("!HH", data, off)
                if set_len < 4 or off + set_len > end:
                    raise Malformed("bad set length")
                if budget.sets <= 0:  # (Budget.take, inline: this runs per set)
                    raise Shed("sets")
                budget.sets -= 1
                if set_id == tset or set_id == oset:
                    ops, cut = self._cache.ops(version, set_id, data[off + 4:off + set_len],
                                               budget)
                    self._apply_templates(txn, ops, exporter, version, domain)
                    if cut is not None:  # the templates before the cap count
                        raise Shed(cut)
                elif set_id >= 256:
                    txn.data_sets += 1
                    key = (exporter, version, domain, set_id)
                    tpl = self._lookup(txn, key)
                    if tpl is None:
                        if set_len > 4:  # an empty set has no records to wait for
                            txn.pending.setdefault(key, []).append(
                                Pending(key, now, data[off + 4:off + set_len], ctx))
                            txn.unknown_sets += 1
                    else:
                        txn.nrec += self._data_set(txn, tpl, data, off + 4, off + set_len,
                                                   ctx)
                off += set_len  # set IDs 4..255 (v9: 2..255) are reserved: skipped
        except Shed as cap:
            txn.cut = cap.args[0]
        out = txn.build()
        self._commit(txn)
        if txn.init_ms is not None and version == 10:
            if len(self._init_ms) < self.max_streams or (exporter, domain) in self._init_ms:
                self._init_ms[(exporter, domain)] = txn.init_ms
        if version == 9:
            self._sequence((exporter, 9, domain), seq, 1)  # v9 counts export packets
        elif txn.data_sets:  # template-only messages are not trusted to carry it
            self._sequence((exporter, 10, domain), seq,
                           None if txn.unknown_sets or txn.cut else txn.nrec)
        if not len(out):
            return []
        self.records += len(out)
        return [(domain, out)]

    # ---------------------------------------------------------------- templates
    def _lookup(self, txn: Txn, key: tuple[str, int, int, int]) -> Template | None:
        if key in txn.templates:
            return txn.templates[key]
        tpl = self._templates.get(key)
        if tpl is not None and (*key[:3], tpl.options) in txn.cleared:
            return None
        return tpl

    def _apply_templates(self, txn: Txn, ops: list[TemplateOp], exporter: str,
                         version: int, domain: int) -> None:
        live = txn.live
        for op, tid, tpl in ops:
            if op == "withdraw all":  # (one datagram is one exporter, version, domain)
                txn.withdrawn += 1
                options = bool(tid)
                txn.cleared.add((exporter, version, domain, options))
                for k in live[options]:
                    del txn.templates[k]
                live[options].clear()
                continue
            key = (exporter, version, domain, tid)
            live[0].discard(key)
            live[1].discard(key)
            if op == "withdraw":
                txn.withdrawn += 1
                txn.templates[key] = None
                continue
            assert tpl is not None
            txn.templates[key] = tpl
            live[tpl.options].add(key)
            # Data that came before its template: this datagram's own first (a failure
            # there is this datagram's), then sets held from earlier datagrams.
            for p in txn.pending.pop(key, ()):
                txn.unknown_sets -= 1
                txn.nrec += self._data_set(txn, tpl, p.body, 0, len(p.body), p.ctx)
            if key in self._pending and key not in txn.consumed:
                txn.consumed[key] = 0
                for i, p in enumerate(self._pending[key]):
                    txn.budget.take("sets")
                    try:
                        self._data_set(txn, tpl, p.body, 0, len(p.body), p.ctx)
                    except Malformed as bad:
                        txn.late_bad.append(bad.args[0])
                    txn.consumed[key] = i + 1  # (a Shed leaves the rest held)

    def _data_set(self, txn: Txn, tpl: Template, data: bytes, b0: int, b1: int,
                  ctx: Ctx) -> int:
        """Add one data set to its template's group; returns its number of records."""
        if tpl.variable:
            per = len(tpl.lengths)
            n, buf = walk_records(tpl, data, b0, b1, txn.budget.var_fields // per)
            txn.budget.var_fields -= n * per
            b0 = 0
        else:
            n, buf = (b1 - b0) // tpl.minlen, data  # the remainder is padding
        if n == 0 or tpl.options:
            if n and tpl.init_at >= 0 and not tpl.variable:
                at = b0 + (n - 1) * tpl.minlen + tpl.init_at
                txn.init_ms = struct.unpack_from("!Q", data, at)[0]
            return n
        if txn.init_ms is not None and ctx.uptime is None and ctx.init_ms != txn.init_ms:
            ctx = replace(ctx, init_ms=txn.init_ms)
        if tpl.dtype is None:
            txn.skipped += n
            return n
        txn.budget.take("records", n)
        gkey = (id(tpl), ctx.init_ms is None)
        group = txn.groups.get(gkey)
        if group is None:
            txn.budget.take("decodes")
            group = txn.groups[gkey] = Group(tpl)
        group.parts.append((buf, b0, n, ctx))
        return n

    # ---------------------------------------------------------------- state changes
    def _commit(self, txn: Txn) -> None:
        if txn.cut is not None:
            self.shed += 1
            self.shed_reasons[txn.cut] = self.shed_reasons.get(txn.cut, 0) + 1
        for kind in txn.cleared:
            for k in self._kinds.pop(kind, ()):
                del self._templates[k]
        for key, tpl in txn.templates.items():
            old = self._templates.get(key)
            if old is not None:
                self._kinds[(*key[:3], old.options)].discard(key)
            if tpl is None:
                self._templates.pop(key, None)
            elif old is not None or len(self._templates) < self.max_streams:
                self._templates[key] = tpl
                self._kinds.setdefault((*key[:3], tpl.options), set()).add(key)
            else:
                self.templates_refused += 1  # its data will wait, then count as unknown
        for key, done in txn.consumed.items():
            held = self._pending.pop(key, [])
            for p in held[:done]:
                p.alive = False
                self._npending -= 1
                self._pending_bytes -= len(p.body)
            if done < len(held):
                self._pending[key] = held[done:]
        if txn.consumed and len(self._order) > 2 * self.unknown_max + 16:
            self._order = deque(p for p in self._order if p.alive)
        for held in txn.pending.values():
            for p in held:
                self._pending.setdefault(p.key, []).append(p)
                self._order.append(p)
                self._npending += 1
                self._pending_bytes += len(p.body)
        while self._npending > self.unknown_max or \
                self._pending_bytes > self.unknown_max_bytes:
            p = self._order.popleft()
            if p.alive:
                self._drop_pending(p)
        self.template_withdrawn += txn.withdrawn
        self.skipped_records += txn.skipped
        for reason in txn.late_bad:
            self._count_malformed(reason)

    def _drop_pending(self, p: Pending) -> None:
        p.alive = False
        held = self._pending[p.key]
        held.remove(p)
        if not held:
            del self._pending[p.key]
        self._npending -= 1
        self._pending_bytes -= len(p.body)
        self.unknown_dropped += 1

    def _sequence(self, key: tuple[str, int, int], seq: int, count: int | None) -> None:
        """Count the gap between the sequence number expected and ``seq`` as lost;
        ``count`` advances it (None: unknown, resync on the next datagram).

        Some exporters (softflowd's IPFIX) number a message by the records sent
        *including* its own, where RFC 7011 says "before" it: a stream whose numbers
        step by the new message's count instead of the previous one's is taken to
        count that way from then on, so its messages are not reported lost."""
        last = self._seq.get(key)
        if last is not None:
            prev_seq, prev_n = last
            if key in self._inclusive:
                expected = (prev_seq + (count or 0)) & U32
            else:
                expected = (prev_seq + prev_n) & U32
                if (count and count != prev_n and seq == (prev_seq + count) & U32):
                    self._inclusive.add(key)
                    expected = seq
            gap = (seq - expected) & U32
            if gap < HALF:  # a larger "gap" is a step back: a restart or reordering
                self.lost += gap
        if count is None:
            self._seq.pop(key, None)
        else:
            if len(self._seq) >= self.max_streams and key not in self._seq:
                self._seq.pop(next(iter(self._seq)))  # forget the oldest stream's place
                self._inclusive.discard(key)
            self._seq[key] = (seq, count)

    def _count_malformed(self, reason: str) -> None:
        self.malformed += 1
        self.malformed_reasons[reason] = self.malformed_reasons.get(reason, 0) + 1


