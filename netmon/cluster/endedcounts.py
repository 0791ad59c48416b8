"""The last packets of flows that ended, held for the cluster-rate tick they belong to.

Pure module (numpy), owned by :class:`netmon.cluster.stats.ClusterStats` on the
reactor thread. A flow that ends between two ticks still has packets no rate has
counted: those up to the engine's last mark belong to the next figures, those after
it to the figures after (:attr:`EndedCounts.gen` numbers them). Each part goes to the
cluster the flow was in; a flow that ended before any cluster took it (a one-packet
flow, a flow whose job was still running) waits, by flow id, for the job that places
it (:meth:`EndedCounts.clustered`), and when its figures are due without it, counts
as unclustered (-1).
"""

from __future__ import annotations

import numpy as np

#: Parts waiting for a cluster at most (a backlog beyond this counts as unclustered).
WAIT_MAX = 1_000_000


class EndedCounts:
    """Packets and bytes of ended flows, by the figures (``gen``) and cluster they
    count into."""

    def __init__(self) -> None:
        #: The number of the next figures (:meth:`take`).
        self.gen = 0
        self._due: dict[int, dict[int, list[int]]] = {}  # gen -> cluster -> [pk, by]
        self._waiting: dict[int, list[tuple[int, int, int]]] = {}  # flow -> (gen, pk, by)
        self._n_waiting = 0

    def _count(self, gen: int, cluster: int, pk: int, by: int) -> None:
        acc = self._due.setdefault(gen, {}).setdefault(cluster, [0, 0])
        acc[0] += pk
        acc[1] += by

    def add(self, ids: np.ndarray, clusters: np.ndarray, gen: int, pk: np.ndarray,
            by: np.ndarray) -> None:
        """Count ``pk``/``by`` of these ended flows into figures ``gen``, in their
        ``clusters`` (-1: not placed yet, wait for :meth:`clustered`)."""
        has = pk > 0
        if not has.any():
            return
        wait = has & (clusters < 0)
        if wait.any() and self._n_waiting < WAIT_MAX:
            for f, p, b in zip(ids[wait].tolist(), pk[wait].tolist(), by[wait].tolist(),
                               strict=True):
                self._waiting.setdefault(f, []).append((gen, p, b))
            self._n_waiting += int(np.count_nonzero(wait))
            has &= ~wait
        if not has.any():
            return
        cl, inv = np.unique(clusters[has].astype(np.int64), return_inverse=True)
        p = np.bincount(inv, weights=pk[has]).astype(np.int64)
        b = np.bincount(inv, weights=by[has]).astype(np.int64)
        for c, pp, bb in zip(cl.tolist(), p.tolist(), b.tolist(), strict=True):
            self._count(gen, c, pp, bb)

    def clustered(self, ids: np.ndarray, clusters: np.ndarray) -> None:
        """Waiting flows got their clusters (the job that took them was applied)."""
        if not self._waiting:
            return
        for f, c in zip(ids.tolist(), clusters.tolist(), strict=True):
            parts = self._waiting.pop(f, None)
            if parts is None:
                continue
            self._n_waiting -= len(parts)
            for gen, p, b in parts:
                if gen >= self.gen:  # else its figures went out without it
                    self._count(gen, c, p, b)

    def take(self) -> dict[int, list[int]]:
        """The counts of the figures due now, by cluster; parts still waiting for them
        count as unclustered (-1)."""
        due = self._due.pop(self.gen, {})
        if self._waiting:
            for f in list(self._waiting):
                parts = self._waiting[f]
                late = [x for x in parts if x[0] <= self.gen]
                if not late:
                    continue
                for _gen, p, b in late:
                    acc = due.setdefault(-1, [0, 0])
                    acc[0] += p
                    acc[1] += b
                keep = [x for x in parts if x[0] > self.gen]
                self._n_waiting -= len(late)
                if keep:
                    self._waiting[f] = keep
                else:
                    del self._waiting[f]
        self.gen += 1
        return due
