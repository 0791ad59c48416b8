"""The C allocator's settings for a process that holds decoder buffers for a while.

Pure module (stdlib ``ctypes`` only), called once per engine on the thread that builds
it, before the reactor thread starts (``mallopt`` is process-wide and thread-safe).

Why: the packet store holds the decoder's 1 MB buffers until its next compaction and
then lets go of ~100 MB at once. glibc returns a freed heap top of more than twice its
mmap threshold to the OS, so every compaction gave the memory back and the next
buffers faulted it in again, page by page (measured on the ingest benchmark's file:
~40 k extra minor faults, +0.1 s of decoding, 5% of the run). Keeping freed heap up
to the store's budget (plus a margin) in the process removes that, at no cost in
memory the store is not already allowed to use. The mmap threshold is fixed at 32 MB,
the ceiling glibc's own dynamic threshold reaches (setting either value turns the
dynamic adjustment off). Other C libraries: nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Freed heap kept beyond the packet budget before it goes back to the OS.
MARGIN = 64 << 20
MMAP_THRESHOLD = 32 << 20

_kept = 0  # the largest trim threshold set so far


def keep_freed_heap(budget: int) -> bool:
    """Let the process keep up to ``budget`` + :data:`MARGIN` bytes of freed heap (never
    lowering what an earlier engine set). True when glibc took the settings."""
    global _kept
    want = max(int(budget), 0) + MARGIN
    if want <= _kept or platform.libc_ver()[0] != "glibc":
        return bool(_kept)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
              and libc.mallopt(_M_TRIM_THRESHOLD, want) == 1)
    except (OSError, AttributeError):
        return False
    if ok:
        _kept = want
    return ok
