"""Resident memory of a process, as the benchmarks measure it (Linux ``/proc``).

Not a benchmark itself: ``ingest``, ``listener`` and ``soak`` share it. Runs on the
main thread of the benchmark's own process (any thread may call it: no state).
"""

from __future__ import annotations

import os


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size in bytes of process ``pid`` (this process when ``None``),
    read from ``/proc/PID/statm``: cheap enough to sample every tick."""
    with open(f"/proc/{'self' if pid is None else pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
