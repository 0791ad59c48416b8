"""OnlineClusterer: flows -> behaviour clusters with stable IDs, labels and outlier flags.

Pure module (numpy, scipy, scikit-learn). One owner at a time: the engine calls it on
the reactor thread or hands a whole tick to one worker thread, never two threads at
once; nothing here is locked.

Pipeline per tick (:meth:`OnlineClusterer.update`, given the flows that changed):

1. :func:`netmon.cluster.features.features`, then scaling: a ``StandardScaler`` is
   ``partial_fit`` on the continuous features during a warm-up and then frozen, so
   centroids never drift because the yardstick moved. Binary features (protocol, port
   bucket) stay 0/1. Feature groups are then weighted (:data:`GROUP_WEIGHTS`).
2. Scoring against the model as it stood *before* this tick: a flow's outlier score
   is its distance to the nearest micro-cluster over that micro-cluster's radius; at
   or above ``Tuning.outlier_threshold`` the flow fits nothing known: ``is_new``.
3. Learning: scikit-learn ``Birch(n_clusters=None).partial_fit`` on the new-behaviour
   flows plus a seeded sample of the rest (at most ``Tuning.max_learn`` rows), so cost
   does not grow with traffic and a new behaviour is learnt the tick it appears. When
   the micro-clusters outgrow ``Tuning.max_micro`` the tree is rebuilt from its
   leaves with a 30% larger threshold. (``Tuning(model="kmeans")`` swaps in
   ``MiniBatchKMeans.partial_fit``; ``netmon.bench.cluster`` compares the two.)
4. Display clusters: micro-clusters merged by average-linkage agglomeration, each
   counted by the rows it holds (a light micro-cluster of young flows' states must not
   bridge two behaviours), cut at ``Tuning.merge_distance``, with a hysteresis band so
   last tick's merge decision stands near the cut
   (:func:`netmon.cluster.matching.merge_micro`); then matched to the previous tick's
   display clusters by centroid distance (Hungarian, see
   :func:`netmon.cluster.matching.match_clusters`) under ``Tuning.match_gate``. A
   cluster inherits the ID it matches, also from a recently vanished cluster, so a
   behaviour that pauses and returns keeps its ID; an ID is minted only when nothing
   matches. IDs with no member flows for ``retire_ticks`` are hidden, and forgotten
   after ``forget_ticks`` ticks out of the model.
5. Each flow takes the display cluster of its nearest micro-cluster; every display
   cluster the model remembers is named, each tick, by
   :func:`netmon.cluster.labels.distinct_labels` from what its members are now (the
   mean of their latest feature rows, :mod:`netmon.cluster.profiles`; the centroid
   until it has any), their server ports, how many responders they reach and their
   dominant names (sites from the flows' server names, when the traffic had any):
   no two alike, none empty.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import Birch, MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin_min
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController

from netmon.cluster.features import BINARY_FEATURES, feature_names, features
from netmon.cluster.labels import ClusterFacts, distinct_labels
from netmon.cluster.matching import VANISHED_PENALTY, match_clusters, merge_micro
from netmon.cluster.members import MemberBook
from netmon.cluster.profiles import MemberProfiles

#: Weight of each feature group after scaling, by name prefix (others: 1). Totals that
#: grow with a flow's age weigh less than shape features (sizes, timing, flags) so a
#: long flow does not wander between clusters as it ages; the 8 first sizes together
#: count like two features. Protocols sit 5*sqrt(2) = 7.1 apart, beyond the merge cut
#: (5): one display cluster never mixes TCP, UDP and ICMP (with 2.0, a handful of long
#: DNS flows merged with 4 ICMP echo flows in one no-ports run). Services apart by port
#: bucket sit 5*sqrt(2) = 7.1 apart too: on mixes of real captures (bench clustermix)
#: SSH brute force, HTTP and TLS browsing merged at 1.5 and 3; a probe's port counts a
#: quarter (see features.features), so a scan does not split by port (12 clusters for
#: one SYN scan at 5 without that). Cut 6 merged loopback bulk with web; cut 5 keeps
#: every loopback class (bench cluster) and, with ports, every capture's majority on
#: both mixes (macro purity 0.83 and 0.94 with cut 4, weights 3 and 1.5; now 1.00).
GROUP_WEIGHTS: dict[str, float] = {
    "is_": 5.0,
    "log_pkts_": 0.75,
    "log_bytes_": 0.75,
    "log_duration": 0.75,
    "log_iat": 0.7,
    "iat_cv": 0.7,
    "log_fin": 0.5,
    "first_size_": 0.5,
    "port_": 5.0,
}


_controller: ThreadpoolController | None = None


def _thread_limit(threads: int | None) -> AbstractContextManager:
    """Limit BLAS/OpenMP threads for a block (cheap: one controller, made once)."""
    global _controller
    if threads is None:
        return nullcontext()
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=threads)


@dataclass(frozen=True)
class Tuning:
    """Knobs of :class:`OnlineClusterer`; distances are in the weighted scaled space."""

    model: str = "birch"
    """Micro-cluster model: "birch" or "kmeans". Birch, by measurement (11 labelled
    loopback captures, ports on and off): it kept every class, also those of 3-4 flows
    that start mid-run (macro purity >= 0.999 in all 22 runs), where MiniBatchKMeans
    (64, 128 or 256 centres) lost one in 5, 3 and 1 of them (macro purity 0.86), its
    only advantage being cost (14 ms vs ~35-40 ms per tick at 10 k flows)."""
    threshold: float = 1.0
    """Birch subcluster radius to start with; grows when max_micro is exceeded."""
    max_micro: int = 256
    """Most micro-clusters kept (bounds per-tick cost)."""
    n_micro: int = 64
    """MiniBatchKMeans centres (model "kmeans" only)."""
    merge_distance: float = 5.0
    """Average-linkage cut that merges micro-clusters into display clusters."""
    merge_hysteresis: float = 0.15
    """Relative band around the cut within which last tick's merge decision stands."""
    match_gate: float = 2.0
    """Farthest a display centroid may move between ticks and keep its ID."""
    warmup_ticks: int = 4
    """Ticks of scaler fitting before the scaler freezes and clustering starts..."""
    warmup_min: int = 200
    """...provided this many flow rows were seen by then;"""
    max_warmup_ticks: int = 10
    """after this many ticks, start anyway with whatever (>= 10 rows) was seen: a
    listener with a few connections, a quiet link, shows clusters within seconds
    (the scaler's floor keeps a few rows' ranges from making every flow an outlier)."""
    max_learn: int = 1000
    """Rows learnt per tick at most: all new-behaviour flows first, then a sample."""
    outlier_threshold: float = 3.0
    """Outlier score (distance / micro-cluster radius) from which a flow is new."""
    retire_ticks: int = 20
    """Ticks without member flows after which a cluster is no longer shown."""
    forget_ticks: int = 600
    """Ticks a vanished display cluster's ID is remembered for a return."""
    min_scale: float = 0.25
    """Floor of the frozen scaler's per-feature scale (a near-constant warm-up feature
    must not blow up later differences)."""
    threads: int | None = 1
    """BLAS/OpenMP threads while a tick runs (None: library default). One, because the
    clusterer shares a small machine with ingest: at 10 k flows on 2 busy cores a tick
    took a steady 40-47 ms single-threaded, but 37-165 ms with 2 threads contending."""


