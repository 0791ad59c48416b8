"""FrameRing: the raw bytes of recent frames, indexed by flow, under a byte budget.

Pure module (numpy only). One owner: the reactor thread, where the engine appends each
batch right after the flow table has counted it and where the UI link asks for a
flow's packets and frames. Other threads get copies (numpy arrays, ``bytes``).

Why a ring: dissection is tshark's job and tshark needs the frames' bytes, whatever the
source (live, file, stdin, SSH). Keeping the decoder's own buffers costs no copy on the
hot path: a batch carries references to the buffers its frames sit in (see
:class:`netmon.ingest.batch.PacketBatch`), the ring keeps those ``bytes`` objects and one
index row per packet, and forgets whole batches, oldest first, once the buffers and the
index together exceed the budget. Every step of :meth:`FrameRing.append` is vectorised.

Index rows live in growable numpy columns between ``_head`` and ``_tail``; evicting a
batch moves ``_head``, and the columns are compacted when they would otherwise grow.
A packet is named by its flow id and its number within the flow (``seq``: 0 is the
flow's first packet), which stays valid while older packets are evicted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from netmon.ingest.batch import PacketBatch

#: The index columns and their types: flow id, packet number in the flow, chunk id
#: (-1: bytes unknown; a chunk is a buffer with its link type), offset and captured
#: length in the chunk, capture time, direction (True: a->b, from the initiator), wire
#: size, TCP flags or ICMP type, IP protocol.
_COLUMNS = (("flow", np.int64), ("seq", np.int64), ("chunk", np.int64), ("off", np.int64),
            ("len", np.int32), ("ts", np.float64), ("a2b", np.bool_), ("size", np.int32),
            ("flags", np.uint8), ("proto", np.uint8))
#: Bytes of index per retained packet (counted against the budget with the buffers).
ROW_BYTES = sum(np.dtype(t).itemsize for _, t in _COLUMNS)

DEFAULT_BUDGET = 32 << 20


@dataclass(frozen=True, slots=True)
class RingPackets:
    """The retained packets of one flow, oldest first (numpy copies).

    ``dropped_older`` counts the flow's packets before the oldest one retained (evicted
    from the ring); it is -1 when the ring holds none of the flow's packets.
    """

    seq: np.ndarray
    ts: np.ndarray
    a2b: np.ndarray
    size: np.ndarray
    flags: np.ndarray
    proto: np.ndarray
    has_bytes: np.ndarray
    dropped_older: int

    def __len__(self) -> int:
        return len(self.seq)


@dataclass(frozen=True, slots=True)
class RingFrame:
    """One retained frame: what a capture-file writer needs."""

    seq: int
    ts: float
    wirelen: int
    linktype: int
    data: bytes


@dataclass(slots=True)
class _Segment:
    """One appended batch: where its rows end and what it keeps alive."""

    end: int  # row (absolute position in the columns) after its last row
    rows: int
    chunks: tuple[int, ...]


class FrameRing:
    """Recent frames of every flow, at most ``budget`` bytes of buffers and index.

    The newest batch is always kept, so a single batch larger than the whole budget
    still leaves something to dissect; every older batch counts against the budget.
    A budget of 0 keeps nothing.
    """

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = max(0, int(budget))
        self._cap = 0
        self._cols: dict[str, np.ndarray] = {}
        self._head = 0
        self._tail = 0
        self._segments: deque[_Segment] = deque()
        self._grow(1024)
        # chunk id -> [buffer, segments using it, link type];
        # (id(buffer), link type) -> chunk id while kept
        self._chunks: dict[int, list] = {}
        self._by_obj: dict[tuple[int, int], int] = {}
        self._next_chunk = 0
        self.buffer_bytes = 0
        self.evicted_packets = 0

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        """Packets retained."""
        return self._tail - self._head

    @property
    def nbytes(self) -> int:
        """Bytes counted against the budget: kept buffers plus index rows."""
        return self.buffer_bytes + len(self) * ROW_BYTES

    # ------------------------------------------------------------------ append
    def append(self, batch: PacketBatch, flow_id: np.ndarray, a2b: np.ndarray,
               seq: np.ndarray) -> None:
        """Retain ``batch``: ``flow_id``, ``a2b`` (direction) and ``seq`` (number within
        the flow) give each packet's place, as the flow table assigned it."""
        n = len(batch)
        if not n or not self.budget:
            return
        self._reserve(n)
        sl = slice(self._tail, self._tail + n)
        c = self._cols
        c["flow"][sl] = flow_id
        c["seq"][sl] = seq
        c["ts"][sl] = batch.ts
        c["a2b"][sl] = a2b
        c["size"][sl] = batch.wirelen
        c["flags"][sl] = batch.flags
        c["proto"][sl] = batch.proto
        chunks: tuple[int, ...] = ()
        if batch.raw_off is None or not batch.bufs:
            c["chunk"][sl] = -1
            c["off"][sl] = -1
            c["len"][sl] = 0
        else:
            chunks = tuple(self._keep(b, lt) for b, lt in zip(batch.bufs, batch.linktypes,
                                                              strict=True))
            local = batch.raw_chunk
            if local.min() >= 0:
                if chunks == tuple(range(chunks[0], chunks[0] + len(chunks))):  # in order
                    np.add(local, chunks[0], out=c["chunk"][sl])
                else:
                    c["chunk"][sl] = np.array(chunks, dtype=np.int64).take(local)
                c["len"][sl] = batch.raw_len
            else:
                known = local >= 0
                ids = np.array(chunks, dtype=np.int64).take(np.where(known, local, 0))
                c["chunk"][sl] = np.where(known, ids, -1)
                c["len"][sl] = np.where(known, batch.raw_len, 0)
            c["off"][sl] = batch.raw_off
        self._tail += n
        self._segments.append(_Segment(self._tail, n, chunks))
        while len(self._segments) > 1 and self.nbytes > self.budget:
            self._evict_oldest()

    def _keep(self, buf: bytes, linktype: int) -> int:
        """The chunk id of ``buf`` read as ``linktype``, registering it (and counting its
        bytes) once: the engine may hand the same buffer in two batches (a batch split
        at a tick). A pcapng buffer holding two link types is two chunks, counted
        twice: rare, and the budget errs on the safe side."""
        key = (id(buf), linktype)
        cid = self._by_obj.get(key)
        if cid is not None and self._chunks[cid][0] is buf:
            self._chunks[cid][1] += 1
            return cid
        cid = self._next_chunk
        self._next_chunk += 1
        self._chunks[cid] = [buf, 1, linktype]
        self._by_obj[key] = cid
        self.buffer_bytes += len(buf)
        return cid

    def _evict_oldest(self) -> None:
        seg = self._segments.popleft()
        self._head = seg.end
        self.evicted_packets += seg.rows
        for cid in seg.chunks:
            entry = self._chunks[cid]
            entry[1] -= 1
            if entry[1] == 0:
                del self._chunks[cid]
                del self._by_obj[(id(entry[0]), entry[2])]
                self.buffer_bytes -= len(entry[0])

    def clear(self) -> None:
        """Forget every frame."""
        while self._segments:
            self._evict_oldest()
        self._head = self._tail = 0

    # ------------------------------------------------------------------ storage
    def _grow(self, cap: int) -> None:
        live = slice(self._head, self._tail)
        new = {}
        for name, dtype in _COLUMNS:
            col = np.empty(cap, dtype=dtype)
            old = self._cols.get(name)
            if old is not None:
                col[:len(self)] = old[live]
            new[name] = col
        self._cols = new
        self._cap = cap
        shift = self._head
        self._head, self._tail = 0, self._tail - shift
        for seg in self._segments:
            seg.end -= shift

    def _reserve(self, n: int) -> None:
        if self._tail + n <= self._cap:
            return
        need = len(self) + n
        # Compact in place when half the columns are evicted rows; else double.
        cap = self._cap if need <= self._cap // 2 else max(self._cap * 2, need)
        self._grow(cap)

    # ------------------------------------------------------------------ queries
    def _rows_of(self, flow_id: int) -> np.ndarray:
        """Absolute row positions of the flow's retained packets, oldest first."""
        h = self._head
        return np.flatnonzero(self._cols["flow"][h:self._tail] == flow_id) + h

    def packets_of(self, flow_id: int) -> RingPackets:
        """The flow's retained packets (vectorised: one comparison over the index)."""
        rows = self._rows_of(flow_id)
        c = self._cols
        seq = c["seq"][rows]
        return RingPackets(seq=seq, ts=c["ts"][rows], a2b=c["a2b"][rows],
                           size=c["size"][rows], flags=c["flags"][rows],
                           proto=c["proto"][rows], has_bytes=c["chunk"][rows] >= 0,
                           dropped_older=int(seq[0]) if len(seq) else -1)

    def frames_of(self, flow_id: int, upto_seq: int | None = None,
                  limit: int | None = None) -> list[RingFrame]:
        """The flow's retained frames whose bytes are known, oldest first: those up to
        packet ``upto_seq`` when given, at most the last ``limit`` of them."""
        rows = self._rows_of(flow_id)
        c = self._cols
        keep = c["chunk"][rows] >= 0
        if upto_seq is not None:
            keep &= c["seq"][rows] <= upto_seq
        rows = rows[keep]
        if limit is not None:
            rows = rows[max(len(rows) - limit, 0):]
        out = []
        for seq, ts, size, cid, off, ln in zip(
                c["seq"][rows].tolist(), c["ts"][rows].tolist(), c["size"][rows].tolist(),
                c["chunk"][rows].tolist(), c["off"][rows].tolist(), c["len"][rows].tolist(),
                strict=True):
            buf, _, linktype = self._chunks[cid]
            out.append(RingFrame(seq, ts, size, linktype, buf[off:off + ln]))
        return out

    def flows(self) -> np.ndarray:
        """Ids of the flows with at least one retained packet (sorted)."""
        return np.unique(self._cols["flow"][self._head:self._tail])
