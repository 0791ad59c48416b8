"""``--flows-out``: every flow seen, as JSON Lines, written atomically.

Used on the reactor thread only (the engine owns it). Finished flows are appended
to a temporary file beside the target as they expire, so memory stays bounded on
long runs; :meth:`FlowsOutWriter.commit` adds the live flows at exit, syncs and
renames the file into place, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable

from netmon.core.values import FlowView


class FlowsOutWriter:
    """Append flows to a temporary file; rename it to ``path`` on commit."""

    def __init__(self, path: str) -> None:
        self.path = path
        directory = os.path.dirname(os.path.abspath(path)) or "."
        # Created up front so a bad path fails before capture starts, not at exit.
        fd, self._tmp = tempfile.mkstemp(prefix=".netmon-flows-", suffix=".tmp", dir=directory)
        self._fh = os.fdopen(fd, "w", encoding="utf-8", buffering=1 << 20)
        self.count = 0

    def write(self, flows: Iterable[FlowView]) -> None:
        dumps = json.dumps
        fh = self._fh
        for flow in flows:
            fh.write(dumps(flow.to_json(), separators=(",", ":")))
            fh.write("\n")
            self.count += 1

    def commit(self) -> int:
        """Make the file appear at ``path``; return the number of flows written."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)
        return self.count

    def abort(self) -> None:
        """Drop the temporary file (a failed write must not leave half a file)."""
        try:
            self._fh.close()
        except OSError:
            pass
        try:
            os.unlink(self._tmp)
        except OSError:
            pass
