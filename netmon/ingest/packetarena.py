"""The packet store's byte moves: frames copied into the arena, kept blocks packed.

Pure module (numpy only), called by :class:`netmon.ingest.packetstore.PacketStore` on
its owner thread (the reactor). The arena is a 2-D uint8 array of :data:`BLOCK`-byte
rows; a kept frame takes ``width / BLOCK`` consecutive blocks of its width class.
Both functions are vectorised: one fancy-indexing copy per (buffer, width class) when
copying in, one per 4 MB when packing, one per source buffer when gathering.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

#: Bytes per arena block: the smallest width class (a 66-byte ACK takes one).
BLOCK = 128


def copy_frames(arena: np.ndarray, bt: int, bufs: Sequence[bytes], rows: np.ndarray,
                chunk: np.ndarray, off: np.ndarray, cls: np.ndarray, widths: np.ndarray,
                block: np.ndarray) -> int:
    """Copy the frames at ``rows`` (their buffer ``chunk``, offset ``off`` and width
    class ``cls``) to the arena from block ``bt`` on; set ``block`` (each row's first
    block) and return the new tail. Copies are grouped by (buffer, class), so each group
    lands in one contiguous run: ``arena[t:t+m*b].reshape(m, w)[:] = window[offs]``,
    ``window`` being a zero-copy strided view of the buffer (row i = bytes i..i+w)."""
    ncls = len(widths)
    # A small-integer key: numpy's stable sort is then a radix sort.
    key = (chunk[rows] * ncls + cls[rows]).astype(
        np.uint16 if len(bufs) * ncls < 1 << 16 else np.int64)
    order = rows[np.argsort(key, kind="stable")]
    groups = np.bincount(key, minlength=len(bufs) * ncls)
    bounds = np.r_[0, np.cumsum(groups)]
    views: dict[int, np.ndarray] = {}
    for g in np.flatnonzero(groups).tolist():
        ci, k = divmod(g, ncls)
        at = order[bounds[g]:bounds[g + 1]]
        w = int(widths[k])
        b = w // BLOCK
        m = len(at)
        A = views.get(ci)
        if A is None:
            A = views[ci] = np.frombuffer(bufs[ci], dtype=np.uint8)
        dest = arena[bt:bt + m * b].reshape(m, w)
        offs = off[at]
        # A window of w bytes from each frame's start (the bytes after a short frame
        # are never read back); frames closer than w to the buffer's end are read
        # bytewise (clipped), a few per buffer.
        inside = offs <= len(A) - w
        if inside.all():
            dest[:] = as_strided(A, shape=(len(A) - w + 1, w), strides=(1, 1),
                                 writeable=False)[offs]
        else:
            if inside.any():
                dest[inside] = as_strided(A, shape=(len(A) - w + 1, w), strides=(1, 1),
                                          writeable=False)[offs[inside]]
            tail = offs[~inside]
            dest[~inside] = A[np.minimum(tail[:, None] + np.arange(w), len(A) - 1)]
        block[at] = bt + b * np.arange(m)
        bt += m * b
    return bt


def gather_frames(bufs: Sequence[bytes], chunk: np.ndarray, off: np.ndarray,
                  slen: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The first ``slen`` bytes of each frame (in buffer ``chunk`` at ``off``; rows with
    ``slen`` 0 have none) back to back in one new buffer, and each row's offset in it
    (-1: none). Vectorised: one gather per source buffer."""
    lens = slen.astype(np.int64)
    at = np.cumsum(lens) - lens
    out = np.empty(int(lens.sum()), dtype=np.uint8)
    for ci in np.unique(chunk[lens > 0]).tolist():
        rows = np.flatnonzero((chunk == ci) & (lens > 0))
        ln = lens[rows]
        total = int(ln.sum())
        # Every byte of these frames: its source position and where it goes.
        step = np.repeat(off[rows] - at[rows], ln)
        dest = np.repeat(at[rows], ln) + np.arange(total) - np.repeat(np.cumsum(ln) - ln, ln)
        out[dest] = np.frombuffer(bufs[ci], dtype=np.uint8)[dest + step]
    return out.tobytes(), np.where(lens > 0, at, -1)


def pack_blocks(old: np.ndarray, new: np.ndarray, starts: np.ndarray,
                nblocks: np.ndarray) -> int:
    """Pack the blocks of rows starting at ``starts`` (``nblocks`` each, 0: no bytes)
    at the front of ``new``, which may be ``old`` itself: blocks move in ascending order
    and never backwards, so packing in place is safe. Updates ``starts``; returns the
    blocks in use."""
    used = int(nblocks.sum())
    if not used:
        return 0
    has = np.flatnonzero(nblocks > 0)
    has = has[np.argsort(starts[has], kind="stable")]  # by where the bytes are now
    nbh = nblocks[has]
    new_start = np.r_[0, np.cumsum(nbh)[:-1]]
    # Every kept block, ascending: block i of a row is its start + i.
    src = np.repeat(starts[has] - new_start, nbh) + np.arange(used)
    step = 1 << 15  # 4 MB temporaries
    for lo in range(0, used, step):
        hi = min(lo + step, used)
        # take (clip: the indices are valid) is ~2x a fancy-index copy; numpy copies
        # through a temporary itself where new is old.
        np.take(old, src[lo:hi], axis=0, out=new[lo:hi], mode="clip")
    starts[has] = new_start
    return used
