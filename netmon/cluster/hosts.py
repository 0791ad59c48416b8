"""Hosts view: per source address, how it talks, and groups of hosts that talk alike.

Pure module (numpy; scipy imported lazily), run by the engine on the reactor
thread every few ticks. A host is the initiator of flows, whatever the source
(captured flows and listener connections alike). Over the live flows of a
:class:`~netmon.flows.table.FlowTable` it computes, per host and vectorised: flows,
connections per minute, distinct responder ports and addresses, bytes each way,
and the spread of flow durations.

Hosts are then clustered on five features in fixed log10 units (connection rate,
distinct ports, distinct peers, bytes per flow, mean duration), so a distance of 1
means "ten times more" in one respect whatever the rest of the population looks
like: average-linkage agglomerative clustering with a distance threshold forms the
groups, and a label from the group's median host names it ("scanner", "bulk",
"chatty", "long-lived", "quiet"). Scanners touch many ports or open many empty
connections; bulk clients move much data per flow; chatty clients open many small
ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netmon.core.values import HostView
from netmon.flows.keys import split_key
from netmon.flows.table import FlowTable

#: Feature names, in the order of :func:`host_features` columns.
FEATURES = ("conns_per_min", "ports", "peers", "bytes_per_flow", "dur_mean_ms")
#: Hosts further apart than this (in log10 units, average linkage) form separate groups.
DISTANCE = 1.0
#: At most this many hosts are clustered at once (see :func:`cluster_hosts`).
MAX_FIT = 1000
ROUNDS = 4
#: Label thresholds (on a group's median host).
SCAN_PORTS = 10  # distinct ports or peers touched
EMPTY_BYTES = 64  # bytes per flow below which connections carry (about) nothing
CHATTY_CPM = 10.0
BULK_BYTES = 100_000
LONG_SECONDS = 60.0
LABELS = ("scanner", "bulk", "chatty", "long-lived", "quiet")


@dataclass(frozen=True)
class HostStats:
    """Per-host columns (row i = host i), from :func:`host_stats`."""

    digest: np.ndarray  # uint64 digest of the address (as the flow table keeps it)
    rep_key: list[bytes]  # one flow key per host, for its address text
    rep_lo: list[bool]  # whether the host is that key's lo endpoint
    flows: np.ndarray
    conns_per_min: np.ndarray
    ports: np.ndarray
    peers: np.ndarray
    bytes_out: np.ndarray
    bytes_in: np.ndarray
    dur_mean: np.ndarray
    dur_std: np.ndarray
    dur_max: np.ndarray

    def __len__(self) -> int:
        return len(self.digest)

    def address(self, i: int) -> str:
        """Host ``i``'s address as text (made on demand: a busy table has tens of
        thousands of hosts and only the shown ones need it)."""
        _, lo_addr, _, hi_addr, _ = split_key(self.rep_key[i])
        return lo_addr if self.rep_lo[i] else hi_addr

    @property
    def addr(self) -> list[str]:
        """Every host's address as text (tests; O(hosts))."""
        return [self.address(i) for i in range(len(self))]


