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

_NO_ROWS = np.zeros((0, 0), dtype=np.float32)


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
        none yet) with raw features ``rows[i]``."""
        self._tick += 1
        ids = np.asarray(ids, dtype=np.int64)
        flow_ids = np.asarray(flow_ids, dtype=np.int64)
        if not len(ids):
            return
        # One row per flow, its last (a flow is passed at most once per tick, but the
        # caller's columns are not ours to trust on that).
        _, last = np.unique(flow_ids[::-1], return_index=True)
        pick = np.sort(len(flow_ids) - 1 - last)
        pick = pick[ids[pick] >= 0]
        ids, flow_ids, rows = ids[pick], flow_ids[pick], rows[pick].astype(np.float32)
        if not len(ids):
            return
        self._drop_moved(ids, flow_ids)
        order = np.argsort(ids, kind="stable")
        cids, starts = np.unique(ids[order], return_index=True)
        for cid, sel in zip(cids.tolist(), np.split(order, starts[1:]), strict=True):
            self._add(cid, flow_ids[sel], rows[sel])

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
        """Flows noted in another cluster this tick leave the sample they were in."""
        order = np.argsort(flow_ids)
        sf, sc = flow_ids[order], ids[order]
        for cid, f in self._fid.items():
            pos = np.minimum(np.searchsorted(sf, f), len(sf) - 1)
            moved = (sf[pos] == f) & (sc[pos] != cid)
            if moved.any():
                keep = ~moved
                self._fid[cid], self._rows[cid] = f[keep], self._rows[cid][keep]
                self._stamp[cid] = self._stamp[cid][keep]

    def _add(self, cid: int, fids: np.ndarray, rows: np.ndarray) -> None:
        k = self.per_cluster
        if len(fids) > k:  # more changed members than room: an even spread of them
            spread = np.linspace(0, len(fids) - 1, k).round().astype(np.int64)
            fids, rows = fids[spread], rows[spread]
        old_f = self._fid.get(cid, np.zeros(0, dtype=np.int64))
        stay = ~np.isin(old_f, fids)  # a flow noted again: its new row replaces the old
        f = np.concatenate([old_f[stay], fids])
        r = np.concatenate([self._rows.get(cid, _NO_ROWS).reshape(-1, rows.shape[1])[stay],
                            rows])
        s = np.concatenate([self._stamp.get(cid, np.zeros(0, dtype=np.int64))[stay],
                            np.full(len(fids), self._tick, dtype=np.int64)])
        if len(f) > k:  # the flows changed longest ago make room
            keep = np.sort(np.argsort(s, kind="stable")[-k:])
            f, r, s = f[keep], r[keep], s[keep]
        self._fid[cid], self._rows[cid], self._stamp[cid] = f, r, s
