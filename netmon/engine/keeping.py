"""--keep-packets on the engine's side: the on-disk ring, whether a replay waits for its
writer, and what the ring has to say.

Reactor thread, like the engine that owns it; only :meth:`DiskKeeping._drained_soon`
runs on the ring's writer thread, and it only schedules work on the reactor. Why a
replay waits: a recording can be read again at any pace, so losing packets on disk
would be a choice, not a necessity; live capture never waits (the ring drops and
counts instead), since pausing a capture loses packets on the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from netmon.core.settings import Settings
from netmon.ingest.batch import PacketBatch
from netmon.ingest.diskring import DiskRing
from netmon.sources.base import Source

#: Recordings that can wait (Source.pause): with --keep-packets they wait for the disk
#: writer rather than lose packets on disk.
REPLAY_KINDS = ("file", "stdin")


class DiskKeeping:
    """The engine's --keep-packets: ``ring`` (the DiskRing) plus the pause policy.

    ``can_resume`` tells whether nothing else holds the sources (the clusterer in
    capture-tick mode, or the end of the run); ``warnings`` is the run's list.
    """

    def __init__(self, settings: Settings, sources: Sequence[Source], reactor: Any,
                 warnings: list[str], can_resume: Callable[[], bool]) -> None:
        #: A bad directory raises SourceError here, before capture starts.
        self.ring = DiskRing(settings.keep_packets, settings.keep_size)
        self._sources = sources
        self._reactor = reactor
        self._warnings = warnings
        self._can_resume = can_resume
        self._reported = False
        #: True while a replay's sources wait for the writer's queue to drain.
        self.waiting = False
        if all(s.kind in REPLAY_KINDS for s in sources):
            self.ring.lossless(self._drained_soon)

    def start(self) -> None:
        """Start the writer thread (it runs until :meth:`close`)."""
        self.ring.start()

    def append(self, batch: PacketBatch, flow_id: np.ndarray, a2b: np.ndarray,
               seq: np.ndarray) -> None:
        """Queue the batch's frames; a full queue pauses a replay's sources."""
        if self.ring.append(batch, flow_id, a2b, seq) and not self.waiting:
            self.waiting = True
            for src in self._sources:
                src.pause()

    def _drained_soon(self) -> None:
        """The writer has room again (called on the writer thread)."""
        try:
            self._reactor.callFromThread(self._drained)
        except RuntimeError:  # reactor already gone
            pass

    def _drained(self) -> None:
        if not self.waiting:
            return
        self.waiting = False
        if self._can_resume():  # else whoever holds them resumes them
            for src in self._sources:
                src.resume()

    def news(self) -> None:
        """The ring's one error message, once, as a warning (snapshots show it)."""
        if self.ring.error and not self._reported:
            self._reported = True
            self._warnings.append(self.ring.error)

    def close(self) -> None:
        """Everything counted is queued: write it, end the thread, say what was lost."""
        ring = self.ring
        ring.close()
        self.news()
        if ring.dropped:
            self._warnings.append(f"--keep-packets: {ring.dropped} packets were not "
                                  "written (the disk writer fell behind)")
        if ring.skipped:
            self._warnings.append(f"--keep-packets: {ring.skipped} frames were not written "
                                  "(bigger than --keep-size leaves room for)")
