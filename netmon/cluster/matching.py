"""Display clusters from micro-clusters, and their stable IDs from tick to tick.

Pure module (numpy, scipy): :func:`merge_micro` groups micro-cluster centroids into
display clusters (average linkage, weighted by rows, with a hysteresis band); :func:`match_clusters`
matches this tick's display centroids to known ones (Hungarian, under a gate) so a
cluster keeps its ID. Called by :class:`netmon.cluster.online.OnlineClusterer`, so it
runs where the clusterer does: one owner at a time, the reactor thread or one worker
thread, never two at once.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import pdist, squareform


def merge_micro(centroids: np.ndarray, cut: float, previous: np.ndarray | None = None,
                hysteresis: float = 0.0, weights: np.ndarray | None = None) -> np.ndarray:
    """Group micro-cluster centroids into display clusters (0..k-1 per row): average
    linkage cut at ``cut``. With ``previous`` (last tick's group of each centroid, -1 if
    none) the merge decision gets a hysteresis band: pairs that shared a group look
    ``hysteresis`` (relative) closer, pairs that did not look as much farther, so a
    pair hovering at the cut does not merge and split on alternate ticks. With
    ``weights`` (the rows each micro-cluster holds) the average is over rows, not
    micro-clusters: a light micro-cluster between two heavy ones (young flows' states
    between two behaviours) no longer pulls them together."""
    if len(centroids) < 2:
        return np.zeros(len(centroids), dtype=np.int64)
    dist = pdist(centroids)
    if previous is not None and hysteresis:
        prev = np.asarray(previous)
        known = prev >= 0
        factor = np.where(prev[:, None] == prev[None, :], 1 - hysteresis, 1 + hysteresis)
        factor[~(known[:, None] & known[None, :])] = 1.0
        dist = dist * squareform(factor, checks=False)
    if weights is not None:
        return _weighted_average(squareform(dist), np.asarray(weights, dtype=np.float64), cut)
    tree = linkage(dist, method="average")
    return fcluster(tree, t=cut, criterion="distance").astype(np.int64) - 1


def _weighted_average(d: np.ndarray, w: np.ndarray, cut: float) -> np.ndarray:
    """Average linkage where each micro-cluster counts by its weight (the rows it
    holds), cut at ``cut``. Nearest-neighbour chain, O(m^2): the linkage is reducible
    (a merged group is never nearer to a third than the nearer of its parts), so a
    group whose nearest is beyond the cut never merges and leaves the chain."""
    m = len(w)
    d = d.astype(np.float64, copy=True)
    np.fill_diagonal(d, np.inf)
    size = np.maximum(w, 1e-9).astype(np.float64)
    group = np.arange(m)
    active = np.ones(m, dtype=np.bool_)
    chain: list[int] = []
    while True:
        if not chain:
            left = np.flatnonzero(active)
            if not len(left):
                break
            chain.append(int(left[0]))
        a = chain[-1]
        b = int(np.argmin(d[a]))
        if not d[a, b] <= cut:
            active[a] = False
            d[a, :] = d[:, a] = np.inf
            chain.pop()
            continue
        if len(chain) > 1 and d[a, chain[-2]] <= d[a, b]:
            b = chain[-2]  # ties go back down the chain: it must end in a mutual pair
        if len(chain) > 1 and b == chain[-2]:
            del chain[-2:]
            row = (size[a] * d[a] + size[b] * d[b]) / (size[a] + size[b])
            d[a, :] = d[:, a] = row
            d[a, a] = d[b, :] = d[:, b] = np.inf
            active[b] = False
            size[a] += size[b]
            group[group == b] = a
        else:
            chain.append(b)
    return np.unique(group, return_inverse=True)[1].astype(np.int64)


#: Extra matching cost of a cluster that was absent from the last tick's model.
VANISHED_PENALTY = 0.25


def match_clusters(centroids: np.ndarray, known: np.ndarray, gate: float,
                   penalty: np.ndarray | None = None) -> np.ndarray:
    """For each row of ``centroids``, the index of the ``known`` centroid it continues,
    or -1 when none is within ``gate``: a minimum-cost one-to-one matching (Hungarian,
    ``scipy.optimize.linear_sum_assignment``) on Euclidean distance plus ``penalty``
    per known centroid. Order of either input does not matter."""
    out = np.full(len(centroids), -1, dtype=np.int64)
    if not len(centroids) or not len(known):
        return out
    cost = np.linalg.norm(centroids[:, None, :] - known[None, :, :], axis=2)
    if penalty is not None:
        cost += penalty[None, :]
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] <= gate
    out[rows[ok]] = cols[ok]
    return out
