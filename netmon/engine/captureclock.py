"""The replay's clock: seconds of capture time played so far, robust to stray stamps.

Reactor thread (the engine advances it with every batch it counts). Rates, the
history chart and "up" of a replay follow this clock instead of the wall clock, so a
23 s capture replayed in 0.8 s reads its real 87 pkt/s and shows 23 s of history, as
Wireshark's I/O graph does.

Why not simply ``latest - first``: merged traces jump years between their parts
(three of the shared captures do), a stray packet can be stamped in the far future,
and time may go backwards. The clock therefore adds up the gaps between successive
packets in file order, counting a backward step as 0 and a forward jump longer than
:data:`MAX_GAP` as a cut (0 too): each part of a merged file plays for as long as it
lasted, and no odd stamp can stretch the axis or shrink a rate to nothing.
"""

from __future__ import annotations

import numpy as np

#: A silence longer than this between two packets is a cut between merged traces (or
#: a wrong stamp), not time the capture lasted.
MAX_GAP = 3600.0


class CaptureClock:
    """Capture seconds played: :meth:`advance` with each batch's timestamps."""

    def __init__(self, max_gap: float = MAX_GAP) -> None:
        self.max_gap = max_gap
        self.elapsed = 0.0
        """Seconds of capture time since the first packet, cuts left out."""
        self.cuts = 0
        """Jumps left out (forward over ``max_gap``) so far."""
        self._last: float | None = None

    def advance(self, ts: np.ndarray) -> None:
        """Packets with these timestamps (file order) were played."""
        if not len(ts):
            return
        first = float(ts[0])
        prev = first if self._last is None else self._last
        gaps = np.diff(ts, prepend=prev)
        cut = gaps > self.max_gap
        self.cuts += int(np.count_nonzero(cut))
        self.elapsed += float(gaps[(gaps > 0) & ~cut].sum())
        self._last = float(ts[-1])
