"""Ended flows kept queryable: their rows stay in the FlowTable after they end.

Pure module (numpy only); owned by its FlowTable, so by the reactor thread. A flow
that ends leaves the table's key index at once (a later packet of the same 5-tuple
starts a new flow, as before), but its row is kept, marked here, until ``limit`` newer
ended flows push it out, oldest first. Filters, sorts, pages, host lists and flow
screens read kept rows exactly as they read live ones, so a finished replay answers
``/proto udp`` with every UDP flow of the file, not only those still live at its end.

Why rows in the table and not a second store: every question the UI asks is already
answered vectorised over the table's columns by slot; a second store would need a
second copy of each answer (and a merge of sorted pages across the two).
"""

from __future__ import annotations

from collections import deque

import numpy as np


class EndedRows:
    """Which of a table's rows are ended flows kept, and why each ended."""

    def __init__(self, limit: int) -> None:
        self.limit = max(int(limit), 0)
        self.kept = np.zeros(0, dtype=np.bool_)
        """Per slot: the row is an ended flow, kept."""
        self._reason = np.zeros(0, dtype=np.uint8)
        self._reasons: list[str] = []
        self._fifo: deque[np.ndarray] = deque()  # kept slots, oldest ended first
        self.count = 0

    def grow(self, cap: int) -> None:
        """The table grew to ``cap`` rows."""
        if cap > len(self.kept):
            extra = cap - len(self.kept)
            self.kept = np.concatenate([self.kept, np.zeros(extra, dtype=np.bool_)])
            self._reason = np.concatenate([self._reason, np.zeros(extra, dtype=np.uint8)])

    def keep(self, slots: np.ndarray, reason: str) -> np.ndarray:
        """These flows ended for ``reason``: keep their rows; returns the rows to free
        now (the oldest kept ones past the limit, or ``slots`` when keeping none)."""
        if not self.limit or not len(slots):
            return slots
        if reason not in self._reasons:
            if len(self._reasons) >= 255:  # reasons are a handful of words; never more
                reason = self._reasons[-1]
            else:
                self._reasons.append(reason)
        code = self._reasons.index(reason)
        slots = np.asarray(slots, dtype=np.int64).copy()
        self.kept[slots] = True
        self._reason[slots] = code
        self._fifo.append(slots)
        self.count += len(slots)
        return self.release(self.count - self.limit)

    def release(self, n: int) -> np.ndarray:
        """Stop keeping the ``n`` oldest kept rows; returns them (to be freed)."""
        out: list[np.ndarray] = []
        while n > 0 and self._fifo:
            oldest = self._fifo[0]
            if len(oldest) <= n:
                out.append(self._fifo.popleft())
            else:
                out.append(oldest[:n])
                self._fifo[0] = oldest[n:]
            n -= len(out[-1])
        if not out:
            return np.zeros(0, dtype=np.int64)
        freed = np.concatenate(out)
        self.kept[freed] = False
        self.count -= len(freed)
        return freed

    def reasons(self, slots: np.ndarray) -> list[str]:
        """Why each of these kept rows' flows ended ("" for a row not kept)."""
        codes = self._reason[slots].tolist()
        kept = self.kept[slots].tolist()
        return [self._reasons[c] if k else "" for c, k in zip(codes, kept, strict=True)]
