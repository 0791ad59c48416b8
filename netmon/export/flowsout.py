"""``--flows-out``: every flow seen, as JSON Lines, written atomically.

Used on the reactor thread only (the engine owns it). Finished flows are appended
as they expire, rendered in bulk from the table's columns
(:mod:`netmon.export.flowlines`), so memory stays bounded on long runs and 4 M flows
take seconds; :meth:`FlowsOutWriter.commit` adds the live flows at exit, syncs and
puts the file in place, so a reader never sees half a file. Until then the file is a
0600 file with no name (:mod:`netmon.export.atomic`): a killed netmon leaves nothing.

The lines go to the file on a writer thread of the writer's own ("netmon-flows-out"):
``os.write`` of 2.3 GB costs seconds and releases the GIL, so the caller renders the
next batch meanwhile (with the leaner rendering, 4 M flows took ~10 s, not 16.6 s).
Order is kept (one queue, one writer); a write error is raised by the next call.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Sequence

import numpy as np

from netmon.export.atomic import AtomicFile
from netmon.export.flowlines import PendingFlows

#: Flows gathered before a bulk render (bounded memory; see PendingFlows for why).
BATCH = 8192
#: Rendered chunks (~20 MB each) waiting for the writer thread: bounds the memory
#: when rendering outruns the disk.
QUEUED = 4


class _Spooler:
    """Writes buffers to an :class:`AtomicFile` on a thread, in the order given."""

    def __init__(self, file: AtomicFile) -> None:
        self._file = file
        self._queue: queue.Queue[memoryview | None] = queue.Queue(QUEUED)
        self.error: OSError | None = None
        # A daemon: a netmon dying without commit or abort must not wait for it.
        self._thread = threading.Thread(target=self._run, name="netmon-flows-out",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self.error is None:  # after an error, drain without writing
                try:
                    self._file.write(data)
                except OSError as exc:
                    self.error = exc

    def put(self, data: memoryview) -> None:
        self._raise()
        self._queue.put(data)

    def close(self) -> None:
        """Wait until everything queued is written; raise its error, if any."""
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


class FlowsOutWriter:
    """Append flows to a temporary file; publish it at ``path`` on commit."""

    def __init__(self, path: str) -> None:
        self.path = path
        # Created up front so a bad path fails before capture starts, not at exit.
        self._file = AtomicFile(path, "flows")
        self._spooler: _Spooler | None = None  # started with the first lines
        self._pending = PendingFlows()
        self._observers: Sequence[str] = ()
        self.count = 0

    def write(self, cols: dict[str, np.ndarray], keys: Sequence[bytes], reason: str,
              labels: dict[int, str] | None = None, observers: Sequence[str] = ()) -> None:
        """Append flows given as :meth:`FlowTable.columns` and their keys (``observers``:
        the table's observation point names, a list that only grows)."""
        self._pending.add(cols, keys, reason, labels)
        self._observers = observers
        self.count += len(keys)
        if self._pending.rows >= BATCH:
            self._flush()

    def _flush(self) -> None:
        for lines in self._pending.render(self._observers):
            if self._spooler is None:
                self._spooler = _Spooler(self._file)
            self._spooler.put(lines)

    def _stop(self) -> None:
        spooler, self._spooler = self._spooler, None
        if spooler is not None:
            spooler.close()

    def commit(self) -> int:
        """Make the file appear at ``path``; return the number of flows written."""
        self._flush()
        self._stop()
        self._file.publish()
        return self.count

    def abort(self) -> None:
        """Drop the temporary file (a failed write must not leave half a file)."""
        with contextlib.suppress(OSError):  # the error being handled: the file goes anyway
            self._stop()
        self._file.discard()
