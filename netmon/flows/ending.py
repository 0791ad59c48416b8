"""How flows end: expiry, eviction, the ended flows handed on and their rows kept.

Pure module (numpy only), mixed into :class:`netmon.flows.table.FlowTable`; one
owner, the reactor thread, like the table. A flow ends by idle or active timeout
(:meth:`EndingMixin.expire`), by eviction above ``max_flows``, or at exit
(:meth:`EndingMixin.end_live`). Its counters are copied out as columns for whoever
takes them (clustering, --flows-out), its key leaves the index at once (a later
packet starts a new flow), and its row stays queryable until newer ended flows push
it out (:class:`netmon.flows.retained.EndedRows`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from netmon.core.values import FlowView
from netmon.flows.retained import EndedRows
from netmon.flows.views import views_from_columns


class EndingMixin:
    """The ending half of FlowTable; uses its columns, ``index``, ``keys``,
    ``_free``, ``_finished`` and ``ended``."""

    live: np.ndarray
    last: np.ndarray
    first: np.ndarray
    touch: np.ndarray
    exported: np.ndarray
    exported_live: bool
    dirty: np.ndarray
    cluster: np.ndarray
    flow_id: np.ndarray
    idle_timeout: float
    active_timeout: float
    max_flows: int
    expired: int
    evicted: int
    index: dict[bytes, int]
    keys: list[bytes | None]
    observers: list[str]
    ended: EndedRows
    on_finish: Callable[[np.ndarray], None] | None
    _free: list[int]
    _finished: list[tuple[dict, list[bytes], str]]
    _finished_n: int
    columns: Callable[..., dict[str, Any]]
    live_slots: Callable[[], np.ndarray]

    def expire(self, now: float) -> int:
        """End flows idle since ``now - idle_timeout`` or older than the active timeout."""
        live = self.live
        seen = self.last
        old_ok = live
        if self.exported_live:
            # Exported flows carry the exporter's times, which may be long past (an
            # export delay, a replayed file): they age by when their records arrived,
            # and the exporter's own active timeout already cut long flows.
            ex = self.exported & live
            seen = np.where(ex, self.touch, seen)
            old_ok = live & ~ex
            self.exported_live = bool(ex.any())
        idle = live & (seen < now - self.idle_timeout)
        old = old_ok & ~idle & (self.first <= now - self.active_timeout)
        n = 0
        for mask, reason in ((idle, "idle-timeout"), (old, "active-timeout")):
            slots = np.flatnonzero(mask)
            if len(slots):
                self._finish(slots, reason)
                n += len(slots)
        self.expired += n
        return n

    def _enforce_cap(self) -> None:
        """Above ``max_flows``, evict the least recently seen (1% more, so eviction
        runs now and then rather than on every batch)."""
        if len(self.index) > self.max_flows:
            self._evict(len(self.index) - self.max_flows + self.max_flows // 100)

    def _evict(self, count: int) -> None:
        live = self.live_slots()
        count = min(count, len(live))
        if count <= 0:
            return
        victims = live[np.argpartition(self.last[live], count - 1)[:count]]
        self._finish(victims, "evicted")
        self.evicted += count

    def _finish(self, slots: np.ndarray, reason: str) -> None:
        if self.on_finish is not None:
            self.on_finish(slots)
        # Keep the ended flows as columns: FlowView objects cost ~5 us each and are
        # only built when someone drains them (flows-out, clustering).
        keys = self.keys
        cols = self.columns(slots)
        cols["slot"] = slots.copy()  # where a kept row is, for its final cluster
        self._finished.append((cols, [keys[s] for s in slots.tolist()], reason))
        self._finished_n += len(slots)
        index = self.index
        for slot in slots.tolist():
            del index[keys[slot]]
        self.live[slots] = False
        self.dirty[slots] = False
        # Kept rows keep their key (views read addresses from it) until pushed out.
        self._release(self.ended.keep(slots, reason))

    def _release(self, slots: np.ndarray) -> None:
        """Rows of ended flows no longer kept become free."""
        freed = slots.tolist()
        keys = self.keys
        for slot in freed:
            keys[slot] = None
        self._free.extend(freed)

    def final_clusters(self, slots: np.ndarray, flow_ids: np.ndarray,
                       clusters: np.ndarray) -> None:
        """Ended flows' last clusters (the clusterer's word on them): written to their
        rows where those are still kept and still theirs."""
        sl = np.asarray(slots, dtype=np.int64)
        ok = self.ended.kept[sl] & (self.flow_id[sl] == flow_ids)
        self.cluster[sl[ok]] = clusters[ok]

    @property
    def finished_count(self) -> int:
        """Flows ended and not yet drained."""
        return self._finished_n

    def finished_ids(self) -> np.ndarray:
        """Flow ids of the flows ended and not yet drained (the packet store lets their
        packets go first)."""
        if not self._finished:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([cols["flow_id"] for cols, _, _ in self._finished])

    def finished_columns(self) -> list[dict[str, np.ndarray]]:
        """The columns of the flows ended and not yet drained (per-process totals
        count them before they are handed on)."""
        return [cols for cols, _, _ in self._finished]

    def drain_finished(self, labels: dict[int, str] | None = None) -> list[FlowView]:
        """Take the flows that ended since the last call (``labels``: cluster names)."""
        chunks, self._finished, self._finished_n = self._finished, [], 0
        out: list[FlowView] = []
        for cols, keys, reason in chunks:
            out.extend(views_from_columns(cols, keys, reason, labels, self.observers))
        return out

    def take_finished(self) -> list[tuple[dict[str, np.ndarray], list[bytes], str]]:
        """Take the ended flows as (columns, keys, reason) chunks, without views."""
        chunks, self._finished, self._finished_n = self._finished, [], 0
        return chunks

    def discard_finished(self) -> int:
        """Forget ended flows nobody wants as views; return how many."""
        n, self._finished, self._finished_n = self._finished_n, [], 0
        return n

    def end_live(self, reason: str = "end-of-capture") -> None:
        """End every live flow (at exit); they join the finished flows."""
        slots = self.live_slots()
        if len(slots):
            self._finish(slots, reason)

    def end_all(self, reason: str = "end-of-capture",
                labels: dict[int, str] | None = None) -> list[FlowView]:
        """End every live flow (at exit); return all finished flows not yet drained."""
        self.end_live(reason)
        return self.drain_finished(labels)

