"""Which kept packets go when the packet store is over its budget: a pure, vectorised plan.

Pure module (numpy only), called by :class:`netmon.ingest.packetstore.PacketStore` on
its owner thread (the reactor) when a compaction is due. It sees one row per kept
packet (flow id, number in the flow, bytes it costs) and decides which rows stay, in
this order of sacrifice:

1. stale recent rows: a flow's recent packets older than its newest ``recent`` (the
   store retires them lazily, here);
2. whole flows that have ended, the one that ended first going first;
3. recent packets of live flows, by water-filling on packets: every flow may keep
   its newest L recent packets, L set as high as the target allows (the packets at
   rank L fill what is left), so the flows holding the most lose first and a flow
   with fewer than L loses nothing;
4. first packets of live flows, the same way (its first L kept): a bulk flow holds
   at most ``first`` of them, so it can never push out everyone else's first packets.

Levels count packets, not bytes: a rank histogram finds them without sorting rows by
flow (byte levels needed a per-flow running sum, hence a sort: 4x the time of this
plan on the ingest benchmark's file). Every step is a handful of numpy operations over
all rows; no Python loop per flow or per packet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Plan:
    """Rows to keep, ascending: ``rows`` indexes the caller's columns."""

    rows: np.ndarray
    stale: int  # rows dropped as stale recent packets
    ended: int  # rows dropped with ended flows
    recent: int  # recent rows of live flows dropped by water-filling
    first: int  # first rows of live flows dropped by water-filling
    #: Per ended flow given to :func:`plan`: whether it still has rows (None: none given).
    ended_left: np.ndarray | None = None


