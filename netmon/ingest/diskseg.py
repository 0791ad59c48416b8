"""The on-disk ring's segment files as the writer thread builds them: the batch it is
handed (:class:`Item`), the segment being written (:class:`OpenSegment`) and the
Enhanced Packet Blocks of a run of frames, built mostly with numpy.

Writer thread only (``netmon-keep``, see :mod:`netmon.ingest.diskring`), apart from
:class:`Item`, which the reactor thread builds from copies and hands over.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass

import numpy as np

from netmon.ingest.diskindex import segment_name

#: An Enhanced Packet Block's header before the frame data, and its total with trailer.
_EPB_HEAD = 28
_EPB_FIXED = 32
_HDR = np.dtype([("type", "<u4"), ("total", "<u4"), ("iface", "<u4"), ("hi", "<u4"),
                 ("lo", "<u4"), ("cap", "<u4"), ("wire", "<u4")])
_AR_HEAD = np.arange(_EPB_HEAD)
_AR_TAIL = np.arange(4)


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



class OpenSegment:
    """The segment being written (writer thread only)."""

    def __init__(self, directory: str, run: str, number: int) -> None:
        self.number = number
        self.stem = segment_name(run, number)
        base = os.path.join(directory, self.stem)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        self.fds: list[int] = []
        for kind in ("pcapng", "idx", "flows"):
            self.fds.append(os.open(f"{base}.{kind}", flags, 0o600))
        self.sizes = [0, 0, 0]
        self.ifaces: dict[int, int] = {}
        self.flows: set[int] = set()
        self.packets = 0

    @property
    def bytes(self) -> int:
        return sum(self.sizes)

    def write(self, parts: tuple[bytes, bytes, bytes]) -> None:
        """Append to the three files; on error, cut each back so the segment stays
        valid pcapng with an index that points only at whole frames."""
        try:
            for fd, data in zip(self.fds, parts, strict=True):
                if data:
                    write_all(fd, data)
        except OSError:
            for fd, size in zip(self.fds, self.sizes, strict=True):
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
            raise
        for i, data in enumerate(parts):
            self.sizes[i] += len(data)

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []



def tuple_line(it: Item, row: int) -> str:
    """"proto, addr a, port a, addr b, port b" (a = the flow's initiator) from a row."""
    fam = socket.AF_INET if it.fam[row] == 4 else socket.AF_INET6
    cut = 12 if fam == socket.AF_INET else 0
    src = socket.inet_ntop(fam, it.src[row, cut:].tobytes())
    dst = socket.inet_ntop(fam, it.dst[row, cut:].tobytes())
    ends = [(src, int(it.sport[row])), (dst, int(it.dport[row]))]
    if not it.a2b[row]:
        ends.reverse()
    (a, pa), (b, pb) = ends
    return f"{int(it.proto[row])}\t{a}\t{pa}\t{b}\t{pb}"


def epbs(it: Item, sl: slice, iface: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The Enhanced Packet Blocks of rows ``sl`` as one ``bytes``, and where each
    frame's data starts in it. The fixed parts (header; padding, trailer) are built
    with numpy as "glue" runs between frames, so per frame only two slices are
    joined in Python."""
    cap = it.caplen[sl].astype(np.int64)
    n = len(cap)
    pad = (-cap) % 4
    total = _EPB_FIXED + cap + pad
    hdr = np.empty(n, dtype=_HDR)
    ticks = np.round(it.ts[sl] * 1e6).astype(np.int64)  # microseconds: the IDB default
    hdr["type"] = 6
    hdr["total"] = total
    hdr["iface"] = iface
    hdr["hi"] = ticks >> 32
    hdr["lo"] = ticks & 0xFFFFFFFF
    hdr["cap"] = cap
    hdr["wire"] = it.wirelen[sl]
    # Glue j: header 0 (j = 0); pad and trailer of frame j-1 then header j; last: the
    # last frame's pad and trailer.
    glen = np.empty(n + 1, dtype=np.int64)
    glen[0] = _EPB_HEAD
    glen[1:n] = pad[:-1] + _EPB_FIXED
    glen[n] = pad[-1] + 4
    gend = np.cumsum(glen)
    gstart = gend - glen
    glue = np.zeros(int(gend[-1]), dtype=np.uint8)
    hpos = gstart[:n].copy()
    hpos[1:] += pad[:-1] + 4
    glue[hpos[:, None] + _AR_HEAD] = hdr.view(np.uint8).reshape(n, _EPB_HEAD)
    tpos = gstart[1:] + pad
    glue[tpos[:, None] + _AR_TAIL] = total.astype("<u4").view(np.uint8).reshape(n, 4)
    data_at = gend[:n] + (np.cumsum(cap) - cap)
    gv = memoryview(glue)
    # Comprehensions and slice assignment: about half the cost of a loop of appends.
    parts: list = [None] * (2 * n + 1)
    parts[0:2 * n:2] = [gv[a:b] for a, b in zip(gstart[:n].tolist(), gend[:n].tolist(),
                                                 strict=True)]
    off = it.off[sl]
    ends = (off + cap).tolist()
    if len(it.bufs) == 1:
        v = memoryview(it.bufs[0])
        parts[1:2 * n:2] = [v[o:e] for o, e in zip(off.tolist(), ends, strict=True)]
    else:
        views = [memoryview(b) for b in it.bufs]
        parts[1:2 * n:2] = [views[c][o:e] for c, o, e in zip(
            it.chunk[sl].tolist(), off.tolist(), ends, strict=True)]
    parts[2 * n] = gv[int(gstart[n]):]
    return b"".join(parts), data_at
