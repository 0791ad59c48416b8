"""The on-disk ring's segment files as the writer thread builds them: the batch it is
handed (:class:`Item`), the segment being written (:class:`OpenSegment`) and the
Enhanced Packet Blocks of a run of frames, built mostly with numpy.

Writer thread only (``netmon-keep``, see :mod:`netmon.ingest.diskring`), apart from
:class:`Item`, which the reactor thread builds from copies and hands over.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from netmon.ingest.diskindex import FLOWS_DTYPE, INDEX_DTYPE, segment_name

#: An Enhanced Packet Block's header, padding aside, with its trailer.
_EPB_FIXED = 32
#: One row of "glue" between two frames: room for the previous frame's padding (zeros,
#: 0-3 of the 4 bytes used), its trailer (the block's total again), then the next
#: block's header. A batch's glue is one structured array, filled a column at a time.
_GLUE = np.dtype([("pad", "u1", (4,)), ("trailer", "<u4"), ("type", "<u4"),
                  ("total", "<u4"), ("iface", "<u4"), ("hi", "<u4"), ("lo", "<u4"),
                  ("cap", "<u4"), ("wire", "<u4")])
_ROW = _GLUE.itemsize  # 36
#: Buffers per os.writev call at most (Linux's IOV_MAX).
IOV_MAX = 1024


@dataclass(frozen=True, slots=True)
class Item:
    """One batch's frames with bytes, as the writer needs them (copies and immutable
    buffers: nothing the reactor thread changes afterwards)."""

    bufs: tuple[bytes, ...]
    linktypes: tuple[int, ...]
    chunk: np.ndarray
    off: np.ndarray
    caplen: np.ndarray
    ts: np.ndarray
    wirelen: np.ndarray
    flow: np.ndarray
    seq: np.ndarray
    a2b: np.ndarray
    flags: np.ndarray
    proto: np.ndarray
    fam: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    nbytes: int


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_parts(fd: int, parts: list) -> int:
    """Write buffers in order with as few calls as IOV_MAX allows (the GIL is released
    in each, and nothing is copied in Python); returns the bytes written."""
    total = 0
    for at in range(0, len(parts), IOV_MAX):
        chunk = parts[at:at + IOV_MAX]
        want = sum(map(len, chunk))
        done = os.writev(fd, chunk)
        if done < want:  # a short write (a signal, a nearly full disk): the rest, whole
            write_all(fd, memoryview(b"".join(chunk))[done:])
        total += want
    return total


class OpenSegment:
    """The segment being written (writer thread only)."""

    def __init__(self, directory: str, run: str, number: int) -> None:
        self.number = number
        self.stem = segment_name(run, number)
        base = os.path.join(directory, self.stem)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        self.fds: list[int] = []
        for kind in ("pcapng", "idx", "flows", "clus"):
            self.fds.append(os.open(f"{base}.{kind}", flags, 0o600))
        self.sizes = [0, 0, 0, 0]
        self._rows = np.empty(1 << 14, dtype=INDEX_DTYPE)
        self._flow = np.empty(1 << 14, dtype=np.int64)
        #: Its index rows written so far, in memory too (46 bytes a packet: ~18 MB at
        #: a 256 MB segment), and their flow ids as one contiguous column (8 more; a
        #: search of it is 7x quicker than of the rows' field): views the writer never
        #: changes again (later rows go past them, bigger arrays are new ones), so
        #: other threads search them as they are, and the index is sorted at close
        #: without reading the file back.
        self.rows = self._rows[:0]
        self.flow = self._flow[:0]
        self.ifaces: dict[int, int] = {}
        self.flows: set[int] = set()
        self.packets = 0

    @property
    def bytes(self) -> int:
        return sum(self.sizes)

    def write(self, blocks: list, rows: np.ndarray, tuples: bytes) -> None:
        """Append EPBs (buffers, in order), their index rows and flow rows to the
        three files; on error, cut each back so the segment stays valid pcapng with an
        index that points only at whole frames."""
        try:
            written = write_parts(self.fds[0], blocks)
            if len(rows):
                write_all(self.fds[1], rows.tobytes())
            if tuples:
                write_all(self.fds[2], tuples)
        except OSError:
            for fd, size in zip(self.fds, self.sizes, strict=True):
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
            raise
        self.sizes[0] += written
        self.sizes[1] += rows.nbytes
        self.sizes[2] += len(tuples)
        n, k = len(self.rows), len(rows)
        if n + k > len(self._rows):
            size = max(2 * len(self._rows), n + k)
            self._rows = np.concatenate([self.rows, np.empty(size - n, dtype=INDEX_DTYPE)])
            self._flow = np.concatenate([self.flow, np.empty(size - n, dtype=np.int64)])
        self._rows[n:n + k] = rows
        self._flow[n:n + k] = rows["flow"]
        self.rows, self.flow = self._rows[:n + k], self._flow[:n + k]

    def write_clusters(self, line: bytes) -> None:
        """Append a line of cluster memberships (see :mod:`netmon.ingest.diskclusters`);
        on error, cut the file back so no half line stays."""
        try:
            write_all(self.fds[3], line)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fds[3], self.sizes[3])
            raise
        self.sizes[3] += len(line)

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []



def flow_rows(it: Item, at: np.ndarray) -> np.ndarray:
    """The ``.flows`` rows of rows ``at`` (one row of each flow; a = the initiator)."""
    a2b = it.a2b[at].astype(np.bool_)
    out = np.empty(len(at), dtype=FLOWS_DTYPE)
    out["flow"] = it.flow[at]
    out["proto"] = it.proto[at]
    out["fam"] = it.fam[at]
    sport, dport = it.sport[at], it.dport[at]
    out["port_a"] = np.where(a2b, sport, dport)
    out["port_b"] = np.where(a2b, dport, sport)
    src, dst = it.src[at], it.dst[at]
    out["addr_a"] = np.where(a2b[:, None], src, dst)
    out["addr_b"] = np.where(a2b[:, None], dst, src)
    return out


def epbs(it: Item, sl: slice, iface: np.ndarray) -> tuple[list, np.ndarray, int]:
    """The Enhanced Packet Blocks of rows ``sl`` as a list of buffers to write in order
    (glue, frame, glue, ..., frame, glue: views, nothing copied), where each frame's
    data starts in them, and their bytes. Every header, padding and trailer of the batch is one
    structured numpy array (:data:`_GLUE`), so per frame only two slices are made."""
    cap = it.caplen[sl].astype(np.int64)
    n = len(cap)
    pad = (-cap) % 4
    total = _EPB_FIXED + cap + pad
    ticks = np.round(it.ts[sl] * 1e6).astype(np.int64)  # microseconds: the IDB default
    glue = np.zeros(n + 1, dtype=_GLUE)
    head = glue[:n]  # row j: frame j's header (after frame j-1's pad and trailer)
    head["type"] = 6
    head["total"] = total
    head["iface"] = iface
    head["hi"] = ticks >> 32
    head["lo"] = ticks & 0xFFFFFFFF
    head["cap"] = cap
    head["wire"] = it.wirelen[sl]
    glue["trailer"][1:] = total
    # Glue j runs from frame j-1's padding (the last pad bytes of the zeroed room)
    # to the end of frame j's header; the first has no frame before it, the last
    # no header after it.
    glen = np.empty(n, dtype=np.int64)
    glen[0] = _ROW - 8
    glen[1:] = _ROW - 4 + pad[:-1]
    data_at = np.cumsum(glen) + (np.cumsum(cap) - cap)
    # Each glue as a bytes object, made in C a pad class at a time (rows after a frame
    # with p pad bytes are 32 + p long: one fixed-size void view each): a quarter of
    # the cost of slicing them one by one.
    g8 = glue.view(np.uint8).reshape(n + 1, _ROW)
    pieces = np.empty(n + 1, dtype=object)
    pieces[0] = g8[0, 8:].tobytes()
    pieces[n] = g8[n, 4 - int(pad[-1]):8].tobytes()
    for p in range(4):
        rows = np.flatnonzero(pad[:-1] == p) + 1
        if len(rows):
            fixed = np.ascontiguousarray(g8[rows, 4 - p:])
            pieces[rows] = fixed.view(np.dtype((np.void, _ROW - 4 + p))).ravel().astype(object)
    # Slice assignment of whole lists: about half the cost of a loop of appends.
    parts: list = [None] * (2 * n + 1)
    parts[0:2 * n + 1:2] = pieces.tolist()
    off = it.off[sl]
    ends = (off + cap).tolist()
    if len(it.bufs) == 1:
        v = memoryview(it.bufs[0])
        parts[1:2 * n:2] = [v[o:e] for o, e in zip(off.tolist(), ends, strict=True)]
    else:
        views = [memoryview(b) for b in it.bufs]
        parts[1:2 * n:2] = [views[c][o:e] for c, o, e in zip(
            it.chunk[sl].tolist(), off.tolist(), ends, strict=True)]
    return parts, data_at, int(total.sum())
