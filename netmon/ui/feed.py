"""Where the UI's snapshots come from: the :class:`SnapshotFeed` protocol and a fixed
feed for tests, snapshot tests and benchmarks.

A feed calls ``publish`` with each new :class:`~netmon.core.values.Snapshot`, from any
thread (the engine calls it on its reactor thread); ``publish`` never blocks: the app
turns it into a :class:`~netmon.ui.messages.SnapshotPublished` message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from netmon.core.values import Snapshot

Publish = Callable[[Snapshot], None]


class SnapshotFeed(Protocol):
    """Something that delivers snapshots once started (the engine, or a fake)."""

    def start(self, publish: Publish) -> None:
        """Begin calling ``publish(snapshot)``; returns at once."""
        ...

    def stop(self) -> None:
        """Stop delivering (idempotent); called when the app exits."""
        ...


class FixedFeed:
    """Replays a fixed list of snapshots.

    ``interval`` > 0 publishes one snapshot per interval from a timer thread, as the
    engine would (set ``loop`` to start again from the first when the list runs out);
    ``interval`` == 0 publishes them all at once inside :meth:`start`, which makes
    screens deterministic for snapshot tests.
    """

    def __init__(self, snapshots: Sequence[Snapshot], interval: float = 0.0,
                 loop: bool = False) -> None:
        self.snapshots = tuple(snapshots)
        self.interval = interval
        self.loop = loop
        self.published = 0
        """How many snapshots this feed has handed out so far."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, publish: Publish) -> None:
        if self.interval <= 0:
            for snap in self.snapshots:
                self.published += 1
                publish(snap)
            return
        self._thread = threading.Thread(target=self._run, args=(publish,),
                                        name="netmon-fixed-feed", daemon=True)
        self._thread.start()

    def _run(self, publish: Publish) -> None:
        i = 0
        while self.snapshots and not self._stop.wait(self.interval):
            if i >= len(self.snapshots):
                if not self.loop:
                    return
                i = 0
            self.published += 1
            publish(self.snapshots[i])
            i += 1

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)
