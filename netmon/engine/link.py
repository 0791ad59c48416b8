"""EngineUILink: the engine's answers to the UI's questions (netmon.core.link.EngineLink).

Threads. The UI calls every method on its own thread; each one only schedules work on
the engine's reactor thread (``reactor.callFromThread``), which owns the flow table and
the packet store. Flow, host and packet questions are answered there, vectorised over the
table's columns, and ``reply`` is called there. Dissections and export files take
longer: the reactor thread gathers immutable inputs (frame bytes, numpy copies, views)
and hands them to a worker thread (``reactor.callInThread``), which replies when done.
Once the engine has stopped (a replay that ended while the screen stays open) the table
and store have no owner left and do not change: questions are then answered, in order,
on one thread of the link's own.

Errors a user can cause (a bad filter, an unknown sort column, a packet no longer
retained, no tshark, an unwritable directory) come back in the answer's ``error``
field. Anything else is a bug: it is logged with its traceback and raised again after
an error answer, so the UI never waits for ever and the bug is not hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from netmon.core.link import (
    Dissection,
    ExportRequest,
    ExportResult,
    FlowPage,
    FlowQuery,
    HostPage,
    PacketInfo,
    PacketList,
)
from netmon.core.values import ClusterView, FlowView
from netmon.engine.link_packets import FollowExportMixin
from netmon.export.bundle import ExportError, export_files
from netmon.flows.filter import Filter, FilterError, bpf_for_flows, compile_filter
from netmon.flows.selection import QueryError, flag_text, host_rows, select_flows
from netmon.flows.table import FlowTable
from netmon.flows.views import views_from_columns
from netmon.ingest.dissect import CONTEXT_FRAMES, DISSECT_TIMEOUT, DissectError, dissect_frames
from netmon.ingest.keptpackets import TIER_NAMES, RingFrame

log = logging.getLogger(__name__)

#: A packet list shows at most this many of a flow's newest kept packets.
MAX_PACKETS = 5000


class _Request:
    """One question in flight: runs once, on the reactor or (engine gone) the link's
    own thread."""

    __slots__ = ("fail", "name", "started", "work")

    def __init__(self, name: str, work: Callable[[Callable], None],
                 fail: Callable[[str], None]) -> None:
        self.name = name
        self.work = work
        self.fail = fail
        self.started = False


class EngineUILink(FollowExportMixin):
    """The engine side of :class:`netmon.core.link.EngineLink` (follow stream and
    packet export: :class:`netmon.engine.link_packets.FollowExportMixin`)."""

    def __init__(self, engine: Any, *, dissect_timeout: float = DISSECT_TIMEOUT,
                 tshark_path: str | None = None) -> None:
        self.engine = engine
        self.reactor = engine.reactor
        self.dissect_timeout = dissect_timeout
        self.tshark_path = tshark_path
        self._lock = threading.Lock()
        self._pending: set[_Request] = set()
        self._gone = False  # the engine's reactor has stopped for good
        self._closed = False  # stop() was called
        self._own: ThreadPoolExecutor | None = None
        self._dissecting: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Task]] = {}
        self._filters: dict[str, Filter] = {}
        # Questions queued on a reactor that then stops would never run: hand them on.
        if self.reactor.running:
            self.reactor.callFromThread(self._watch_shutdown)
        else:
            self._watch_shutdown()

    # ------------------------------------------------------------------ EngineLink
    def query_flows(self, query: FlowQuery, reply: Callable[[FlowPage], None]) -> None:
        def work(_background: Callable) -> None:
            try:
                slots, total = self._select(query, paged=True)
            except (FilterError, QueryError) as exc:
                reply(FlowPage(query, (), 0, error=str(exc)))
                return
            reply(FlowPage(query, tuple(self._views(slots)), total))

        self._submit("query_flows", work, lambda msg: reply(FlowPage(query, (), 0, error=msg)))

    def query_hosts(self, query: FlowQuery, reply: Callable[[HostPage], None]) -> None:
        def work(_background: Callable) -> None:
            try:
                slots, _ = self._select(query, paged=False, ordered=False)
                hosts, total = host_rows(self.engine.table, slots, query)
            except (FilterError, QueryError) as exc:
                reply(HostPage(query, (), 0, error=str(exc)))
                return
            reply(HostPage(query, hosts, total))

        self._submit("query_hosts", work, lambda msg: reply(HostPage(query, (), 0, error=msg)))

    def query_packets(self, flow_id: int, reply: Callable[[PacketList], None]) -> None:
        def work(_background: Callable) -> None:
            reply(self._packets(flow_id))

        self._submit("query_packets", work,
                     lambda msg: reply(PacketList(flow_id, None, (), error=msg)))

    def dissect(self, flow_id: int, index: int, reply: Callable[[Dissection], None]) -> None:
        def fail(msg: str) -> None:
            reply(Dissection(flow_id, index, (), error=msg))

        def work(background: Callable) -> None:
            store, _ = self._store(flow_id)
            frames = store.frames_of(flow_id, upto_seq=index, limit=CONTEXT_FRAMES)
            if not frames or frames[-1].seq != index:
                fail(self._why_missing(flow_id, index))
                return
            background(lambda: self._dissect_in_worker(flow_id, index, frames, reply))

        self._submit("dissect", work, fail)

    def export(self, request: ExportRequest, reply: Callable[[ExportResult], None]) -> None:
        def fail(msg: str) -> None:
            reply(ExportResult((), error=msg))

        def work(background: Callable) -> None:
            try:
                slots, total = self._select(request.query, paged=False)
            except (FilterError, QueryError) as exc:
                fail(f"nothing exported: {exc}")
                return
            t = self.engine.table
            flows = (t.columns(slots), [t.keys[s] for s in slots.tolist()])
            observers = tuple(t.observers)  # a copy: the worker must not read the table
            members = None
            if request.cluster_id is not None:
                cs = t.live_slots()
                cs = cs[t.cluster[cs] == request.cluster_id]
                members = (t.columns(cs), [t.keys[s] for s in cs.tolist()])
            q = request.query
            meta = {"exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "filter": q.filter,
                    "cluster_id": q.cluster_id, "sort": q.sort, "descending": q.descending,
                    "flows_matching": total}
            labels = dict(self._labels())
            clusters = self._clusters()
            background(lambda: self._export_in_worker(request, flows, members, labels,
                                                      clusters, meta, observers, reply))

        self._submit("export", work, fail)

    def stop(self) -> None:
        """The UI is closing: answer nothing new, cancel running dissections (their
        tshark is killed), let the engine run on (its owner stops it)."""
        self._closed = True
        with self._lock:
            running = list(self._dissecting.values())
        for loop, task in running:
            with contextlib.suppress(RuntimeError):  # that loop has just closed
                loop.call_soon_threadsafe(task.cancel)
        if self._own is not None:
            self._own.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ scheduling
    def _watch_shutdown(self) -> None:
        self.reactor.addSystemEventTrigger("after", "shutdown", self._engine_gone)

    def _engine_ended(self) -> bool:
        # The engine's thread ran and is over (the link may be made after that).
        thread = getattr(self.engine, "_thread", None)
        return thread is not None and not thread.is_alive()

    def _engine_gone(self) -> None:
        with self._lock:
            self._gone = True
            left = list(self._pending)
            self._pending.clear()
        for req in left:
            self._run_own(req)

    def _submit(self, name: str, work: Callable[[Callable], None],
                fail: Callable[[str], None]) -> None:
        if self._closed:
            fail("netmon is closing")
            return
        req = _Request(name, work, fail)
        with self._lock:
            own = self._gone or self._engine_ended()
            if not own:
                self._pending.add(req)
        if own:
            self._run_own(req)
        else:
            self.reactor.callFromThread(self._start, req, self._in_reactor_pool, True)

    def _run_own(self, req: _Request) -> None:
        with self._lock:
            if self._own is None:
                self._own = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netmon-link")
            own = self._own
        try:
            own.submit(self._start, req, self._in_new_thread, False)
        except RuntimeError:  # shut down by stop()
            req.fail("netmon is closing")

    def _start(self, req: _Request, background: Callable, reraise: bool) -> None:
        with self._lock:
            if req.started:
                return
            req.started = True
            self._pending.discard(req)
        self._guarded(req.name, lambda: req.work(background), req.fail, reraise)

    @staticmethod
    def _guarded(name: str, fn: Callable[[], None], fail: Callable[[str], None],
                 reraise: bool = True) -> None:
        try:
            fn()
        except Exception as exc:
            log.exception("netmon bug while answering %s", name)
            fail(f"internal error in {name}: {type(exc).__name__}: {exc}")
            if reraise:
                raise

    def _in_reactor_pool(self, fn: Callable[[], None]) -> None:
        self.reactor.callInThread(fn)

    @staticmethod
    def _in_new_thread(fn: Callable[[], None]) -> None:
        threading.Thread(target=fn, name="netmon-link-worker", daemon=True).start()

    # ------------------------------------------------------------------ flows
    def _compile(self, text: str) -> Filter:
        flt = self._filters.get(text)
        if flt is None:
            try:
                flt = compile_filter(text)
            except FilterError as exc:
                raise FilterError(f"filter: {exc}") from None
            if len(self._filters) > 64:
                self._filters.clear()
            self._filters[text] = flt
        return flt

    def _select(self, query: FlowQuery, *, paged: bool,
                ordered: bool = True) -> tuple[np.ndarray, int]:
        return select_flows(self.engine.table, query, self._compile(query.filter),
                            paged=paged, ordered=ordered)

    def _labels(self) -> dict[int, str]:
        clustering = getattr(self.engine, "clustering", None)
        return clustering.labels if clustering is not None else {}

    def _clusters(self) -> tuple[ClusterView, ...]:
        # The clusters of the latest snapshot (kept for the next one).
        return self.engine.snapshots.clusters

    def _views(self, slots: np.ndarray) -> list[FlowView]:
        return self.engine.table.views(slots, labels=self._labels())

    # ------------------------------------------------------------------ packets
    def _flow_view(self, flow_id: int) -> FlowView | None:
        t: FlowTable = self.engine.table
        slot = np.flatnonzero((t.flow_id == flow_id) & (t.live | t.ended.kept))
        return self._views(slot[:1])[0] if len(slot) else None

    def _store(self, flow_id: int) -> tuple[Any, str]:
        """Where the flow's packets are read from, and that tier's name: the on-disk
        ring (--keep-packets) when it holds them (whole frames, all it kept), else the
        in-memory ring. The disk reader is safe on any thread."""
        disk = getattr(self.engine, "disk", None)
        if disk is not None and disk.holds(flow_id):
            return disk.reader(), "disk"
        return self.engine.packets, "memory"

    def _packets(self, flow_id: int) -> PacketList:
        flow = self._flow_view(flow_id)
        store, tier = self._store(flow_id)
        sp = store.packets_of(flow_id)
        # N: the table's count while the flow is live; once it has ended, the newest
        # packet kept tells (the store keeps a flow's newest packets to the end).
        total = flow.packets if flow is not None else sp.newest + 1
        if not len(sp):
            if flow is None:
                return PacketList(flow_id, None, (), error=f"flow {flow_id} has ended and "
                                  "none of its packets are kept any more")
            return PacketList(flow_id, flow, (), total=total, tier=tier)
        skip = max(len(sp) - MAX_PACKETS, 0)  # older than the listed ones: left out
        rows = zip(sp.seq[skip:].tolist(), sp.ts[skip:].tolist(), sp.a2b[skip:].tolist(),
                   sp.size[skip:].tolist(), sp.proto[skip:].tolist(),
                   sp.flags[skip:].tolist(), sp.tier[skip:].tolist(),
                   sp.has_bytes[skip:].tolist(), strict=True)
        packets = tuple(PacketInfo(seq, ts, 1 if a2b else -1, size, flag_text(proto, fl),
                                   TIER_NAMES[tier], has)
                        for seq, ts, a2b, size, proto, fl, tier, has in rows)
        return PacketList(flow_id, flow, packets, total=max(total, len(sp)), kept=len(sp),
                          tier=tier)

    # ------------------------------------------------------------------ dissection
    def _why_missing(self, flow_id: int, index: int) -> str:
        store, tier = self._store(flow_id)
        sp = store.packets_of(flow_id)
        flow = self._flow_view(flow_id)
        total = flow.packets if flow is not None else sp.newest + 1
        if tier == "disk":
            if index in sp.seq.tolist():
                return f"packet {index} of flow {flow_id} could not be read back from disk"
            return (f"packet {index} of flow {flow_id} is no longer on disk (the oldest "
                    "segments go to stay within --keep-size)")
        policy = (f"netmon keeps each flow's first {store.first} and most recent "
                  f"{store.recent} packets")
        if not store.budget:
            return "netmon keeps no packets in this run (packet memory is 0)"
        if index < 0 or (flow is not None and index >= total):
            return f"flow {flow_id} has no packet {index}"
        if index in sp.seq.tolist():
            return (f"the bytes of packet {index} of flow {flow_id} were not kept "
                    "(it was read while recovering from damaged capture data)")
        memory = f"{store.budget / 2**20:g} MB in all"
        if not len(sp):
            return (f"no packet of flow {flow_id} is kept any more ({policy}, "
                    f"{memory}; ended flows' packets go first)")
        if index < store.first or index > total - 1 - store.recent:
            return (f"packet {index} of flow {flow_id} is not kept: it went to make room "
                    f"({policy} within {memory}; the flows holding most lose first)")
        return f"packet {index} of flow {flow_id} is not kept: {policy}"

    def _dissect_in_worker(self, flow_id: int, index: int, frames: list[RingFrame],
                           reply: Callable[[Dissection], None]) -> None:
        key = id(threading.current_thread())

        def on_start(loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
            with self._lock:
                self._dissecting[key] = (loop, task)
            if self._closed:
                task.cancel()

        def run() -> None:
            try:
                tree = dissect_frames(frames, timeout=self.dissect_timeout,
                                      tshark_path=self.tshark_path, on_start=on_start)
            except DissectError as exc:
                reply(Dissection(flow_id, index, (), error=str(exc)))
                return
            finally:
                with self._lock:
                    self._dissecting.pop(key, None)
            reply(Dissection(flow_id, index, tree, bytes(frames[-1].data)))

        self._guarded("dissect", run, lambda msg: reply(Dissection(flow_id, index, (),
                                                                   error=msg)))

    # ------------------------------------------------------------------ export
    def _export_in_worker(self, request: ExportRequest, flows: tuple, members: tuple | None,
                          labels: dict[int, str], clusters: tuple[ClusterView, ...],
                          meta: dict, observers: tuple[str, ...],
                          reply: Callable[[ExportResult], None]) -> None:
        def run() -> None:
            views = views_from_columns(*flows, "", labels, observers)
            bpf = ""
            if members is not None and members[1]:
                bpf = bpf_for_flows(views_from_columns(*members, "", labels, observers))
            try:
                paths = export_files(request.directory, views, clusters, meta=meta, bpf=bpf,
                                     bpf_name=f"cluster{request.cluster_id}")
            except ExportError as exc:
                reply(ExportResult((), bpf=bpf, error=str(exc)))
                return
            reply(ExportResult(paths, bpf=bpf, flows=len(views), clusters=len(clusters),
                               bpf_cluster=request.cluster_id if bpf else None))

        self._guarded("export", run, lambda msg: reply(ExportResult((), error=msg)))
