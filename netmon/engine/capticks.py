"""--reproducible replays: ticks by capture time, each waiting for its clustering job
(mixed into :class:`netmon.engine.engine.Engine`).

Reactor thread, like the engine. In this mode the engine queues decoded batches
instead of counting them at once; :meth:`CaptureTicks._drain` counts them up to each
``tick`` of capture time, where expiry runs and a clustering job is cut, and pauses
the sources until the job is applied (the job's ``on_done`` is
:meth:`CaptureTicks._resume_sources`), so a file gives the same clusters on any
machine, at the pace of the clusterer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from netmon.ingest.batch import PacketBatch


class CaptureTicks:
    """The capture-tick half of the engine; uses its ``settings``, ``table``,
    ``clustering``, ``sources``, ``keeping``, ``_count`` and ``_pass_ended``."""

    settings: Any
    table: Any
    clustering: Any
    sources: Any
    keeping: Any
    _queue: deque[PacketBatch]
    _paused: bool
    _next_ctick: float
    _count: Callable[[PacketBatch], None]
    _pass_ended: Callable[[], None]

    def _drain(self) -> None:
        """Feed queued packets to the table, ticking at each `tick` of capture time; a
        tick that starts a clustering job pauses everything until the job is done."""
        queue = self._queue
        while queue and not self._paused:
            batch = queue[0]
            over = np.flatnonzero(batch.ts >= self._next_ctick)
            if not len(over):
                self._count(batch)
                queue.popleft()
                continue
            cut = int(over[0])
            if cut:
                self._count(batch.head(cut))
                queue[0] = batch = batch.tail(cut)
            # The tick happens at the first packet past the boundary, before it counts:
            # flows idle for the timeout by then end first.
            self._capture_tick(float(batch.ts[0]))

    def _capture_tick(self, now: float) -> None:
        self._next_ctick = now + self.settings.tick
        self.table.expire(now)
        self._pass_ended()
        if self.clustering is not None and self.clustering.submit():
            self._paused = True
            for src in self.sources:
                src.pause()

    def _resume_sources(self) -> None:
        if self._paused:
            self._paused = False
            self._drain()
            waiting = self.keeping is not None and self.keeping.waiting
            if not self._paused and not waiting:  # else the disk writer resumes
                for src in self.sources:
                    src.resume()
