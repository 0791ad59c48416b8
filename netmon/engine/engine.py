"""The engine: a Twisted reactor on its own thread that owns ingest and the flow table.

It holds the lifecycle (start, stop, join, the reactor thread), the sinks sources
feed, batching into the FlowTable and tick scheduling; what each tick publishes is
built by :class:`netmon.engine.snapshot.SnapshotBuilder`.

Threads: everything in :class:`Engine` except :meth:`Engine.start`, :meth:`Engine.stop`,
:meth:`Engine.join` and :attr:`Engine.result` runs on the reactor thread, which owns
the sources, the FlowTable and the flows-out writer. Other threads talk to it only
through :meth:`Engine.stop` / :meth:`Engine.call` (``reactor.callFromThread``) and
receive immutable :class:`~netmon.core.values.Snapshot` objects through the ``publish``
callback, which must not block (the TUI posts a message; headless puts on a queue).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from twisted.internet import process as tprocess
from twisted.internet import task

from netmon.core.errors import SourceError
from netmon.core.heap import keep_freed_heap
from netmon.core.settings import Settings
from netmon.core.text import NAME_MAX, safe_text
from netmon.core.values import ConnectionRecord, Snapshot
from netmon.engine.capticks import CaptureTicks
from netmon.engine.captureclock import CaptureClock
from netmon.engine.clusterjob import ClusterJob
from netmon.engine.keeping import DiskKeeping
from netmon.engine.procwire import ProcessWiring
from netmon.engine.result import EngineResult
from netmon.engine.snapshot import SnapshotBuilder
from netmon.export.flowsout import FlowsOutWriter
from netmon.flows.naming import FlowNamer
from netmon.flows.table import FlowTable
from netmon.ingest.batch import PacketBatch
from netmon.ingest.packetstore import PacketStore
from netmon.netflow.templates import FlowRecords
from netmon.sources.base import EngineSinks, Source
from netmon.sources.capture import kill_leftovers

log = logging.getLogger(__name__)

#: Records are handed to the FlowTable in batches at least this big (or each tick):
#: its vectorised update costs ~0.1 ms per call however small the batch.
BATCH = 8192
#: ... or when they keep this many bytes of capture buffers alive (big frames).
PENDING_RAW = 8 << 20
#: How long sources get to stop (capture tools flush and report drops) at shutdown.
STOP_TIMEOUT = 4.0


#: Sources that watch the present (flows age by the wall clock), not a recording.
LIVE_KINDS = ("live", "listen", "ssh", "collect")


def make_reactor() -> Any:
    """A fresh, private reactor (not the global one): one per engine, so tests can run
    several engines in one process and nothing else competes for it."""
    try:
        from twisted.internet.epollreactor import EPollReactor

        return EPollReactor()
    except ImportError:  # not Linux
        from twisted.internet.selectreactor import SelectReactor

        return SelectReactor()


class Engine(CaptureTicks):
    """Sources -> FlowTable -> snapshots, on a private reactor thread."""

    def __init__(self, settings: Settings, sources: list[Source],
                 publish: Callable[[Snapshot], None], *, hosts: bool = True) -> None:
        self.settings = settings
        self.sources = sources
        self.publish = publish
        self.reactor = make_reactor()
        self.table = FlowTable(idle_timeout=settings.idle_timeout,
                               active_timeout=settings.active_timeout,
                               max_flows=settings.max_flows,
                               keep_ended=settings.keep_ended)
        self.result = EngineResult()
        #: Names from the flows' first bytes (SNI, QUIC, ...) into the table's columns.
        self.namer = FlowNamer(self.table)
        #: Each flow's first and recent packets, for the UI's packet lists and dissections.
        self.packets = PacketStore(settings.packet_mb << 20)
        keep_freed_heap(self.packets.budget)  # its held buffers come and go in bulk
        self._pending_raw = 0
        self._writer = FlowsOutWriter(settings.flows_out) if settings.flows_out else None
        self._pending: list[PacketBatch] = []
        self._pending_n = 0
        self._expired_at = 0.0
        self._expire_step = min(1.0, settings.idle_timeout / 10)
        self._accepted = 0  # packets taken from sources (for --count)
        self._stopping = False
        self._finalised = False
        self._done_sources: set[int] = set()
        self._thread: threading.Thread | None = None
        self._live = any(s.kind in LIVE_KINDS for s in sources)
        self._pending_conns: list[ConnectionRecord] = []  # listener records, not yet counted
        # Collected flow records not yet counted: (records, observation point per row).
        self._pending_recs: list[tuple[FlowRecords, np.ndarray]] = []
        self._pending_recs_n = 0
        # Each source is an observation point; flows remember where they were seen.
        seen: dict[str, int] = {}
        for src in sources:
            if src.name in seen:  # two sources of one name: tell them apart
                seen[src.name] += 1
                src.name = f"{src.name} #{seen[src.name]}"
            seen.setdefault(src.name, 1)
            src.obs = self.table.observer_id(src.name)
        self.clustering = (ClusterJob(self.reactor, self.table, self._ended_flows,
                                      ports=not settings.no_ports, seed=settings.seed,
                                      on_done=self._resume_sources)
                           if settings.cluster else None)
        #: Which process each flow is (live capture here, --ssh hosts with ss).
        self.procs = ProcessWiring(self.table, sources, self.reactor, self.result.warnings)
        #: A replay's own time (rates, history and "up" follow it); None when live.
        self.capture_clock = None if self._live else CaptureClock()
        self.snapshots = SnapshotBuilder(self.table, sources, self.clustering, self._clock,
                                         top_flows=settings.top_flows, tick=settings.tick,
                                         hosts=hosts, processes=self.procs.totals,
                                         replay=self.capture_clock)
        # --reproducible: a full-speed replay ticks by capture time (expiry and clustering
        # every `tick` seconds of capture) and waits for each clustering job, so clusters
        # and --flows-out do not depend on this machine's speed -- at the cost of
        # reading no faster than the clusterer keeps up (~20-40 ms per tick).
        self._capture_ticks = (settings.reproducible and settings.cluster and not self._live
                               and not settings.speed)
        self._next_ctick = 0.0
        self._paused = False
        self._queue: deque[PacketBatch] = deque()  # capture-tick mode: not yet counted
        #: Every frame on disk (--keep-packets); its writer thread runs from _begin to
        #: _finalise, and a replay waits for it rather than lose packets on disk.
        self.keeping = (DiskKeeping(settings, sources, self.reactor, self.result.warnings,
                                    lambda: not self._paused and not self._finalised)
                        if settings.keep_packets else None)
        self.disk = self.keeping.ring if self.keeping is not None else None
        if self.clustering is not None:
            self.clustering.on_lost = self.snapshots.ended_clustered
        if self.disk is not None and self.clustering is not None:
            # The ring records each flow's cluster, so a cluster's packets can be
            # exported from it later (netmon packets DIR --cluster ID).
            self.clustering.on_assigned = self.disk.note_clusters

    # ------------------------------------------------------------ any thread
    def start(self) -> None:
        """Start the reactor thread (returns at once)."""
        self._thread = threading.Thread(target=self._run, name="netmon-reactor", daemon=True)
        self._thread.start()

    def stop(self, reason: str = "stopped") -> None:
        """Ask the engine to stop: sources end, flows are written, a final snapshot is
        published with ``finished=True``. Safe from any thread, any number of times."""
        try:
            self.reactor.callFromThread(self._shutdown, reason)
        except RuntimeError:  # reactor already gone
            pass

    def call(self, fn: Callable, *args: object) -> None:
        """Run ``fn(*args)`` on the reactor thread (UI commands)."""
        self.reactor.callFromThread(fn, *args)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the reactor thread; True when it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------ reactor thread
    def _run(self) -> None:
        self.reactor.callWhenRunning(self._begin)
        try:
            self.reactor.run(installSignalHandlers=False)
        finally:
            self.procs.stop()  # normally done by _finalise; this is for a reactor crash
            kill_leftovers()

    def _begin(self) -> None:
        self.snapshots.begin(time.time())
        if self.keeping is not None:
            self.keeping.start()
        self.procs.start()
        sinks = EngineSinks(packets=self._sink, connections=self._conn_sink,
                            flow_records=self._rec_sink, observer_id=self.table.observer_id)
        for src in self.sources:
            sink = src.connect(sinks)
            try:
                src.start(self.reactor, sink, self._source_done)
            except SourceError as exc:
                self._source_done(src, exc)
        if self.clustering is not None:
            self.clustering.start()
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = self.reactor
        self._ticker.start(self.settings.tick, now=False)
        # The reactor has no SIGCHLD handler off the main thread: reap on a timer.
        self._reaper = task.LoopingCall(tprocess.reapAllProcesses)
        self._reaper.clock = self.reactor
        self._reaper.start(0.2, now=False)
        if self.settings.duration:
            self.reactor.callLater(self.settings.duration, self._shutdown, "duration reached")

    def _sink(self, batch: PacketBatch) -> None:
        if self._finalised:
            return
        limit = self.settings.count
        if limit:
            room = limit - self._accepted
            if room <= 0:
                return
            if len(batch) >= room:
                batch = batch.head(room)
                self.reactor.callLater(0, self._shutdown, "packet count reached")
        self._accepted += len(batch)
        self._pending.append(batch)
        self._pending_n += len(batch)
        self._pending_raw += batch.raw_nbytes
        if self._pending_n >= BATCH or self._pending_raw >= PENDING_RAW:
            self._flush()

    def _conn_sink(self, records: list[ConnectionRecord]) -> None:
        if self._finalised:
            return
        self._pending_conns.extend(records)
        if len(self._pending_conns) >= BATCH:
            self._flush()

    def _rec_sink(self, records: FlowRecords, obs: np.ndarray) -> None:
        if self._finalised:
            return
        self._pending_recs.append((records, obs))
        self._pending_recs_n += len(records)
        if self._pending_recs_n >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending_recs:
            parts, self._pending_recs, self._pending_recs_n = self._pending_recs, [], 0
            self.table.add_records(FlowRecords.concat([r for r, _ in parts]),
                                   np.concatenate([o for _, o in parts]), time.time())
        if self._pending_conns:
            records, self._pending_conns = self._pending_conns, []
            self.table.add_connections(records)
        if self._pending:
            batch = PacketBatch.concat(self._pending)
            self._pending = []
            self._pending_n = 0
            self._pending_raw = 0
            if self._capture_ticks:
                self._queue.append(batch)
                self._drain()
                return
            self._count(batch)
            if not self._live:
                # Replays run faster than the wall-clock tick: age flows by capture
                # time as it advances, so where flows split does not depend on speed.
                latest = self.table.latest_ts
                if latest - self._expired_at >= self._expire_step:
                    self.table.expire(latest)
                    self._expired_at = latest

    def _count(self, batch: PacketBatch) -> None:
        """Count packets in the flow table; keep their flows' first and recent ones."""
        slots, lo_first, seq = self.table.add_batch(batch)
        if self.capture_clock is not None:
            self.capture_clock.advance(batch.ts)
        self.namer.observe(batch, slots, lo_first, seq)
        t = self.table
        flow_id, a2b = t.flow_id[slots], lo_first == t.a_is_lo[slots]
        if self.packets.budget:
            # Each row's flow total after the batch: the store keeps a flow's last
            # packets of the batch without sorting it again.
            self.packets.append(batch, flow_id, a2b, seq, t.pkts_ab[slots] + t.pkts_ba[slots])
        if self.keeping is not None:
            self.keeping.append(batch, flow_id, a2b, seq)

    def _clock(self) -> float:
        # Live traffic expires by the wall clock (quiet links still age flows out);
        # replays by capture time, so old captures expire as they did on the wire.
        return time.time() if self._live else self.table.latest_ts

    def _source_done(self, src: Source, error: SourceError | None) -> None:
        if id(src) in self._done_sources:
            return
        self._done_sources.add(id(src))
        if error is not None and not self._stopping:
            self.result.errors.append(error)
            log.info("source %s failed: %s", src.name, error.message)
        elif src.detail and src.state == "finished":
            self.result.warnings.append(f"{src.name}: {src.detail}")
        if len(self._done_sources) == len(self.sources):
            if self._stopping:
                self._finalise()
            else:
                self.reactor.callLater(0, self._shutdown, "end of input")

    def _tick(self) -> None:
        if self.keeping is not None:
            self.keeping.news()
        if self._capture_ticks:
            # Expiry and clustering follow capture time (_capture_tick); the wall-clock
            # tick only reports.
            if self.clustering is not None:
                self._update_clusters()
            self.publish(self.snapshots.build(self.result.warnings))
            return
        self._flush()
        self.procs.tick()  # before expiry: every flow is looked up before it can end
        self.table.expire(self._clock())
        self._pass_ended()
        self.namer.tick(self.table.latest_ts)
        if self.clustering is None:
            self.publish(self.snapshots.build(self.result.warnings))
            return
        # Rates, the header's and the clusters' alike, cover the tick up to the last
        # job's cut (the mark): that job has been applied since, so every flow counted
        # then, a scan's or a DNS burst's one-packet flows too, has its cluster. The
        # figures are one tick late, and add up.
        self._update_clusters()
        snap = self.snapshots.build(self.result.warnings)
        self.snapshots.mark()
        self.clustering.submit()
        self.publish(snap)

    def _pass_ended(self) -> None:
        """Ended flows go to clustering (which hands them on) or straight out; their
        kept packets are the first to go when the packet store needs room."""
        self.procs.ended()
        if self.packets.budget:
            self.packets.end_flows(self.table.finished_ids())
        if self.clustering is not None:
            self.clustering.add_ended(self.table.take_finished())
        elif self._writer is None:
            self.table.discard_finished()
        else:
            for cols, keys, reason in self.table.take_finished():
                self._ended_flows(cols, keys, reason, {})

    def _ended_flows(self, cols: dict, keys: list[bytes], reason: str,
                     labels: dict[int, str]) -> None:
        if "cluster" in cols:
            if "slot" in cols:  # kept rows list the flow in its final cluster
                self.table.final_clusters(cols["slot"], cols["flow_id"], cols["cluster"])
            # A tunnel's frames count through its inner flows.
            inner = ~cols["tunnel"] if "tunnel" in cols else True
            self.snapshots.ended_clustered(
                cols["flow_id"], cols["cluster"], final=True,
                packets=(cols["pkts_a2b"] + cols["pkts_b2a"]) * inner,
                nbytes=(cols["bytes_a2b"] + cols["bytes_b2a"]) * inner)
            if self.disk is not None and self.clustering is not None:
                # The cluster each ended flow had last: `netmon packets --cluster` reads it.
                self.disk.note_clusters(cols["flow_id"], cols["cluster"], labels,
                                        ended=True)
        if self._writer is None or not keys:
            return
        try:
            self._writer.write(cols, keys, reason, labels, self.table.observers)
        except OSError as exc:  # a full disk: keep counting, say so at the end
            self.result.flows_out_error = f"cannot write {self._writer.path}: {exc}"
            self._writer.abort()
            self._writer = None

    def _update_clusters(self, final: bool = False) -> None:
        self.snapshots.update_clusters(final)
        c = self.clustering
        if c.error and c.error not in self.result.warnings:
            self.result.warnings.append(c.error)
            self.result.internal_error = c.bug

    def _shutdown(self, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.result.stop_reason = reason
        pending = [s for s in self.sources if id(s) not in self._done_sources]
        for src in pending:
            src.stop()
        if all(id(s) in self._done_sources for s in self.sources):
            self._finalise()
        else:
            self.reactor.callLater(STOP_TIMEOUT, self._finalise)

    def _finalise(self) -> None:
        if self._finalised:
            return
        self._finalised = True
        for name in ("_ticker", "_reaper"):
            loop = getattr(self, name, None)
            if loop is not None and loop.running:
                loop.stop()
        self._flush()
        while self._queue and self.clustering is not None:
            # A replay stopped while waiting for the clusterer: count what was read.
            if not self.clustering.wait_current():
                break
            if self._paused:
                self._resume_sources()
        if self._queue:
            self._paused = False
            self._drain()
        self.procs.tick(final=True)
        self.procs.stop()  # the last look-ups are done: join its thread
        self.table.expire(self._clock())
        self._pass_ended()
        if self.clustering is not None:
            self.clustering.finish()  # every flow seen gets its cluster
            self.snapshots.mark()  # the last figures count up to the end
            self._update_clusters(final=True)
        if self.keeping is not None:  # everything counted is queued: write it
            self.keeping.close()
        # Before end_live: live flows still count.
        snap = self.snapshots.build(self.result.warnings, finished=True)
        labels = self.clustering.labels if self.clustering is not None else None
        if self._writer is not None:
            self.table.end_live()
            for cols, keys, reason in self.table.take_finished():
                self._ended_flows(cols, keys, reason, labels or {})
        if self._writer is not None:
            try:
                self.result.flows_written = self._writer.commit()
            except OSError as exc:
                shown = safe_text(self._writer.path, NAME_MAX)
                self.result.flows_out_error = f"cannot write {shown}: {exc.strerror or exc}"
                self._writer.abort()
        tprocess.reapAllProcesses()
        self.publish(snap)
        self.reactor.callLater(0, self.reactor.stop)