class EndedFlows:
    """The flows that ended while they had packets kept, in the order they ended."""

    ROW = 16  # bytes per flow remembered: its id and end order

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []  # (flow ids, end order)
        self.n = 0
        self._clock = 0

    @property
    def nbytes(self) -> int:
        return self.n * self.ROW

    def add(self, flow_ids: np.ndarray) -> None:
        ids = np.asarray(flow_ids, dtype=np.int64)
        self._parts.append((ids, np.arange(self._clock, self._clock + len(ids))))
        self._clock += len(ids)
        self.n += len(ids)

    def _merged(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self._parts) > 1:
            self._parts = [(np.concatenate([i for i, _ in self._parts]),
                            np.concatenate([r for _, r in self._parts]))]
        return self._parts[0]

    def order(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(flow ids, when each ended: smaller = earlier); None when none has."""
        return self._merged() if self.n else None

    def keep_only(self, left: np.ndarray) -> None:
        """Forget the ended flows of :meth:`order` whose ``left`` is False (no rows)."""
        ids, rank = self._merged()
        self._parts = [(ids[left], rank[left])]
        self.n = int(np.count_nonzero(left))


def _dense(flow: np.ndarray) -> tuple[np.ndarray, int, Callable[[np.ndarray], np.ndarray]]:
    """Each row's flow as a small number (< the second value), and the function that
    numbers other flow ids the same way (-1: no row has it): the id rebased to the
    smallest when the ids span little more than the rows (flows are numbered in the
    order they start), else its rank among the distinct ids (a sort, rarely)."""
    lo = int(flow.min())
    rel = flow - lo
    span = int(rel.max()) + 1
    if span <= 2 * len(flow) + (1 << 16):
        def rebase(ids: np.ndarray) -> np.ndarray:
            r = ids - lo
            return np.where((r >= 0) & (r < span), r, -1)
        return rel, span, rebase
    uniq, inv = np.unique(flow, return_inverse=True)

    def rank(ids: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(uniq, ids), len(uniq) - 1)
        return np.where(uniq[pos] == ids, pos, -1)
    return inv.reshape(-1), len(uniq), rank


def _fill(rank: np.ndarray, part: np.ndarray, cost: np.ndarray, allowed: float) -> np.ndarray:
    """Rows of ``part`` to drop so the rest cost at most ``allowed``, lowest ranks
    kept first: every flow keeps its rows of rank below a common level L, set as high
    as ``allowed`` lets it, and the rows at rank L fill what is left, in row order."""
    rows = np.flatnonzero(part)
    r = rank[rows]
    by_rank = np.cumsum(np.bincount(r, weights=cost[rows]))
    lv = int(np.searchsorted(by_rank, allowed, side="right"))  # ranks < lv fit whole
    if lv >= len(by_rank):
        return np.zeros(len(part), dtype=np.bool_)
    drop = part & (rank > lv)
    at = rows[r == lv]
    left = allowed - (by_rank[lv - 1] if lv else 0.0)
    drop[at[np.cumsum(cost[at]) > left]] = True
    return drop


def plan(flow: np.ndarray, seq: np.ndarray, cost: np.ndarray,
         ended: tuple[np.ndarray, np.ndarray] | None, *, first: int, recent: int,
         target: int) -> Plan:
    """Keep rows worth at most ``target`` bytes.

    ``flow``, ``seq`` and ``cost`` are per row, rows of one flow in increasing ``seq``
    (append order); ``ended`` gives the flows that have ended, as (ids, the order
    they ended in: smaller = earlier), None when every flow is live.

    No sort: flows are numbered densely (:func:`_dense`), per-flow values are
    bincounts and scatters over those numbers, and the water level of each tier is
    found on a histogram of ranks (a flow's k-th first packet, its k-th newest), so
    a compaction costs a few linear passes over the rows.
    """
    n = len(flow)
    if not n:
        left = None if ended is None else np.zeros(len(ended[0]), dtype=np.bool_)
        return Plan(np.zeros(0, dtype=np.int64), 0, 0, 0, 0, left)
    g, ng, number = _dense(flow)
    newest = np.zeros(ng, dtype=np.int64)
    np.maximum.at(newest, g, seq)
    age = newest[g] - seq  # 0: the flow's newest packet
    is_first = seq < first
    keep = is_first | (age < recent)
    stale = n - int(np.count_nonzero(keep))
    counts = {"ended": 0, "recent": 0, "first": 0}
    used = int(cost[keep].sum())
    live: np.ndarray | bool = True
    ended_g = None
    if ended is not None:
        ended_g = number(ended[0])
        when = np.full(ng, -1, dtype=np.int64)
        hit = ended_g >= 0
        when[ended_g[hit]] = ended[1][hit]
        live = when[g] < 0
        ended_groups = np.flatnonzero(when >= 0)
        if used > target and len(ended_groups):
            held = np.bincount(g, weights=np.where(keep, cost, 0), minlength=ng)
            by_end = ended_groups[np.argsort(when[ended_groups], kind="stable")]
            freed = np.cumsum(held[by_end])
            k = min(int(np.searchsorted(freed, used - target, side="left")) + 1, len(by_end))
            gone = np.zeros(ng, dtype=np.bool_)
            gone[by_end[:k]] = True
            drop = gone[g] & keep
            counts["ended"] = int(np.count_nonzero(drop))
            keep &= ~drop
            used -= int(cost[drop].sum())
    # Recent packets go first (oldest first), then first packets (highest first).
    for tier, mask, rank in (("recent", ~is_first, age), ("first", is_first, seq)):
        if used <= target:
            break
        part = keep & mask & live
        total = int(cost[part].sum())
        drop = _fill(rank, part, cost, target - (used - total))
        counts[tier] = int(np.count_nonzero(drop))
        keep &= ~drop
        used -= int(cost[drop].sum())
    left = None
    if ended_g is not None:
        has_rows = np.zeros(ng + 1, dtype=np.bool_)  # [-1] (no row ever): False
        has_rows[g[keep]] = True
        left = has_rows[ended_g]
    return Plan(np.flatnonzero(keep), stale, counts["ended"], counts["recent"],
                counts["first"], left)
