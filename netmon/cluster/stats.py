"""Per-cluster figures for the screen: flows, hosts, rates, share, top ports and hosts,
rate history; computed vectorised from the FlowTable's columns each tick.

Pure module (numpy). Owned by the engine's reactor thread, like the FlowTable it
reads. The clusterer decides which cluster each flow is in (the table's ``cluster``
column); this module only counts, so its cost does not depend on the model.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from netmon.cluster.endedcounts import EndedCounts
from netmon.core.values import ClusterView
from netmon.flows.keys import split_key
from netmon.flows.table import FlowTable

HISTORY = 240  # ticks of rate history per cluster (2 minutes at 0.5 s)
TOP = 3


def _top_counts(groups: np.ndarray, values: np.ndarray, top: int = TOP,
                ) -> dict[int, list[tuple[int, int]]]:
    """For each group, its ``top`` most frequent values with their counts.

    One 1-D sort of (group, value) pairs: ~10x faster than ``np.unique(axis=0)``.
    """
    if not len(groups):
        return {}
    order = np.lexsort((values, groups))
    g = groups[order]
    v = values[order]
    new_run = np.r_[True, (g[1:] != g[:-1]) | (v[1:] != v[:-1])]
    starts = np.flatnonzero(new_run)
    counts = np.diff(np.r_[starts, len(g)])
    rg, rv = g[starts], v[starts]
    best = np.lexsort((-counts, rg))  # by group, most frequent first
    out: dict[int, list[tuple[int, int]]] = {}
    for grp, val, c in zip(rg[best].tolist(), rv[best].tolist(), counts[best].tolist(),
                           strict=True):
        lst = out.setdefault(grp, [])
        if len(lst) < top:
            lst.append((val, c))
    return out


class ClusterStats:
    """Turns the table's cluster column into ClusterViews, tick after tick.

    Every packet counts once into a rate: a live flow's packets since the previous
    tick into its cluster, an ended flow's last ones into the cluster it had when it
    ended, and whatever no shown cluster holds (the clusterer's warm-up, flows it has
    not placed) into :attr:`unclustered`, so the rows and that add up to the header.
    The engine :meth:`mark` s the instant it hands the clusterer a job and asks for the
    views a tick later, once the job is applied: every flow counted up to the mark then
    has its cluster, so a scan's or a DNS burst's short flows show in their cluster's
    rate (the figures are a tick late).
    """

    def __init__(self, table: FlowTable) -> None:
        self.table = table
        self._prev_id = np.zeros(0, dtype=np.int64)  # flow id a slot had at its last count
        self._prev_pkts = np.zeros(0, dtype=np.int64)
        self._prev_bytes = np.zeros(0, dtype=np.int64)
        self.history: dict[int, deque[float]] = {}
        #: When each history point ended (the rate clock), the oldest one's start first.
        self.times: deque[float] = deque(maxlen=HISTORY + 1)
        #: Packets and bytes of the flows that ended in each cluster (their last word).
        self._lifetime: dict[int, list[int]] = {}
        #: ... and of the flows in no cluster listed, live or ended (last views').
        self.unclustered_totals = (0, 0)
        #: Live flows at the mark: slots, flow ids, packets, bytes (None: not marked).
        self._mark: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        #: Packets and bytes of flows that ended, for the figures they belong to.
        self._ended = EndedCounts()
        #: Flows that ended, by the cluster they ended in; when each cluster last had
        #: traffic (the engine's clock).
        self._flows_ended: dict[int, int] = {}
        self._last: dict[int, float] = {}
        #: Packets, bytes and live flows of the last views' interval in no cluster
        #: listed, and the ended flows in none.
        self.unclustered = (0, 0, 0, 0)

    def _grow(self) -> None:
        t = self.table
        if len(self._prev_id) < t.cap:  # the table grew: grow the memory with it
            grow = t.cap - len(self._prev_id)
            self._prev_id = np.concatenate([self._prev_id, np.full(grow, -1, dtype=np.int64)])
            self._prev_pkts = np.concatenate([self._prev_pkts, np.zeros(grow, dtype=np.int64)])
            self._prev_bytes = np.concatenate([self._prev_bytes,
                                               np.zeros(grow, dtype=np.int64)])

    def _since(self, slots: np.ndarray, ids: np.ndarray, pk: np.ndarray, by: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray]:
        """Packets and bytes of these flows since they were last counted; counted now."""
        self._grow()
        same = self._prev_id[slots] == ids  # a reused slot starts from zero
        dpk = pk - np.where(same, self._prev_pkts[slots], 0)
        dby = by - np.where(same, self._prev_bytes[slots], 0)
        self._prev_id[slots] = ids
        self._prev_pkts[slots] = pk
        self._prev_bytes[slots] = by
        # A tunnel's outer flow carries frames its inner flows count too: leave it out
        # of rates and shares, so they add up to the totals (each frame once).
        tun = self.table.tunnel[slots]
        if tun.any():
            dpk, dby = np.where(tun, 0, dpk), np.where(tun, 0, dby)
        return dpk, dby

    def mark(self) -> None:
        """Measure the live flows now; the next :meth:`views` counts up to here."""
        t = self.table
        live = t.live_slots()
        self._mark = (live, t.flow_id[live], t.pkts_ab[live] + t.pkts_ba[live],
                      t.bytes_ab[live] + t.bytes_ba[live])

    def ending(self, slots: np.ndarray) -> None:
        """Flows end (the table's ``on_finish``, before it frees their slots): their
        packets not counted yet go to the cluster they are in, those up to the mark
        into the next figures, the later ones into the figures after."""
        t = self.table
        self._grow()
        ids = t.flow_id[slots]
        pk = t.pkts_ab[slots] + t.pkts_ba[slots]
        by = t.bytes_ab[slots] + t.bytes_ba[slots]
        same = self._prev_id[slots] == ids
        base_pk = np.where(same, self._prev_pkts[slots], 0)
        base_by = np.where(same, self._prev_bytes[slots], 0)
        mark_pk, mark_by = pk, by  # no mark: the next figures count up to their time
        if self._mark is not None:  # flows the mark did not see: all after it
            mark_pk, mark_by = base_pk, base_by
            ms, mids, mpk, mby = self._mark
            if len(ms):
                pos = np.minimum(np.searchsorted(ms, slots), len(ms) - 1)
                marked = (ms[pos] == slots) & (mids[pos] == ids)
                mark_pk = np.where(marked, mpk[pos], base_pk)
                mark_by = np.where(marked, mby[pos], base_by)
        self._prev_id[slots] = -1
        tun = t.tunnel[slots]  # counted through their inner flows
        cl = t.cluster[slots].astype(np.int64)
        gen = self._ended.gen
        self._ended.add(ids, cl, gen, np.where(tun, 0, mark_pk - base_pk),
                        np.where(tun, 0, mark_by - base_by))
        self._ended.add(ids, cl, gen + 1, np.where(tun, 0, pk - mark_pk),
                        np.where(tun, 0, by - mark_by))

    def ended_clustered(self, flow_ids: np.ndarray, clusters: np.ndarray,
                        final: bool = False, packets: np.ndarray | None = None,
                        nbytes: np.ndarray | None = None) -> None:
        """Ended flows got their clusters (the job that took them was applied): their
        packets that waited for one count into them; ``final``: their last word (each
        ended flow comes once so), counted in its cluster's flows seen, and with
        ``packets``/``nbytes`` (the flows' totals) in its lifetime totals."""
        self._ended.clustered(flow_ids, clusters)
        if final and len(clusters):
            u, inv, n = np.unique(clusters, return_inverse=True, return_counts=True)
            pk = np.bincount(inv.reshape(-1), weights=packets, minlength=len(u)) \
                if packets is not None else np.zeros(len(u))
            by = np.bincount(inv.reshape(-1), weights=nbytes, minlength=len(u)) \
                if nbytes is not None else np.zeros(len(u))
            for c, k, p_, b_ in zip(u.tolist(), n.tolist(), pk.tolist(), by.tolist(),
                                    strict=True):
                self._flows_ended[c] = self._flows_ended.get(c, 0) + k
                life = self._lifetime.setdefault(c, [0, 0])
                life[0] += int(p_)
                life[1] += int(b_)

    def views(self, dt: float, labels: dict[int, str], recent: set[int],
              outlier_threshold: float, *, now: float = 0.0, at: float = 0.0,
              every: dict[int, str] | None = None,
              average_over: float = 0.0) -> tuple[ClusterView, ...]:
        """This tick's clusters, largest byte rate first; ``dt`` = seconds since the
        previous call (rates are per second over it), counts up to the last
        :meth:`mark` (made now when there is none), which was at ``at`` on the rate
        clock. ``labels``: the clusters shown, listed while they have flows, live or
        ended (idle ones too, until the clusterer retires them); ``every`` (the final
        figures): also the retired ones, so every flow seen is in a row. ``now``: the
        engine's clock, for :attr:`ClusterView.last_active`. ``average_over``
        (seconds, a finished replay): rates and shares are each cluster's totals over
        that span instead of the tick's."""
        t = self.table
        if not self.times:
            self.times.append(at - dt)
        self.times.append(at)
        if self._mark is None:
            self.mark()
        assert self._mark is not None
        live, ids, pk, by = self._mark
        self._mark = None
        still = t.live[live] & (t.flow_id[live] == ids)  # ended since: counted then
        live, ids, pk, by = live[still], ids[still], pk[still], by[still]
        dpk, dby = self._since(live, ids, pk, by)
        names = {**every, **labels} if every else labels
        cl = t.cluster[live].astype(np.int64)
        shown = np.isin(cl, np.fromiter(names, dtype=np.int64, count=len(names)))
        ended = self._ended.take()
        gone = [c for c in ended if c not in names]
        idle = [c for c, n in self._flows_ended.items() if n and c in names]
        self.unclustered = (int(dpk[~shown].sum()) + sum(ended[c][0] for c in gone),
                            int(dby[~shown].sum()) + sum(ended[c][1] for c in gone),
                            int(np.count_nonzero(~shown)),
                            sum(n for c, n in self._flows_ended.items() if c not in names))
        # Whole flows, by the cluster they are in (live) or ended in: the run's totals.
        lt_pk, lt_by = pk.astype(np.float64), by.astype(np.float64)
        tun = t.tunnel[live]
        if tun.any():
            lt_pk, lt_by = np.where(tun, 0.0, lt_pk), np.where(tun, 0.0, lt_by)
        gone_life = [v for c, v in self._lifetime.items() if c not in names]
        self.unclustered_totals = (
            int(lt_pk[~shown].sum()) + sum(v[0] for v in gone_life),
            int(lt_by[~shown].sum()) + sum(v[1] for v in gone_life))
        lt_pk, lt_by = lt_pk[shown], lt_by[shown]
        for c in gone:
            del ended[c]
        live, cl, dpk, dby = live[shown], cl[shown], dpk[shown], dby[shown]
        if not len(live) and not ended and not idle:
            self._trim_history(set())
            return ()
        n_live = len(live)
        ids, inv = np.unique(np.r_[cl, np.fromiter(ended, dtype=np.int64, count=len(ended)),
                                   np.array(idle, dtype=np.int64)], return_inverse=True)
        inv = inv.reshape(-1)[:n_live]
        flows = np.bincount(inv, minlength=len(ids))  # live flows
        extra_pk = np.array([v[0] for v in ended.values()], dtype=np.float64)
        extra_by = np.array([v[1] for v in ended.values()], dtype=np.float64)
        where = np.searchsorted(ids, np.fromiter(ended, dtype=np.int64, count=len(ended)))
        dt = max(dt, 1e-6)
        pkt_rate = np.bincount(inv, weights=dpk, minlength=len(ids)).astype(np.float64)
        byte_rate = np.bincount(inv, weights=dby, minlength=len(ids)).astype(np.float64)
        np.add.at(pkt_rate, where, extra_pk)
        np.add.at(byte_rate, where, extra_by)
        for c in ids[pkt_rate > 0].tolist():
            self._last[c] = now
        life = [self._lifetime.get(c, (0, 0)) for c in ids.tolist()]
        total_pk = np.bincount(inv, weights=lt_pk, minlength=len(ids)) + [v[0] for v in life]
        total_by = np.bincount(inv, weights=lt_by, minlength=len(ids)) + [v[1] for v in life]
        tick_rate = byte_rate / dt  # the sparkline's point, averaged or not
        if average_over > 0:  # what each cluster's flows averaged over the whole run
            dt = average_over
            pkt_rate, byte_rate = total_pk.copy(), total_by.copy()
        pkt_rate /= dt
        byte_rate /= dt
        total_rate = byte_rate.sum()
        share = (byte_rate / total_rate if total_rate > 0
                 else flows / max(int(flows.sum()), 1))
        outliers = np.bincount(inv, weights=(t.outlier[live] >= outlier_threshold),
                               minlength=len(ids))
        # Hosts: distinct addresses on either side of a cluster's flows.
        both = np.concatenate([inv, inv])
        digests = np.concatenate([t.host_lo[live], t.host_hi[live]])
        order = np.lexsort((digests, both))
        b, d = both[order], digests[order]
        first = np.r_[True, (b[1:] != b[:-1]) | (d[1:] != d[:-1])][:len(b)]
        hosts = np.bincount(b[first], minlength=len(ids))
        port_b = np.where(t.a_is_lo[live], t.port_hi[live], t.port_lo[live])
        top_ports = _top_counts(cl, port_b)
        # Top hosts: the most frequent responders; text from one flow's key each.
        resp = np.where(t.a_is_lo[live], t.host_hi[live], t.host_lo[live]).view(np.int64)
        top_hosts_d = _top_counts(cl, resp)
        example = dict(zip(resp.tolist(), live.tolist(), strict=True))
        out = []
        for i, cid in enumerate(ids.tolist()):
            hist = self.history.setdefault(cid, deque(maxlen=HISTORY))
            hist.append(float(tick_rate[i]))
            out.append(ClusterView(
                cluster_id=cid, label=names.get(cid, ""), flows=int(flows[i]),
                flows_total=int(flows[i]) + self._flows_ended.get(cid, 0),
                last_active=self._last.get(cid, 0.0),
                hosts=int(hosts[i]), pkt_rate=float(pkt_rate[i]),
                byte_rate=float(byte_rate[i]), share=float(share[i]),
                top_ports=tuple((p, n) for p, n in top_ports.get(cid, [])),
                top_hosts=tuple((self._responder_text(example[d]), n)
                                for d, n in top_hosts_d.get(cid, [])),
                history=tuple(hist), outliers=int(outliers[i]), new=cid in recent,
                packets=int(total_pk[i]), bytes=int(total_by[i])))
        self._trim_history(set(ids.tolist()))
        out.sort(key=lambda c: (-c.byte_rate, -c.flows, c.cluster_id))
        return tuple(out)

    def _responder_text(self, slot: int) -> str:
        _, lo, _, hi, _ = split_key(self.table.keys[slot])
        return hi if self.table.a_is_lo[slot] else lo

    def _trim_history(self, alive: set[int]) -> None:
        for cid in [c for c in self.history if c not in alive]:
            hist = self.history[cid]
            hist.append(0.0)
            if not any(hist):  # a cluster gone for a whole history window
                del self.history[cid]