def _distinct_per_group(group: np.ndarray, value: np.ndarray, groups: int) -> np.ndarray:
    """How many distinct ``value``s each group has (value >= 0 integers)."""
    width = int(value.max()) + 1 if len(value) else 1
    pairs = np.sort(group.astype(np.int64) * width + value)
    first = np.r_[True, pairs[1:] != pairs[:-1]]  # (sorting beats np.unique's hashing)
    return np.bincount(pairs[first] // width, minlength=groups)


def host_stats(table: FlowTable, now: float, window: float = 60.0) -> HostStats:
    """Aggregate the table's live flows by initiator address.

    ``now`` is the table's clock (wall time live, capture time for replays);
    ``window`` bounds "per minute": flows started within it are counted and scaled
    to a minute (it is cut to the idle timeout, beyond which flows are gone).
    """
    slots = table.live_slots()
    a_lo = table.a_is_lo[slots]
    init = np.where(a_lo, table.host_lo[slots], table.host_hi[slots])
    digest, rep, inv = np.unique(init, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    h = len(digest)
    resp = np.where(a_lo, table.host_hi[slots], table.host_lo[slots])
    _, resp_id = np.unique(resp, return_inverse=True)
    port_b = np.where(a_lo, table.port_hi[slots], table.port_lo[slots]).astype(np.int64)
    first = table.first[slots]
    dur = np.maximum(table.last[slots] - first, 0.0)
    window = max(min(window, table.idle_timeout), 1e-3)
    flows = np.bincount(inv, minlength=h)
    nf = np.maximum(flows, 1)
    recent = (first >= now - window).astype(np.float64)
    mean = np.bincount(inv, weights=dur, minlength=h) / nf
    var = np.bincount(inv, weights=dur * dur, minlength=h) / nf - mean * mean
    dmax = np.zeros(h)
    np.maximum.at(dmax, inv, dur)
    b_ab = table.bytes_ab[slots]
    b_ba = table.bytes_ba[slots]
    out = np.where(a_lo, b_ab, b_ba).astype(np.float64)
    back = np.where(a_lo, b_ba, b_ab).astype(np.float64)
    keys = table.keys
    return HostStats(
        digest=digest, rep_key=[keys[s] for s in slots[rep].tolist()],
        rep_lo=a_lo[rep].tolist(), flows=flows,
        conns_per_min=np.bincount(inv, weights=recent, minlength=h) * (60.0 / window),
        ports=_distinct_per_group(inv, port_b, h),
        peers=_distinct_per_group(inv, resp_id.reshape(-1).astype(np.int64), h),
        bytes_out=np.bincount(inv, weights=out, minlength=h).astype(np.int64),
        bytes_in=np.bincount(inv, weights=back, minlength=h).astype(np.int64),
        dur_mean=mean, dur_std=np.sqrt(np.maximum(var, 0.0)), dur_max=dmax)


def host_features(stats: HostStats) -> np.ndarray:
    """Hosts x FEATURES in log10(1 + x) units: fixed scales, comparable across runs."""
    per_flow = (stats.bytes_out + stats.bytes_in) / np.maximum(stats.flows, 1)
    raw = np.column_stack([stats.conns_per_min, stats.ports, stats.peers, per_flow,
                           stats.dur_mean * 1000.0])
    return np.log10(1.0 + raw.astype(np.float64))


def label_of(f: np.ndarray) -> str:
    """The label of a group from its median host's features (see module docstring)."""
    cpm, ports, peers, per_flow, dur_ms = (10.0 ** f) - 1.0
    if max(ports, peers) >= SCAN_PORTS and per_flow < 10 * EMPTY_BYTES:
        return "scanner"
    if per_flow >= BULK_BYTES:
        return "bulk"
    if cpm >= CHATTY_CPM:
        return "scanner" if per_flow < EMPTY_BYTES else "chatty"
    if dur_ms >= LONG_SECONDS * 1000:
        return "long-lived"
    return "quiet"


def _agglomerate(x: np.ndarray) -> np.ndarray:
    if len(x) == 1:
        return np.zeros(1, dtype=np.int64)
    # scipy's average linkage: the same groups as sklearn's AgglomerativeClustering
    # with a distance threshold, for a third of the import time (this can run with
    # clustering off, on the reactor thread).
    from scipy.cluster.hierarchy import fcluster, linkage

    return (fcluster(linkage(x, method="average"), t=DISTANCE, criterion="distance")
            - 1).astype(np.int64)


def _nearest(x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(squared distance, index) of each row's nearest centre."""
    d = (x * x).sum(axis=1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(axis=1)
    near = d.argmin(axis=1)
    return np.maximum(d[np.arange(len(x)), near], 0.0), near


def cluster_hosts(features: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Group hosts: (cluster id per host, label per id - 1). Ids count from 1, ordered
    by label (scanners first) then by group size.

    At most MAX_FIT hosts are clustered at a time, the heaviest by ``weight`` first;
    the others join the nearest group within DISTANCE, and those near none are
    clustered in the next round (a few rounds at most), so a rare kind of host still
    gets its own group.
    """
    n = len(features)
    if n == 0:
        return np.zeros(0, dtype=np.int64), []
    assign = np.empty(n, dtype=np.int64)
    medians: list[np.ndarray] = []
    todo = np.argsort(-weight, kind="stable")
    for _ in range(ROUNDS):
        fit, rest = todo[:MAX_FIT], todo[MAX_FIT:]
        groups = _agglomerate(features[fit])
        for g in range(int(groups.max()) + 1):
            medians.append(np.median(features[fit][groups == g], axis=0))
        assign[fit] = groups + (len(medians) - int(groups.max()) - 1)
        if not len(rest):
            todo = rest
            break
        d2, near = _nearest(features[rest], np.array(medians))
        close = d2 <= DISTANCE * DISTANCE
        assign[rest[close]] = near[close]
        todo = rest[~close]
        if not len(todo):
            break
    if len(todo):  # rounds used up: the nearest group, however far
        assign[todo] = _nearest(features[todo], np.array(medians))[1]
    k = len(medians)
    labels = [label_of(m) for m in medians]
    sizes = np.bincount(assign, minlength=k)
    order = sorted(range(k), key=lambda g: (LABELS.index(labels[g]), -sizes[g], g))
    new_id = np.empty(k, dtype=np.int64)
    new_id[order] = np.arange(1, k + 1)
    return new_id[assign], [labels[g] for g in order]


def host_views(table: FlowTable, now: float, top: int = 50) -> tuple[HostView, ...]:
    """The ``top`` busiest hosts (by live flows) with their groups; at least one host
    of every group is included."""
    if not len(table):
        return ()
    stats = host_stats(table, now)
    ids, labels = cluster_hosts(host_features(stats), stats.flows.astype(np.float64))
    order = np.lexsort((np.arange(len(stats)), -stats.flows))
    pick = list(order[:top].tolist())
    shown = set(ids[pick].tolist())
    for i in order[top:].tolist():
        if ids[i] not in shown:
            shown.add(ids[i])
            pick.append(i)
    return tuple(HostView(
        addr=stats.address(i), flows=int(stats.flows[i]),
        conns_per_min=float(stats.conns_per_min[i]), ports=int(stats.ports[i]),
        peers=int(stats.peers[i]), bytes_out=int(stats.bytes_out[i]),
        bytes_in=int(stats.bytes_in[i]), dur_mean=float(stats.dur_mean[i]),
        dur_std=float(stats.dur_std[i]), dur_max=float(stats.dur_max[i]),
        cluster_id=int(ids[i]), label=labels[ids[i] - 1]) for i in pick)
