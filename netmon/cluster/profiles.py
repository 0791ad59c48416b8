"""What each display cluster's member flows are now, for its label.

Pure module (numpy). :class:`MemberProfiles` belongs to one
:class:`netmon.cluster.online.OnlineClusterer` and follows its thread rule: one owner at
a time (the reactor thread or the one worker thread the engine hands a tick to), never
two at once; nothing here is locked.

Why not the model's centroid: the clusterer learns a flow every tick it changes, so a
micro-cluster holds every state its flows passed through on the way, and the young
states (a handshake, the first keystrokes) are as many as the grown ones. Measured on
a 30 s ``netmon demo`` capture replayed tick by tick: the SSH sessions' display
centroid said 1.5 s and 39 packets ("TCP/22 mixed") while its 15 members, at their
latest state, averaged 5.4 s and 70 packets of ~76 bytes at 70-90 ms gaps
("interactive"). So each cluster keeps a bounded sample of its members' latest feature
rows (:attr:`MemberProfiles.per_cluster` flows, the most recently changed, each
counted once at its latest state, ended flows at their final one), and a label is made
from their mean.
"""

from __future__ import annotations

import numpy as np


class MemberProfiles:
    """Per display cluster, the latest raw feature rows of up to ``per_cluster`` member
    flows (those changed most recently): :meth:`note` each tick, :meth:`mean` to label."""

    def __init__(self, per_cluster: int = 64) -> None:
        self.per_cluster = per_cluster
        self._tick = 0
        # Per cluster ID: flow ids, their latest rows (float32: a label needs no more),
        # and the tick each row was noted.
        self._fid: dict[int, np.ndarray] = {}
        self._rows: dict[int, np.ndarray] = {}
        self._stamp: dict[int, np.ndarray] = {}

    def note(self, ids: np.ndarray, flow_ids: np.ndarray, rows: np.ndarray) -> None:
        """Record this tick's rows: flow ``flow_ids[i]`` is in cluster ``ids[i]`` (-1:
        none yet) with raw features ``rows[i]``; a flow at most once per call."""
        self._tick += 1
        ids = np.asarray(ids, dtype=np.int64)
        ok = np.flatnonzero(ids >= 0)
        if not len(ok):
            return
        ids, flow_ids = ids[ok], np.asarray(flow_ids, dtype=np.int64)[ok]
        self._drop_moved(ids, flow_ids)
        order = np.argsort(ids, kind="stable")
        cids, starts = np.unique(ids[order], return_index=True)
        for cid, sel in zip(cids.tolist(), np.split(order, starts[1:]), strict=True):
            if len(sel) > self.per_cluster:  # more changed members than room: a spread
                sel = sel[np.linspace(0, len(sel) - 1, self.per_cluster).round().astype(np.int64)]
            self._add(cid, flow_ids[sel], np.asarray(rows)[ok[sel]].astype(np.float32))

    def mean(self, cid: int) -> np.ndarray | None:
        """Mean raw feature row of the cluster's sampled members (NaN where none of
        them has the feature, e.g. exported flows' packet timing), None if it has none."""
        rows = self._rows.get(cid)
        if rows is None or not len(rows):
            return None
        known = ~np.isnan(rows)
        count = known.sum(axis=0)
        total = np.where(known, rows, 0.0).sum(axis=0, dtype=np.float64)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def members(self, cid: int) -> int:
        """How many member flows the cluster's sample holds."""
        return len(self._fid.get(cid, ()))

    def forget(self, cid: int) -> None:
        """Drop a cluster the clusterer no longer remembers."""
        for d in (self._fid, self._rows, self._stamp):
            d.pop(cid, None)

    # ------------------------------------------------------------------ internals
    def _drop_moved(self, ids: np.ndarray, flow_ids: np.ndarray) -> None:
        """Sampled flows noted in another cluster this tick leave the sample they were
        in (looked up in the samples, a few thousand flows at most, not the tick's)."""
        if not self._fid:
            return
        owner = np.concatenate([np.full(len(f), c, dtype=np.int64) for c, f in self._fid.items()])
        sampled = np.concatenate(list(self._fid.values()))
        order = np.argsort(sampled)
        sampled, owner = sampled[order], owner[order]
        pos = np.minimum(np.searchsorted(sampled, flow_ids), len(sampled) - 1)
        moved = (sampled[pos] == flow_ids) & (owner[pos] != ids)
        for cid in np.unique(owner[pos[moved]]).tolist():
            keep = ~np.isin(self._fid[cid], flow_ids[moved])
            self._fid[cid], self._rows[cid] = self._fid[cid][keep], self._rows[cid][keep]
            self._stamp[cid] = self._stamp[cid][keep]

    def _add(self, cid: int, fids: np.ndarray, rows: np.ndarray) -> None:
        stamp = np.full(len(fids), self._tick, dtype=np.int64)
        old_f = self._fid.get(cid)
        if old_f is None or len(fids) == self.per_cluster:  # nothing older stays
            self._fid[cid], self._rows[cid], self._stamp[cid] = fids, rows, stamp
            return
        # A flow noted again: its new row replaces the old (at most 64 x 64 compares).
        stay = ~(old_f[:, None] == fids[None, :]).any(axis=1)
        f = np.concatenate([old_f[stay], fids])
        r = np.concatenate([self._rows[cid][stay], rows])
        s = np.concatenate([self._stamp[cid][stay], stamp])
        if len(f) > self.per_cluster:  # the flows changed longest ago make room
            keep = np.sort(np.argsort(s, kind="stable")[-self.per_cluster:])
            f, r, s = f[keep], r[keep], s[keep]
        self._fid[cid], self._rows[cid], self._stamp[cid] = f, r, s
