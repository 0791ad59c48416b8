"""PacketStore: every flow's first and most recent packets, as snapped copies, in a budget.

Pure module (numpy only). One owner: the reactor thread, where the engine appends each
batch right after the flow table has counted it, tells the store which flows ended, and
where the UI link asks for a flow's packets and frames. Other threads get copies
(numpy arrays, ``bytes``).

What is kept. Per flow, its first ``first`` packets (32: the handshake, the request,
the first answer) and its ``recent`` most recent ones (32), each as one index row
(number in the flow, time, direction, wire size, TCP flags or ICMP type, protocol,
link type, bytes kept) plus a COPY of the captured frame's first ``snap`` bytes
(:data:`SNAP`, 2048: a whole Ethernet frame with its headers, TLS ClientHello and
HTTP request headers included; longer GRO/jumbo frames lose their tail). Copies, not
references for long: the decoder's buffers are megabytes holding thousands of other
packets, which is why the frame ring this replaces kept only seconds of traffic.

Memory. Copied bytes sit in one arena of 128-byte blocks; a frame takes the smallest
width class that holds it (:data:`WIDTHS`: 128, 256, 512, 1536 or 2048 bytes), so a
66-byte ACK costs one block and 2 KB only goes to frames that need it. Index rows cost
:data:`ROW_BYTES` each. Everything allocated (index columns, arena, held buffers, the
list of ended flows) counts against ``budget``; :attr:`PacketStore.nbytes` never
exceeds it (re-sizing briefly holds old and new arrays).

Hot path (:meth:`PacketStore.append`), all vectorised: a packet is kept when it is one
of its flow's first (``seq < first``) or one of the last ``recent`` of its flow in this
batch (``seq >= count - recent``, ``count`` being the flow's packets after the batch).
Kept rows go to the END of the index, and their bytes are not copied yet: the store
holds the decoder's buffers they sit in (immutable ``bytes``, counted whole against the
budget) when most of those buffers' bytes are kept frames, else (bulk traffic: a few
kept frames per megabyte) it gathers the kept frames into one compact buffer and holds
that. A flow's older recent rows are not removed there: queries hide them
(``seq <= newest - recent``) and the next compaction drops them. When the index may not
grow within the budget, a compaction (:mod:`netmon.ingest.packetevict`) plans which rows
stay under a low-water mark, fairly (stale rows, then ended flows oldest first, then
water-filling of live flows' recent packets, then of their first packets), packs the
kept rows to the front of the index and of the arena, in place, copies the kept rows of
held buffers in after them (one fancy-indexing copy per buffer and width class, see
:mod:`netmon.ingest.packetarena`), and lets go of every held buffer. Bytes dropped
before their first compaction are never copied: on the ingest benchmark's file (1 M
packets over 50 k flows, ~600 MB through a 128 MB budget) the store's own time went
from 0.89 s (copying every kept frame on append) to 0.25 s, and to 0.12 s with
appends that index views when every packet of a batch is kept and a plan that sorts
nothing (:mod:`netmon.ingest.packetevict`).
"""

from __future__ import annotations

import numpy as np

from netmon.ingest.batch import PacketBatch
from netmon.ingest.keptpackets import TIER_FIRST, TIER_RECENT, RingFrame, StorePackets
from netmon.ingest.packetarena import BLOCK, copy_frames, gather_frames, pack_blocks
from netmon.ingest.packetevict import EndedFlows, plan

#: Bytes kept of each frame: enough for any Ethernet frame (headers, handshakes,
#: requests); longer frames (GRO, jumbo) are snapped, their wire size stays exact.
SNAP = 2048
#: A flow's first packets kept, and its most recent ones.
FIRST = 32
RECENT = 32
#: Default budget (MB): ~280 k full-size frames, or ~750 k small ones.
DEFAULT_MB = 128
#: The width classes of kept frames (multiples of the arena's 128-byte BLOCK).
WIDTHS = (128, 256, 512, 1536, 2048)
#: A compaction keeps at most this share of the budget, so the next one is some way off:
#: each moves up to LOW_WATER of the budget to make room for 1 - LOW_WATER of new rows
#: (0.15: under constant pressure the store holds 15-100% of its budget; measured on
#: the bench file, 1 M packets over 50 k flows, the store's own time was 0.115 s at
#: 0.15, 0.08 s at 0.05-0.1, 0.14 s at 0.25: each compaction plans over every row
#: held and copies the survivors again. Lower marks were not taken: right after a
#: compaction the store would hold too little, e.g. not every busy flow's first 32).
LOW_WATER = 0.15
#: An append is cut into pieces of at most this share of the budget.
_PIECE = 0.25

