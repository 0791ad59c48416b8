"""Which kept packets go when the packet store is over its budget: a pure, vectorised plan.

Pure module (numpy only), called by :class:`netmon.ingest.packetstore.PacketStore` on
its owner thread (the reactor) when a compaction is due. It sees one row per kept
packet (flow id, number in the flow, bytes it costs) and decides which rows stay, in
this order of sacrifice:

1. stale recent rows: a flow's recent packets older than its newest ``recent`` (the
   store retires them lazily, here);
2. whole flows that have ended, the one that ended first going first;
3. recent packets of live flows, by water-filling: every flow may keep up to a common
   level of bytes in recent packets (newest first), the level set as high as the
   target allows, so the flows holding the most lose first and small flows lose
   nothing;
4. first packets of live flows, the same way (lowest numbers kept): a bulk flow holds
   at most ``first`` of them, so it can never push out everyone else's first packets.

Every step is a handful of numpy operations over all rows; no Python loop per flow or
per packet.
"""

from __future__ import annotations

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

    def rank(self, flows: np.ndarray) -> np.ndarray | None:
        """Per row of ``flows``, when its flow ended (-1: live); None: every flow is."""
        if not self.n:
            return None
        out = np.full(len(flows), -1, dtype=np.int64)
        ids, rank = self._merged()
        by_id = np.argsort(ids)
        sids = ids[by_id]
        pos = np.minimum(np.searchsorted(sids, flows), len(sids) - 1)
        hit = sids[pos] == flows
        out[hit] = rank[by_id][pos[hit]]
        return out

    def prune(self, kept_flows: np.ndarray) -> None:
        """Forget ended flows that no longer have a row."""
        if self.n:
            ids, rank = self._merged()
            still = np.isin(ids, kept_flows)
            self._parts = [(ids[still], rank[still])]
            self.n = int(still.sum())


def level(held: np.ndarray, allowed: float) -> float:
    """The largest L with sum(min(held, L)) <= allowed (inf when everything fits)."""
    if allowed <= 0:
        return 0.0
    hs = np.sort(held)
    n = len(hs)
    before = np.concatenate(([0], np.cumsum(hs)[:-1]))  # bytes of the smaller flows
    at_level = before + hs * (n - np.arange(n))  # total if L were each flow's holding
    j = int(np.searchsorted(at_level, allowed, side="right"))
    if j >= n:
        return float("inf")
    return float((allowed - before[j]) / (n - j))


def group_order(flow: np.ndarray) -> np.ndarray:
    """A stable argsort of ``flow``: rows of one flow together, in their order. Flow
    ids are rebased to the smallest; when they then fit in 32 bits (always, short of
    four billion flows between the oldest kept and the newest), two stable sorts of
    16-bit keys, which numpy does by radix (several times faster than a stable sort of
    64-bit keys)."""
    if not len(flow):
        return np.zeros(0, dtype=np.int64)
    rel = flow - flow.min()
    if int(rel.max()) >= 1 << 32:
        return np.argsort(flow, kind="stable")
    order = np.argsort((rel & 0xFFFF).astype(np.uint16), kind="stable")
    if int(rel.max()) < 1 << 16:
        return order
    return order[np.argsort((rel[order] >> 16).astype(np.uint16), kind="stable")]


def plan(flow: np.ndarray, seq: np.ndarray, cost: np.ndarray,
         ended_rank: np.ndarray | None, *, first: int, recent: int, target: int) -> Plan:
    """Keep rows worth at most ``target`` bytes.

    ``flow``, ``seq`` and ``cost`` are per row, rows of one flow in increasing ``seq``
    (append order); ``ended_rank`` is per row too: the order in which the row's flow
    ended (smaller = earlier), -1 while it is live (None: every flow is live).
    """
    order = group_order(flow)  # stable: each flow's rows stay in seq order
    f, s, c = flow[order], seq[order], cost[order]
    er = None if ended_rank is None else ended_rank[order]
    n = len(f)
    if not n:
        return Plan(order, 0, 0, 0, 0)
    starts = np.flatnonzero(np.r_[True, f[1:] != f[:-1]])
    ends = np.r_[starts[1:], n]
    grp = np.repeat(np.arange(len(starts)), ends - starts)
    is_first = s < first
    newest = s[ends - 1]  # a flow's rows end with its newest packet
    keep = is_first | (s > newest[grp] - recent)
    stale = n - int(keep.sum())
    counts = {"ended": 0, "recent": 0, "first": 0}
    used = int(c[keep].sum())

    if used > target and er is not None:
        gended = er[starts]
        ended_groups = np.flatnonzero(gended >= 0)
        if len(ended_groups):
            gcost = np.add.reduceat(np.where(keep, c, 0), starts)
            by_end = ended_groups[np.argsort(gended[ended_groups], kind="stable")]
            freed = np.cumsum(gcost[by_end])
            k = min(int(np.searchsorted(freed, used - target, side="left")) + 1, len(by_end))
            gone = np.zeros(len(starts), dtype=np.bool_)
            gone[by_end[:k]] = True
            drop = gone[grp] & keep
            counts["ended"] = int(drop.sum())
            keep &= ~drop
            used -= int(freed[k - 1])

    live = True if er is None else er[starts][grp] < 0
    for tier, mask, newest_first in (("recent", ~is_first, True), ("first", is_first, False)):
        if used <= target:
            break
        part = keep & mask & live
        pc = np.where(part, c, 0)
        held = np.add.reduceat(pc, starts)
        total = int(held.sum())
        allowed = target - (used - total)
        lv = level(held, allowed)
        cum = np.cumsum(pc)
        before = (cum[starts] - pc[starts])[grp]  # bytes of earlier flows' rows
        upto = cum - before  # this flow's bytes up to and including the row
        mine = upto if not newest_first else held[grp] - upto + pc
        drop = part & (mine > lv)
        counts[tier] = int(drop.sum())
        keep &= ~drop
        used -= int(pc[drop].sum())
    kept = np.zeros(n, dtype=np.bool_)
    kept[order[keep]] = True  # back to the caller's order without sorting
    return Plan(np.flatnonzero(kept), stale, counts["ended"], counts["recent"],
                counts["first"])