@dataclass(frozen=True)
class Assignment:
    """Per-flow result of a tick, aligned with the input columns.

    ``cluster_id`` is -1 while the clusterer warms up; ``outlier`` is the flow's
    distance to the nearest known micro-cluster in units of that cluster's radius
    (0 during warm-up); ``is_new`` marks flows whose ``outlier`` reaches the threshold.
    """

    cluster_id: np.ndarray
    outlier: np.ndarray
    is_new: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Assignment:
        return cls(np.full(n, -1, dtype=np.int64), np.zeros(n), np.zeros(n, dtype=np.bool_))


class OnlineClusterer:
    """Online behavioural clustering with stable display-cluster IDs (see module doc).

    Call :meth:`update` once per tick with the columns of the flows that changed
    (``FlowTable.columns(slots)``, or :func:`netmon.cluster.features.columns_from_views`); it
    learns from them and returns their :class:`Assignment`. A flow not passed again
    keeps the ID it was given, which stays meaningful while that ID is in
    :meth:`cluster_ids`; :meth:`assign` re-assigns any flows (e.g. all live ones, now
    and then) without learning. Deterministic for a given ``seed`` and input.
    """

    def __init__(self, *, ports: bool = True, seed: int = 0,
                 tuning: Tuning | None = None) -> None:
        self.tuning = t = tuning or Tuning()
        if t.model not in ("birch", "kmeans"):
            raise ValueError(f"unknown model {t.model!r} (birch or kmeans)")
        self.ports = ports
        self.seed = seed
        self.names = feature_names(ports=ports)
        dim = len(self.names)
        self._binary = np.array([n in BINARY_FEATURES for n in self.names])
        self._weights = np.array([next((w for p, w in GROUP_WEIGHTS.items() if n.startswith(p)),
                                       1.0) for n in self.names])
        self._rng = np.random.default_rng(seed)
        self._scaler = StandardScaler()
        self._mean = np.zeros(dim)
        self._scale = np.ones(dim)
        self._warm_rows: list[np.ndarray] = []
        self._warm_seen = 0
        #: Ticks seen so far (calls of :meth:`update`).
        self.ticks = 0
        #: True once the warm-up is over and flows get cluster IDs.
        self.warm = False
        self._model: Birch | MiniBatchKMeans | None = None
        self._threshold = t.threshold
        self._micro = np.zeros((0, dim))  # micro-cluster centroids
        self._micro_weight = np.zeros(0)
        self._micro_radius = np.zeros(0)
        self._micro_ids = np.zeros(0, dtype=np.int64)  # micro-cluster -> display ID
        self._prev_micro = (np.zeros((0, dim)), self._micro_ids)  # last tick's, for hysteresis
        self._next_id = 1
        # Per display ID: centroid (scaled space), last tick it existed in the model,
        # the tick it was minted; what its members were (last tick with any, server
        # ports, responders, names: netmon.cluster.members).
        self._centroid: dict[int, np.ndarray] = {}
        self._present: dict[int, int] = {}
        self._minted: dict[int, int] = {}
        self._members = MemberBook()
        self._labels: dict[int, str] = {}
        self._now = MemberProfiles()  # members' latest rows: what a label describes

    # ------------------------------------------------------------------ public API
    def update(self, cols: dict[str, np.ndarray], *, final: bool = False) -> Assignment:
        """Learn from the flows that changed this tick and assign them to clusters."""
        with _thread_limit(self.tuning.threads):
            return self._update(cols, final)

    def assign(self, cols: dict[str, np.ndarray]) -> Assignment:
        """Assign flows to the current clusters without learning from them."""
        with _thread_limit(self.tuning.threads):
            return self._assign(cols)

    def _update(self, cols: dict[str, np.ndarray], final: bool = False) -> Assignment:
        self.ticks += 1
        x = features(cols, ports=self.ports)
        n = len(x)
        if not self.warm:
            if n:
                with np.errstate(invalid="ignore", divide="ignore"):  # NaN: unknown
                    self._scaler.partial_fit(x[:, ~self._binary])
                self._warm_seen += n
                keep = self.tuning.max_learn  # the first fit learns at most this many
                self._warm_rows.append(x if n <= keep else
                                       x[np.sort(self._rng.choice(n, keep, replace=False))])
            t = self.tuning
            ready = self.ticks >= t.warmup_ticks and self._warm_seen >= t.warmup_min
            late = self.ticks >= t.max_warmup_ticks and self._warm_seen >= 10
            # The last update of a short capture: cluster what there is, one flow
            # even, rather than leave every flow unclustered.
            late = late or (final and self._warm_seen >= 1)
            if not (ready or late):
                return Assignment.empty(n)
            self._freeze_scaler()
            rows = self.transform(np.concatenate(self._warm_rows))
            self._warm_rows = []
            self.warm = True
            self._learn(rows, np.zeros(len(rows), dtype=np.bool_))
            z = self.transform(x)
            outlier = np.zeros(n)
        else:
            z = self.transform(x)
            outlier = self._nearest(z)[1]
            if n:
                self._learn(z, outlier >= self.tuning.outlier_threshold)
        ids = self._nearest(z)[0]
        self._members.note(ids, cols, self.ticks)
        if "flow_id" in cols:
            self._now.note(ids, cols["flow_id"], x)
        self._labels = distinct_labels({i: self._facts(i) for i in self._centroid})
        return Assignment(ids, outlier, outlier >= self.tuning.outlier_threshold)

    def _assign(self, cols: dict[str, np.ndarray]) -> Assignment:
        x = features(cols, ports=self.ports)
        if not self.warm:
            return Assignment.empty(len(x))
        z = self.transform(x)
        ids, outlier = self._nearest(z)
        return Assignment(ids, outlier,
                          outlier >= self.tuning.outlier_threshold)

    def cluster_ids(self) -> list[int]:
        """IDs of the clusters shown now: those with member flows in the last
        ``retire_ticks`` ticks."""
        return sorted(i for i, t in self._members.last_seen.items()
                      if self.ticks - t < self.tuning.retire_ticks)

    def labels(self) -> dict[int, str]:
        """Human label of every shown cluster."""
        return {i: self._labels[i] for i in self.cluster_ids()}

    def all_labels(self) -> dict[int, str]:
        """Label of every cluster the model remembers, shown or not (a flow that has
        been quiet keeps the ID of a cluster since retired): no two alike, none empty."""
        return dict(self._labels)

    def label(self, cluster_id: int) -> str:
        """Label of any remembered cluster, shown or not ("" if unknown)."""
        return self._labels.get(cluster_id, "")

    def is_recent(self, cluster_id: int, ticks: int = 10) -> bool:
        """Whether ``cluster_id`` was minted within the last ``ticks`` ticks."""
        return self.ticks - self._minted.get(cluster_id, -(10**9)) < ticks

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Raw feature rows -> the weighted, scaled space the model works in. Unknown
        features (NaN: see features.EXPORT_UNKNOWN) sit at the mean, so they pull
        nowhere."""
        z = (x - self._mean) / self._scale * self._weights
        return np.nan_to_num(z, copy=False, nan=0.0)

    @property
    def micro_clusters(self) -> int:
        """How many micro-clusters the model holds."""
        return len(self._micro)

    # ------------------------------------------------------------------ scaling
    def _freeze_scaler(self) -> None:
        cont = ~self._binary
        # A feature no warm-up flow had (all exported flows: NaN) gets mean 0, scale 1.
        self._mean[cont] = np.nan_to_num(self._scaler.mean_, nan=0.0)
        self._scale[cont] = np.maximum(np.nan_to_num(self._scaler.scale_, nan=1.0),
                                       self.tuning.min_scale)

    # ------------------------------------------------------------------ model
    def _learn(self, z: np.ndarray, novel: np.ndarray) -> None:
        cap = self.tuning.max_learn
        if len(z) > cap:
            # New behaviour always, the rest sampled: a handful of flows of a new kind
            # among 10 k must not wait for luck to be learnt.
            first = np.flatnonzero(novel)[:cap]
            rest = np.flatnonzero(~novel)
            pick = self._rng.choice(len(rest), cap - len(first), replace=False)
            z = z[np.sort(np.concatenate([first, rest[pick]]))]
        if self._model is None:
            self._model = self._new_model(z)
        self._model.partial_fit(z)
        self._refresh_micro()
        while len(self._micro) > self.tuning.max_micro and isinstance(self._model, Birch):
            # BIRCH's own remedy: a coarser threshold, the old leaves reinserted (their
            # sizes restart; this tick's rows keep the new tree honest).
            self._threshold *= 1.3
            self._model = self._new_model(z)
            self._model.partial_fit(np.concatenate([self._micro, z]))
            self._refresh_micro()
        self._rebuild_display()

    def _new_model(self, z: np.ndarray) -> Birch | MiniBatchKMeans:
        if self.tuning.model == "birch":
            return Birch(threshold=self._threshold, n_clusters=None)
        k = min(self.tuning.n_micro, len(z))
        return MiniBatchKMeans(n_clusters=k, random_state=self.seed, n_init=1,
                               batch_size=max(k, 256))

    def _refresh_micro(self) -> None:
        m = self._model
        if isinstance(m, Birch):
            # Sizes and radii of the CF-tree leaves' subclusters come from Birch's
            # internals (scikit-learn 1.x); without them, every subcluster counts as
            # one sample of radius ``threshold``, which only loosens the outlier score.
            try:
                subs = [sc for leaf in m._get_leaves() for sc in leaf.subclusters_]
                self._micro = np.array([sc.centroid_ for sc in subs])
                self._micro_weight = np.array([sc.n_samples_ for sc in subs], dtype=float)
                self._micro_radius = np.array([sc.radius for sc in subs])
            except AttributeError:
                self._micro = m.subcluster_centers_.copy()
                self._micro_weight = np.ones(len(self._micro))
                self._micro_radius = np.full(len(self._micro), self._threshold)
        else:
            self._micro = m.cluster_centers_.copy()
            self._micro_weight = np.maximum(m._counts.astype(np.float64), 1.0)
            self._micro_radius = np.full(len(self._micro), self.tuning.threshold)

    def _nearest(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(display ID, outlier score) per row, from the nearest micro-cluster."""
        if not len(z) or not len(self._micro):
            return np.full(len(z), -1, dtype=np.int64), np.zeros(len(z))
        idx, dist = pairwise_distances_argmin_min(z, self._micro)
        return (self._micro_ids[idx],
                dist / np.maximum(self._micro_radius[idx], self._threshold / 2))

    # ------------------------------------------------------------------ display
    def _rebuild_display(self) -> None:
        c, w = self._micro, self._micro_weight
        groups = merge_micro(c, self.tuning.merge_distance, self._inherited_ids(c),
                             self.tuning.merge_hysteresis, w)
        k = int(groups.max()) + 1
        cent = np.zeros((k, c.shape[1]))
        np.add.at(cent, groups, c * w[:, None])
        cent /= np.bincount(groups, weights=w, minlength=k)[:, None]
        ids = self._match_ids(cent)
        self._micro_ids = ids[groups]
        self._prev_micro = (c, self._micro_ids)

    def _inherited_ids(self, c: np.ndarray) -> np.ndarray:
        """Last tick's display ID of each micro-cluster: that of the old micro-cluster
        within one threshold of it (they move little between ticks), else -1."""
        old_c, old_ids = self._prev_micro
        if not len(old_c):
            return np.full(len(c), -1, dtype=np.int64)
        near, gap = pairwise_distances_argmin_min(c, old_c)
        return np.where(gap <= self._threshold, old_ids[near], -1)

    def _match_ids(self, cent: np.ndarray) -> np.ndarray:
        """Stable IDs for this tick's display centroids (see :func:`match_clusters`);
        clusters that vanished from the model earlier cost a little more to match."""
        t = self.tuning
        known = [i for i, tick in self._present.items() if self.ticks - tick < t.forget_ticks]
        prev = np.array([self._centroid[i] for i in known]).reshape(len(known), cent.shape[1])
        penalty = np.array([0.0 if self._present[i] >= self.ticks - 1 else VANISHED_PENALTY
                            for i in known])
        match = match_clusters(cent, prev, t.match_gate, penalty)
        ids = np.array([known[m] if m >= 0 else -1 for m in match.tolist()], dtype=np.int64)
        for r in np.flatnonzero(ids < 0):
            ids[r] = self._next_id
            self._minted[self._next_id] = self.ticks
            self._next_id += 1
        for r, i in enumerate(ids.tolist()):
            self._centroid[i] = cent[r]
            self._present[i] = self.ticks
        for i in [i for i, tick in self._present.items() if self.ticks - tick >= t.forget_ticks]:
            for d in (self._centroid, self._present, self._minted, self._labels):
                d.pop(i, None)
            self._members.forget(i)
            self._now.forget(i)
        return ids

    # ------------------------------------------------------------------ labels
    def _facts(self, cid: int) -> ClusterFacts:
        z = self._centroid[cid] / self._weights * self._scale + self._mean
        # Named after what its members are now, where known: the centroid also holds
        # every younger state of them (see netmon.cluster.profiles).
        now = self._now.mean(cid)
        if now is not None:
            z = np.where(np.isnan(now), z, now)
        return self._members.facts(cid, dict(zip(self.names, z.tolist(), strict=True)))
