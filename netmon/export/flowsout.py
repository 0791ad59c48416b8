"""``--flows-out``: every flow seen, as JSON Lines, written atomically.

Used on the reactor thread only (the engine owns it). Finished flows are appended
as they expire, rendered in bulk from the table's columns
(:mod:`netmon.export.flowlines`), so memory stays bounded on long runs and 4 M flows
take seconds; :meth:`FlowsOutWriter.commit` adds the live flows at exit, syncs and
puts the file in place, so a reader never sees half a file. Until then the file is a
0600 file with no name (:mod:`netmon.export.atomic`): a killed netmon leaves nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from netmon.export.atomic import AtomicFile
from netmon.export.flowlines import PendingFlows

#: Flows gathered before a bulk render (bounded memory; see PendingFlows for why).
BATCH = 8192


class FlowsOutWriter:
    """Append flows to a temporary file; publish it at ``path`` on commit."""

    def __init__(self, path: str) -> None:
        self.path = path
        # Created up front so a bad path fails before capture starts, not at exit.
        self._file = AtomicFile(path, "flows")
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
            self._file.write(lines)

    def commit(self) -> int:
        """Make the file appear at ``path``; return the number of flows written."""
        self._flush()
        self._file.publish()
        return self.count

    def abort(self) -> None:
        """Drop the temporary file (a failed write must not leave half a file)."""
        self._file.discard()
