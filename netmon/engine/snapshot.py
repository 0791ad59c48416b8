"""The engine's snapshot builder: totals, rates, cluster views, source status, host
views and top flows, frozen into one immutable :class:`~netmon.core.values.Snapshot`.

Threads: :class:`SnapshotBuilder` is owned by the engine and runs on the reactor
thread, which owns the sources, the FlowTable and the cluster job it reads. Only the
Snapshot it returns leaves that thread (through the engine's ``publish`` callback).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from netmon.cluster.hosts import host_views
from netmon.cluster.stats import ClusterStats
from netmon.core.values import (
    ClusterView,
    FlowView,
    HostView,
    ProcessTotal,
    Snapshot,
    SourceStatus,
    Totals,
    Unclustered,
)
from netmon.engine.captureclock import CaptureClock
from netmon.engine.clusterjob import ClusterJob
from netmon.flows.table import FlowTable
from netmon.sources.base import Source

#: Seconds between updates of the hosts view; stretched so it takes <= 5% of the time.
HOSTS_EVERY = 2.0
#: The shortest interval a rate is over (a replay's first packets may share a stamp).
MIN_DT = 1e-3


class SnapshotBuilder:
    """The engine's state -> one Snapshot per tick (and a final one at the end)."""

    def __init__(self, table: FlowTable, sources: Sequence[Source],
                 clustering: ClusterJob | None, clock: Callable[[], float], *,
                 top_flows: int, tick: float, hosts: bool,
                 processes: Callable[[], tuple[ProcessTotal, ...]] | None = None,
                 replay: CaptureClock | None = None) -> None:
        self.table = table
        self.sources = sources
        self.clustering = clustering
        self.top_flows = top_flows
        self.want_hosts = hosts  # nobody shows the hosts view: don't compute it
        self._processes = processes  # per-process totals, where flows are attributed
        self._clock = clock  # the engine's: wall clock live, capture time in replays
        # Rates, "up" and the history of a replay follow the capture's own time.
        self._replay = replay
        self._tick = tick
        self._seq = 0
        self._started_wall = 0.0
        self._last_tick = (0.0, 0, 0)  # (wall, packets, bytes) at the previous tick
        self._hosts: tuple[HostView, ...] = ()
        self._hosts_at = 0.0
        self._hosts_every = HOSTS_EVERY
        #: The cluster views of the latest update (the UI link reads them too).
        self.clusters: tuple[ClusterView, ...] = ()
        self._cstats = ClusterStats(table)
        if clustering is not None:  # else nobody asks for cluster rates
            table.on_finish = self._cstats.ending
        self._cluster_at: float | None = None
        #: Traffic of the last cluster update in no cluster shown (warm-up, flows not
        #: yet placed): the row that makes the clusters add up to the header.
        self.unclustered = Unclustered()
        #: (rate clock, packets, bytes) at the mark.
        self._marked: tuple[float, int, int] | None = None
        self._history_times: tuple[float, ...] = ()

    def _rate_clock(self) -> float:
        """Now on the clock rates follow: the wall clock, or the capture's in replays."""
        return self._replay.elapsed if self._replay is not None else time.time()

    def begin(self, now: float) -> None:
        """The run starts at wall time ``now``: elapsed time and rates count from it."""
        self._started_wall = now
        start = self._rate_clock()
        self._last_tick = (start, 0, 0)
        self._cluster_at = start  # cluster rates count from the start, as the header's

    def mark(self) -> None:
        """The next snapshot's rates, header and clusters alike, count up to now (the
        engine marks the instant it hands the clusterer a job, and builds the next
        snapshot a tick later, once the job is applied: every flow counted has its
        cluster)."""
        self._cstats.mark()
        self._marked = (self._rate_clock(), self.table.packets, self.table.bytes)

    def ended_clustered(self, flow_ids: np.ndarray, clusters: np.ndarray,
                        final: bool = False, packets: np.ndarray | None = None,
                        nbytes: np.ndarray | None = None) -> None:
        """Ended flows got their clusters: their last packets count into them
        (``final``: their last word, the flows and their totals count too)."""
        self._cstats.ended_clustered(flow_ids, clusters, final, packets, nbytes)

    def update_clusters(self, final: bool = False) -> None:
        """Recompute the cluster views from the cluster job's latest labels (``final``:
        the run's last figures, where every cluster any flow ended in is listed)."""
        now = self._marked[0] if self._marked is not None else self._rate_clock()
        # A replay's first packets can share one stamp: a floor keeps rates finite.
        dt = max(now - self._cluster_at, MIN_DT) if self._cluster_at is not None else self._tick
        self._cluster_at = now
        c = self.clustering
        span = self._average_span(final)
        shown = {i: label for i, label in c.labels.items() if i in c.shown}
        self.clusters = self._cstats.views(dt, shown, c.recent, c.threshold,
                                           now=self._clock(), at=now,
                                           every=c.labels if final else None,
                                           average_over=span)
        self._history_times = tuple(self._cstats.times)
        pk, by, flows, ended = self._cstats.unclustered
        if span:
            (pk, by), dt = self._cstats.unclustered_totals, span
        self.unclustered = Unclustered(flows, pk / dt, by / dt, flows + ended)

    def _average_span(self, finished: bool) -> float:
        """Seconds a finished replay's averages are over (0: rates are the tick's)."""
        if finished and self._replay is not None and self._replay.elapsed >= MIN_DT:
            return self._replay.elapsed
        return 0.0

    def build(self, warnings: Sequence[str], finished: bool = False) -> Snapshot:
        """The Snapshot of this moment; rates are since the previous one (up to the
        mark when there is one)."""
        now = time.time()
        clock = self._rate_clock()
        at, packets, nbytes = self._marked or (clock, self.table.packets, self.table.bytes)
        self._marked = None
        totals = self._totals()
        at0, pk0, by0 = self._last_tick
        dt = max(at - at0, MIN_DT)
        pkt_rate = (packets - pk0) / dt
        byte_rate = (nbytes - by0) / dt
        self._last_tick = (at, packets, nbytes)
        span = self._average_span(finished)
        if span:  # a finished replay: what the whole capture averaged
            pkt_rate, byte_rate = self.table.packets / span, self.table.bytes / span
        self._seq += 1
        statuses: tuple[SourceStatus, ...] = tuple(s.status() for s in self.sources)
        return Snapshot(
            seq=self._seq, wall_time=now, capture_time=self.table.latest_ts,
            elapsed=clock if self._replay is not None else now - self._started_wall,
            totals=totals, pkt_rate=pkt_rate,
            byte_rate=byte_rate, sources=statuses, top_flows=self._top_flows(),
            clusters=self.clusters, unclustered=self.unclustered,
            warnings=tuple(warnings), finished=finished,
            hosts=self._host_views(now, finished),
            ssh_excluded="; ".join(s.note for s in self.sources if s.note),
            processes=self._processes() if self._processes is not None else (),
            clock="capture" if self._replay is not None else "wall",
            history_times=self._history_times, averaged=bool(span),
            wall_elapsed=now - self._started_wall,
        )

    def _totals(self) -> Totals:
        nonip = unmatched = 0
        skipped: dict[str, int] = {}
        for src in self.sources:
            feed = src.feed
            if feed is None:
                continue
            dec = feed.decoder
            nonip += dec.nonip
            unmatched += dec.frags.unmatched
            for reason, n in dec.skipped.items():
                skipped[reason] = skipped.get(reason, 0) + n
        t = self.table
        nskipped = sum(skipped.values())
        return Totals(
            packets=t.packets + nonip + nskipped, bytes=t.bytes, ip_packets=t.packets,
            nonip_frames=nonip,
            skipped=nskipped, skipped_reasons=tuple(sorted(skipped.items())),
            flows_live=len(t), flows_seen=t.flows_seen, flows_expired=t.expired,
            flows_evicted=t.evicted, fragments_unmatched=unmatched,
        )

    def _top_flows(self) -> tuple[FlowView, ...]:
        n = self.top_flows
        live = self.table.live_slots()
        if not n or not len(live):
            return ()
        size = self.table.bytes_ab[live] + self.table.bytes_ba[live]
        if len(live) > n:
            pick = np.argpartition(size, -n)[-n:]
            live, size = live[pick], size[pick]
        order = np.argsort(-size, kind="stable")
        labels = self.clustering.labels if self.clustering is not None else None
        return tuple(self.table.views(live[order], labels=labels))

    def _host_views(self, now: float, force: bool) -> tuple[HostView, ...]:
        if not self.want_hosts:
            return ()
        if force or now - self._hosts_at >= self._hosts_every:
            t0 = time.perf_counter()
            self._hosts = host_views(self.table, self._clock())
            self._hosts_every = max(HOSTS_EVERY, 20 * (time.perf_counter() - t0))
            self._hosts_at = now
        return self._hosts