#: The index columns: flow id, packet number in the flow, capture time, wire size,
#: bytes kept (0: none), where they are (``held`` -1: from arena block
#: ``block`` on; else at offset ``block`` of held buffer ``held``), link type, TCP flags
#: or ICMP type (with the tunnel bit), IP protocol, direction (True: a->b).
_COLUMNS = (("flow", np.int64), ("seq", np.int64), ("ts", np.float64), ("size", np.int32),
            ("slen", np.uint16), ("block", np.int32),
            ("held", np.int32), ("linktype", np.uint16), ("flags", np.uint16),
            ("proto", np.uint8), ("a2b", np.bool_))
#: Bytes of index per kept packet (counted against the budget with the arena).
ROW_BYTES = sum(np.dtype(t).itemsize for _, t in _COLUMNS)


def _widths(snap: int) -> np.ndarray:
    top = -(-snap // BLOCK) * BLOCK
    return np.array([w for w in WIDTHS if w < top] + [top], dtype=np.int64)


def flow_counts(flow_id: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Per row, its flow's packet count after the batch (last seq in the batch + 1):
    what :meth:`PacketStore.append` needs when the caller does not know it."""
    order = np.argsort(flow_id, kind="stable")
    f = flow_id[order]
    ends = np.r_[np.flatnonzero(f[1:] != f[:-1]), len(f) - 1]
    starts = np.r_[0, ends[:-1] + 1]
    top = np.maximum.reduceat(seq[order], starts) + 1
    out = np.empty(len(f), dtype=np.int64)
    out[order] = np.repeat(top, ends - starts + 1)
    return out


class PacketStore:
    """Per flow: first ``first`` and most recent ``recent`` packets, in ``budget`` bytes.

    A budget of 0 keeps nothing (headless runs: nothing can ask).
    """

    def __init__(self, budget: int = DEFAULT_MB << 20, first: int = FIRST,
                 recent: int = RECENT, snap: int = SNAP) -> None:
        if snap < 1 or first < 0 or recent < 1:
            raise ValueError("snap and recent must be positive, first not negative")
        self.budget = max(0, int(budget))
        self.first = int(first)
        self.recent = int(recent)
        self.snap = int(snap)
        self._widths = _widths(self.snap)
        self._blocks = self._widths // BLOCK
        # Arena blocks per kept length (0: none), as a table: cheaper than a search.
        lens = np.arange(self.snap + 1)
        self._nb_of = np.where(lens > 0, self._blocks[np.minimum(
            np.searchsorted(self._widths, lens), len(self._blocks) - 1)], 0).astype(np.int64)
        self._cols: dict[str, np.ndarray] = {n: np.empty(0, dtype=t) for n, t in _COLUMNS}
        self._n = 0  # index rows used
        self._arena = np.empty((0, BLOCK), dtype=np.uint8)
        self._bt = 0  # arena blocks used
        # Decoder buffers holding kept rows' bytes until the next compaction copies them.
        self._held: list[bytes] = []
        self._held_at: dict[int, int] = {}  # id(buffer) -> index in _held
        self._held_bytes = 0
        self._ended = EndedFlows()
        self._since = [0, 0]  # index rows, held bytes added since the last compaction
        #: Budget left free by compactions for the ids of flows that end meanwhile.
        self._ended_reserve = self.budget // 64
        self.compactions = 0
        self.dropped = {"stale": 0, "ended": 0, "recent": 0, "first": 0}

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        """Index rows held (stale recent rows included until the next compaction)."""
        return self._n

    @property
    def nbytes(self) -> int:
        """Bytes counted against the budget: allocated index and arena, held buffers,
        the ended list."""
        return (len(self._cols["flow"]) * ROW_BYTES + self._arena.nbytes
                + self._held_bytes + self._ended.nbytes)

    @property
    def used_bytes(self) -> int:
        """Bytes of the rows, blocks and held buffers in use (at most :attr:`nbytes`)."""
        return self._n * ROW_BYTES + self._bt * BLOCK + self._held_bytes + self._ended.nbytes

    # ------------------------------------------------------------------ append
    def append(self, batch: PacketBatch, flow_id: np.ndarray, a2b: np.ndarray,
               seq: np.ndarray, count: np.ndarray | None = None) -> None:
        """Keep what ``batch`` adds to its flows' first and recent packets.

        ``flow_id``, ``a2b`` (direction) and ``seq`` (number within the flow) give each
        packet's place, as the flow table assigned it; ``count`` (optional, per row) is
        the flow's packet count after this batch, which the engine reads off the table
        for free (else it is computed here, with a sort)."""
        n = len(batch)
        if not n or not self.budget:
            return
        if count is None:
            count = flow_counts(flow_id, seq)
        keep = (seq < self.first) | (seq >= count - self.recent)
        # Views, not copies, when every packet is kept (short flows: the common case).
        idx: np.ndarray | slice = slice(None) if keep.all() else np.flatnonzero(keep)
        m = n if isinstance(idx, slice) else len(idx)
        if not m:
            return
        if batch.raw_off is None or not batch.bufs:
            chunk = np.full(m, -1, dtype=np.int64)
            off = length = chunk
        else:
            chunk, off, length = batch.raw_chunk[idx], batch.raw_off[idx], batch.raw_len[idx]
        has = (chunk >= 0) & (length > 0)
        every = bool(has.all())
        slen = np.minimum(length, self.snap) if every else np.where(
            has, np.minimum(length, self.snap), 0)
        lts = batch.linktypes or (0,)
        lt: np.ndarray | int = (lts[0] if every and len(lts) == 1 else np.where(
            has, np.array(lts, dtype=np.uint16)[np.maximum(chunk, 0)], 0))
        kept = int(slen.sum())
        piece = max(int(self.budget * _PIECE), 1)
        if not kept:
            used = []
        elif every and len(batch.bufs) == 1:
            used = [0]
        else:
            used = np.flatnonzero(np.bincount(chunk[has], minlength=len(batch.bufs))).tolist()
        raw = self._unheld(batch.bufs, used)
        if raw <= 2 * kept and m * ROW_BYTES + raw <= piece:
            # Most of the buffers' bytes are kept frames: hold them as they are.
            reserved, rows = 0, m
            while rows or raw > reserved:  # a compaction lets go of held buffers: again
                self._reserve(rows, raw - reserved)
                reserved, rows = raw, 0
                raw = self._unheld(batch.bufs, used)
            if every and len(used) == 1:
                held: np.ndarray | int = self._hold(batch.bufs[used[0]])
            else:
                where = np.full(len(batch.bufs) + 1, -1, dtype=np.int32)  # [-1]: no bytes
                for i in used:
                    where[i] = self._hold(batch.bufs[i])
                held = np.where(has, where[chunk], -1)
            self._append(batch, idx, flow_id, a2b, seq, held, off, slen, lt)
            return
        # Few of their bytes are kept (bulk traffic), or a lot at once for the budget:
        # the kept frames' bytes are gathered into compact buffers, in pieces that each
        # fit once the store has made room.
        if isinstance(idx, slice):
            idx = np.arange(n)
        lt = np.broadcast_to(lt, (m,))
        cost = ROW_BYTES + slen
        cum = np.cumsum(cost)
        total = int(cum[-1])
        cuts = np.r_[0, np.searchsorted(cum, np.arange(piece, total, piece), side="right"),
                     m]
        for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
            if hi > lo and int(cum[hi - 1] - (cum[lo - 1] if lo else 0)) <= self.budget:
                sl = slice(lo, hi)
                buf, at = gather_frames(batch.bufs, chunk[sl], off[sl], slen[sl])
                self._reserve(hi - lo, len(buf))
                h = self._hold(buf) if buf else -1
                self._append(batch, idx[sl], flow_id, a2b, seq,
                             np.where(slen[sl] > 0, h, -1), at, slen[sl], lt[sl])

    def _hold(self, buf: bytes) -> int:
        """Hold ``buf`` (once) until the next compaction; its index in the held list."""
        at = self._held_at.get(id(buf))
        if at is None:
            at = self._held_at[id(buf)] = len(self._held)
            self._held.append(buf)
            self._held_bytes += len(buf)
            self._since[1] += len(buf)
        return at

    def _unheld(self, bufs: tuple[bytes, ...], used: list[int]) -> int:
        """Bytes of the buffers ``bufs[used]`` that the store does not hold yet."""
        seen = {id(bufs[i]): len(bufs[i]) for i in used if id(bufs[i]) not in self._held_at}
        return sum(seen.values())

    def _append(self, batch: PacketBatch, idx: np.ndarray | slice, flow_id: np.ndarray,
                a2b: np.ndarray, seq: np.ndarray, held: np.ndarray | int, off: np.ndarray,
                slen: np.ndarray, lt: np.ndarray | int) -> None:
        """Index rows ``idx`` of the batch; ``held`` (per row, or one for all): the held
        buffer their bytes are in, at ``off`` (-1: no bytes)."""
        m = len(slen)
        r0 = self._n
        sl = slice(r0, r0 + m)
        c = self._cols
        c["flow"][sl] = flow_id[idx]
        c["seq"][sl] = seq[idx]
        c["ts"][sl] = batch.ts[idx]
        c["size"][sl] = batch.wirelen[idx]
        c["slen"][sl] = slen
        c["flags"][sl] = batch.flags[idx]
        c["proto"][sl] = batch.proto[idx]
        c["a2b"][sl] = a2b[idx]
        c["held"][sl] = held
        c["block"][sl] = off if isinstance(held, int) and held >= 0 else np.where(
            np.asarray(held) >= 0, off, -1)
        c["linktype"][sl] = lt
        self._n += m
        self._since[0] += m

    # ------------------------------------------------------------------ room
    def _free(self) -> int:
        """Bytes of the budget that neither the arena, held buffers nor the ended list
        take, nor the reserve sets aside (the index is allocated out of these)."""
        return (self.budget - self._ended.nbytes - self._ended_reserve - self._held_bytes
                - self._arena.nbytes)

    def _reserve(self, rows: int, held: int) -> None:
        """Make room for ``rows`` more index rows and ``held`` more bytes of buffers:
        grow the index within the budget, else compact."""
        mcap = len(self._cols["flow"])
        avail = self._free() - held  # bytes the index may be allocated
        if self._n + rows <= mcap and mcap * ROW_BYTES <= avail:
            return
        if self._n + rows > mcap:
            new_m = min(max(2 * mcap, self._n + rows, 1024), max(avail, 0) // ROW_BYTES)
            if new_m >= self._n + rows:
                self._grow(new_m)
                return
        self._compact(rows, held)

    def _grow(self, mcap: int) -> None:
        n = self._n
        for name, dtype in _COLUMNS:
            col = np.empty(mcap, dtype=dtype)
            col[:n] = self._cols[name][:n]
            self._cols[name] = col

    def _compact(self, rows: int, held: int) -> None:
        """Make room for ``rows`` index rows and ``held`` bytes of buffers: drop rows
        (see :mod:`netmon.ingest.packetevict`) down to the low-water mark, pack the
        arena's kept bytes to its front and copy the kept rows of held buffers in after
        them, then let go of every held buffer."""
        self.compactions += 1
        n = self._n
        c = self._cols
        nb = self._nb_of[c["slen"][:n]]
        cost = ROW_BYTES + nb * BLOCK  # what a row costs once its bytes are in the arena
        need = rows * ROW_BYTES + held
        # The ended list only shrinks here (pruned below): counting it whole is safe.
        target = max(0, min(int(self.budget * LOW_WATER), self.budget - need)
                     - self._ended.nbytes - self._ended_reserve)
        flows = c["flow"][:n]
        p = plan(flows, c["seq"][:n], cost, self._ended.order(), first=self.first,
                 recent=self.recent, target=target)
        for k in self.dropped:
            self.dropped[k] += getattr(p, k)
        keep = p.rows
        k = len(keep)
        kept_nb = nb[keep]
        kept_blocks = int(kept_nb.sum())
        if p.ended_left is not None:
            self._ended.keep_only(p.ended_left)
        # Room left once packed, split between index rows and held buffers as the appends
        # since the last compaction used them.
        room = max(0, self.budget - self._ended.nbytes - self._ended_reserve - need
                   - k * ROW_BYTES - kept_blocks * BLOCK)
        r, b = self._since
        share = r * ROW_BYTES / (r * ROW_BYTES + b) if r or b else 0.25
        mcap = k + rows + int(room * share) // ROW_BYTES
        if mcap <= len(c["flow"]) <= mcap + room // 8 // ROW_BYTES:
            mcap = len(c["flow"])  # close enough: pack in place, no fresh pages
        for name, dtype in _COLUMNS:
            old = c[name]
            col = old if len(old) == mcap else np.empty(mcap, dtype=dtype)
            col[:k] = old[keep]
            c[name] = col
        self._n = k
        self._pack_bytes(k, kept_nb)
        self._since = [0, 0]

    def _pack_bytes(self, k: int, nb: np.ndarray) -> None:
        """The arena's kept blocks to its front (in place when it is the right size),
        then the held rows' bytes after them, by width class; held buffers let go.
        ``nb``: the blocks each of the ``k`` kept rows takes."""
        c = self._cols
        slen, held, block = c["slen"][:k], c["held"][:k], c["block"][:k]
        kept_blocks = int(nb.sum())
        old = self._arena
        fits = kept_blocks <= len(old) <= kept_blocks + (kept_blocks >> 3) + 256
        arena = old if fits else np.empty((kept_blocks, BLOCK), dtype=np.uint8)
        in_arena = held < 0
        starts = block[in_arena]
        bt = pack_blocks(old, arena, starts, nb[in_arena])
        block[in_arena] = starts
        rows = np.flatnonzero(~in_arena & (slen > 0))
        if len(rows):
            cls = np.searchsorted(self._widths, slen)
            bt = copy_frames(arena, bt, self._held, rows, held.astype(np.int64),
                             block.copy(), cls, self._widths, block)
        held[:] = -1
        self._arena, self._bt = arena, bt
        self._held, self._held_at, self._held_bytes = [], {}, 0

    # ------------------------------------------------------------------ ended flows
    def end_flows(self, flow_ids: np.ndarray) -> None:
        """These flows ended (left the flow table): their packets go before any live
        flow's, oldest ended first."""
        if not self.budget or not len(flow_ids) or not self._n:
            return
        self._ended.add(flow_ids)
        if self.nbytes > self.budget:  # past its reserve: make room (ended flows go)
            self._compact(0, 0)

    # ------------------------------------------------------------------ queries
    def _rows_of(self, flow_id: int) -> np.ndarray:
        """Index rows of the flow's kept packets, oldest first (stale rows hidden)."""
        c = self._cols
        rows = np.flatnonzero(c["flow"][:self._n] == flow_id)
        if len(rows):
            seq = c["seq"][rows]
            rows = rows[np.argsort(seq, kind="stable")]
            seq = c["seq"][rows]
            rows = rows[(seq < self.first) | (seq > seq[-1] - self.recent)]
        return rows

    def packets_of(self, flow_id: int) -> StorePackets:
        """The flow's kept packets (vectorised: one comparison over the index)."""
        rows = self._rows_of(flow_id)
        c = self._cols
        seq = c["seq"][rows]
        return StorePackets(seq=seq, ts=c["ts"][rows], a2b=c["a2b"][rows],
                            size=c["size"][rows], flags=c["flags"][rows],
                            proto=c["proto"][rows], has_bytes=c["slen"][rows] > 0,
                            tier=np.where(seq < self.first, TIER_FIRST,
                                          TIER_RECENT).astype(np.uint8))

    def frames_of(self, flow_id: int, upto_seq: int | None = None,
                  limit: int | None = None) -> list[RingFrame]:
        """The flow's kept frames whose bytes are known, oldest first: those up to
        packet ``upto_seq`` when given, at most the last ``limit`` of them."""
        rows = self._rows_of(flow_id)
        c = self._cols
        keep = c["slen"][rows] > 0
        if upto_seq is not None:
            keep &= c["seq"][rows] <= upto_seq
        rows = rows[keep]
        if limit is not None:
            rows = rows[max(len(rows) - limit, 0):]
        flat = self._arena.reshape(-1)
        out = []
        for seq, ts, size, lt, start, ln, h in zip(
                c["seq"][rows].tolist(), c["ts"][rows].tolist(), c["size"][rows].tolist(),
                c["linktype"][rows].tolist(), c["block"][rows].tolist(),
                c["slen"][rows].tolist(), c["held"][rows].tolist(), strict=True):
            if h >= 0:  # not copied yet: its bytes sit in a held buffer
                data = self._held[h][start:start + ln]
            else:
                data = flat[start * BLOCK:start * BLOCK + ln].tobytes()
            out.append(RingFrame(seq, ts, size, lt, data))
        return out

    def flows(self) -> np.ndarray:
        """Ids of the flows with at least one kept packet (sorted)."""
        return np.unique(self._cols["flow"][:self._n])
