"""Runs the OnlineClusterer off the reactor thread, one tick's work at a time.

Threads: :class:`ClusterJob` is driven from the reactor thread (``submit`` and the
results); the clusterer itself lives on one dedicated worker thread (a Twisted
ThreadPool of exactly one thread), which creates it on first use (scikit-learn's
import alone takes ~0.7 s: it must not delay start-up) and is the only thread that
ever touches it. While a job runs, later ticks keep their changed flows marked dirty
and the next submission takes them all, so clustering never holds up ingest and
never shares the model between threads.

Flows that ended since the last job go to the clusterer too (a scan's flows often
live less than a tick); they come back with their cluster and are handed to
``on_finished`` as (columns, keys, reason, labels), e.g. for ``--flows-out``.

A failed job stops clustering, never counting: ingest goes on and ended flows are
handed on unclustered. Running out of memory is something a user can cause (and fix
with a lower ``--max-flows``): a warning. Any other exception is a bug in netmon:
its traceback is logged and :attr:`ClusterJob.bug` says so, so the run ends with an
internal-error exit code instead of a silent 0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from twisted.internet import threads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from netmon.flows.table import FlowTable

log = logging.getLogger(__name__)

Chunk = tuple[dict[str, np.ndarray], list[bytes], str]  # ended flows: columns, keys, reason
HOLD_MAX = 200_000  # ended flows waiting for the clusterer, at most
JOB_ROWS = 50_000  # rows (changed + ended flows) one job takes at most


@dataclass(frozen=True)
class ClusterResult:
    """What one job hands back to the reactor thread (rows: live flows, then ended)."""

    slots: np.ndarray
    flow_ids: np.ndarray
    ended: list[Chunk]
    cluster_id: np.ndarray
    outlier: np.ndarray
    labels: dict[int, str]  # every remembered cluster: flows may hold a retired one's ID
    shown: frozenset[int]  # the clusters shown now (with member flows lately)
    recent: frozenset[int]
    threshold: float
    seconds: float
    seq: int
    warm: bool  # False while the clusterer warms up: every cluster_id is -1


@dataclass(frozen=True)
class _JobFailed:
    """A job that raised, kept for :meth:`ClusterJob.wait_current` (which cannot wait
    for the Deferred's errback: the reactor is busy running it)."""

    seq: int
    failure: Failure


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class ClusterJob:
    """Submit changed and ended flows each tick; apply the answers when they come."""

    def __init__(self, reactor: Any, table: FlowTable,
                 on_finished: Callable[[dict, list[bytes], str, dict[int, str]], None], *,
                 ports: bool = True,
                 seed: int = 0, on_done: Callable[[], None] | None = None) -> None:
        self.reactor = reactor
        self.table = table
        self.on_finished = on_finished
        self.on_done = on_done  # called on the reactor thread after each job
        #: Called on the reactor thread with (flow ids, cluster ids, labels) of the live
        #: flows a job put in another cluster (--keep-packets records them).
        self.on_assigned: Callable[[np.ndarray, np.ndarray, dict[int, str]], None] | None = None
        #: Called with (flow ids, cluster ids) of flows a job placed that ended while it
        #: ran (the cluster rates count their last packets there).
        self.on_lost: Callable[[np.ndarray, np.ndarray], None] | None = None
        self.ports = ports
        self.seed = seed
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="netmon-cluster")
        self._clusterer = None  # created and used on the pool's thread only
        self._ended: list[Chunk] = []  # ended flows waiting for the next job
        self._inflight: list[Chunk] = []  # ended flows in the job now running
        self.running = False
        self.warm = False
        self.labels: dict[int, str] = {}  # every remembered cluster's, for flows
        self.shown: frozenset[int] = frozenset()  # the clusters the cluster table lists
        self.recent: frozenset[int] = frozenset()
        self.threshold = 3.0
        self.jobs = 0
        self.last_seconds = 0.0
        self.max_seconds = 0.0
        self.error = ""  # why clustering stopped, for the screen and the end of the run
        self.bug = ""  # set when it stopped on a programming error (not a user's doing)
        self._started = False
        self._finishing = False  # finish() drives the last jobs itself
        self._done = threading.Event()  # set by the worker when a job's result is ready
        self._result: ClusterResult | _JobFailed | None = None
        self._submitted = 0  # jobs submitted; results are applied once, in order
        self._applied = 0

    def start(self) -> None:
        self._pool.start()
        self._started = True

    def add_ended(self, chunks: list[Chunk]) -> None:
        """Ended flows to cluster in the next job (or to pass on as they are, after a
        failure)."""
        if self.error:
            for cols, keys, reason in chunks:
                self.on_finished(cols, keys, reason, self.labels)
        else:
            self._ended.extend(chunks)

    def submit(self, final: bool = False) -> bool:
        """Hand the flows changed or ended since the last submission to the worker
        (False when a job is still running: they wait for the next tick). ``final``:
        the last job of a run, which ends the warm-up with whatever was seen."""
        if self.running or not self._started or self.error:
            return False
        t = self.table
        slots = np.flatnonzero(t.dirty & t.live)
        t.dirty[:] = False
        # Bound one job's rows (memory and time): ended flows beyond the budget wait
        # for the next job; the warm-up hold bound applies to what waits.
        room = max(JOB_ROWS - len(slots), 0)
        ended = []
        while self._ended and (room >= len(self._ended[0][1]) or not ended):
            chunk = self._ended.pop(0)
            ended.append(chunk)
            room -= len(chunk[1])
        self._bound_held()
        self._inflight = ended
        parts = [t.columns(slots)] + [cols for cols, _, _ in ended]
        cols = _concat(parts)
        self.running = True
        self._done.clear()
        self._submitted += 1
        d = threads.deferToThreadPool(self.reactor, self._pool, self._work, slots, ended, cols,
                                      self._submitted, final)
        d.addCallbacks(self._apply, self._failed, errbackArgs=(self._submitted,))
        d.addErrback(self._crashed)  # applying the answer raised: as loud as the job
        return True

    def wait_current(self, timeout: float = 10.0) -> bool:
        """On the reactor thread: wait for the job in flight and apply it now (True when
        no job is left running)."""
        if not self.running:
            return True
        if not self._done.wait(timeout) or (result := self._result) is None:
            return False
        if isinstance(result, _JobFailed):
            self._failed(result.failure, result.seq)
        else:
            self._apply(result)
        return not self.running

    def finish(self, timeout: float = 10.0) -> None:
        """At shutdown, on the reactor thread: let the job in flight end, cluster what is
        still waiting in one last job, apply both, stop the worker. Waits on the worker
        itself (the reactor is busy here, so Deferred callbacks would not run)."""
        if not self._started:
            return
        self._finishing = True
        for _ in range(2 + HOLD_MAX // JOB_ROWS):  # enough jobs for the whole backlog
            if not self.wait_current(timeout):
                break
            if not self.warm:  # a short run: cluster every flow in one last go
                self.table.dirty[self.table.live] = True
            if not (self._ended or self.table.dirty.any()) or not self.submit(final=True):
                break
        self.wait_current(timeout)
        self._started = False
        self._pool.stop()
        if self._ended:  # clustering failed or timed out: still hand them on
            ended, self._ended = self._ended, []
            for cols, keys, reason in ended:
                self.on_finished(cols, keys, reason, self.labels)

    def _bound_held(self) -> None:
        held = sum(len(keys) for _, keys, _ in self._ended)
        while held > HOLD_MAX and self._ended:
            cols, keys, reason = self._ended.pop(0)
            held -= len(keys)
            self.on_finished(cols, keys, reason, self.labels)

    # ------------------------------------------------------------ worker thread
    def _work(self, slots: np.ndarray, ended: list[Chunk], cols: dict[str, np.ndarray],
              seq: int, final: bool) -> ClusterResult:
        self._result = None
        try:
            t0 = time.perf_counter()
            if self._clusterer is None:
                from netmon.cluster.online import OnlineClusterer

                self._clusterer = OnlineClusterer(ports=self.ports, seed=self.seed)
            c = self._clusterer
            a = c.update(cols, final=final)
            shown = frozenset(c.cluster_ids())
            recent = frozenset(i for i in shown if c.is_recent(i))
            self._result = ClusterResult(slots, cols["flow_id"][:len(slots)], ended,
                                         a.cluster_id, a.outlier, c.all_labels(), shown,
                                         recent,
                                         c.tuning.outlier_threshold,
                                         time.perf_counter() - t0, seq, c.warm)
            return self._result
        except Exception:
            self._result = _JobFailed(seq, Failure())
            raise
        finally:
            self._done.set()

    # ------------------------------------------------------------ reactor thread
    def _apply(self, r: ClusterResult) -> None:
        if r.seq <= self._applied:  # wait_current() applied it already
            return
        self._applied = r.seq
        self._inflight = []
        self.running = False
        t = self.table
        n = len(r.slots)
        # Flows may have ended (and slots been reused) while the job ran.
        ok = t.live[r.slots] & (t.flow_id[r.slots] == r.flow_ids)
        if self.on_lost is not None and not ok.all():
            self.on_lost(r.flow_ids[~ok], r.cluster_id[:n][~ok])
        if self.on_assigned is not None:
            moved = ok & (t.cluster[r.slots] != r.cluster_id[:n])
            if moved.any():
                self.on_assigned(r.flow_ids[moved], r.cluster_id[:n][moved], r.labels)
        t.cluster[r.slots[ok]] = r.cluster_id[:n][ok]
        t.outlier[r.slots[ok]] = r.outlier[:n][ok]
        self.labels = r.labels
        self.shown = r.shown
        self.recent = r.recent
        self.threshold = r.threshold
        self.jobs += 1
        self.last_seconds = r.seconds
        self.max_seconds = max(self.max_seconds, r.seconds)
        if not r.warm:
            # Warming up: hold ended flows back to be clustered once the model exists
            # (bounded: beyond HOLD_MAX rows the oldest go out unclustered).
            self._ended[:0] = r.ended
            self._bound_held()
        elif not self.warm:
            self.warm = True
            t.dirty[t.live] = True  # flows seen during the warm-up get their clusters
        at = n
        for cols, keys, reason in (r.ended if r.warm else []):
            k = len(keys)
            cols = dict(cols, cluster=r.cluster_id[at:at + k], outlier=r.outlier[at:at + k])
            at += k
            self.on_finished(cols, keys, reason, r.labels)
        if self.on_done is not None and not self._finishing:
            self.on_done()

    def _failed(self, failure: Failure, seq: int) -> None:
        # A failed job must not stop ingest or lose flows: keep counting, write the
        # ended flows unclustered, and say so.
        if seq <= self._applied:  # wait_current() handled it already
            return
        self._applied = seq
        self.running = False
        if failure.check(MemoryError):
            self.error = "clustering stopped: out of memory (a lower --max-flows helps)"
            log.warning("%s", self.error)
        else:
            self._record_bug(failure)
        ended, self._ended = self._inflight + self._ended, []
        self._inflight = []
        for cols, keys, reason in ended:
            self.on_finished(cols, keys, reason, self.labels)
        if self.on_done is not None and not self._finishing:
            self.on_done()

    def _crashed(self, failure: Failure) -> None:
        self.running = False
        self._record_bug(failure)

    def _record_bug(self, failure: Failure) -> None:
        self.bug = f"clustering failed: {failure.type.__name__}: {failure.getErrorMessage()}"
        self.error = f"{self.bug} (a bug in netmon; counting goes on)"
        log.error("clustering failed: %s", failure.getTraceback())
