"""The on-disk packet ring's layout, and its reader (``--keep-packets DIR``).

Pure module (numpy and the standard library). The writer is
:mod:`netmon.ingest.diskring`; :class:`DiskReader` runs on whichever thread asks (the
UI link's threads, the reactor thread, ``netmon packets`` on the main thread) and is
safe while the writer writes, in this process or another: it reads only index rows
the writer has already written, which it writes after the packet bytes they point
to, and a segment deleted under it just drops out of the answer.

Layout of DIR (every file 0600; names sort oldest first)::

    netmon-<run>-<segment>.pcapng   a pcapng segment: SHB, one IDB per link type, EPBs
    netmon-<run>-<segment>.idx      its index while open: INDEX_DTYPE rows, append order
    netmon-<run>-<segment>.fidx     ... once closed: the same rows sorted by (flow, seq)
    netmon-<run>-<segment>.clus     clusters of the run's flows decided while the
                                    segment was open (JSON lines, see
                                    :mod:`netmon.ingest.diskclusters`)
    netmon-<run>-<segment>.flows    FLOWS_MAGIC, then one FLOWS_DTYPE row per flow
                                    with packets in the segment: flow id, protocol,
                                    family, port a, port b, address a, address b (16
                                    bytes; IPv4 in the last 4; a = the initiator).
                                    Binary: the writer formats no text per flow.
                                    (Older runs wrote tab-separated text lines.)
    .netmon-keep.lock               held (flock) by the netmon writing here

``<run>`` is the start time and pid of the netmon that wrote the segment: flow ids are
numbered per run, so a flow is named by (run, flow id). Why plain numpy files rather
than SQLite: a batch's index rows are one vectorised write, a closed segment's sorted
index answers "where are flow F's packets" with a binary search over a memory map,
and deleting a segment deletes its index with it (nothing to keep consistent).
"""

from __future__ import annotations

import bisect
import os
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from netmon.ingest.diskclusters import read_clusters
from netmon.ingest.keptpackets import TIER_DISK, RingFrame, StorePackets
from netmon.ingest.pcapwrite import pcapng_epb, pcapng_idb, pcapng_shb

#: One index row per packet written: where its frame's bytes sit in the segment
#: (``off``: the first byte of the frame data), and what a packet list shows.
INDEX_DTYPE = np.dtype([("flow", "<i8"), ("seq", "<i8"), ("off", "<i8"), ("ts", "<f8"),
                        ("caplen", "<u4"), ("wirelen", "<u4"), ("linktype", "<u2"),
                        ("flags", "<u2"), ("proto", "u1"), ("a2b", "u1")])
ROW = INDEX_DTYPE.itemsize
#: One row per flow of a segment: what ``netmon packets`` lists besides its packets.
FLOWS_DTYPE = np.dtype([("flow", "<i8"), ("proto", "u1"), ("fam", "u1"), ("port_a", "<u2"),
                        ("port_b", "<u2"), ("addr_a", "u1", (16,)), ("addr_b", "u1", (16,))])
FLOWS_MAGIC = b"NMFLOWS1"
LOCK_NAME = ".netmon-keep.lock"
PREFIX = "netmon-"
#: netmon-<run: date T time . microseconds - pid>-<segment number>.<kind>
_NAME = re.compile(r"^netmon-(\d{8}T\d{6}\.\d{6}-\d+)-(\d{6})\.(pcapng|idx|fidx|flows|clus)$")
KINDS = ("pcapng", "idx", "fidx", "flows", "clus")


def segment_name(run: str, number: int) -> str:
    """The common stem of a segment's files."""
    return f"{PREFIX}{run}-{number:06d}"


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment's files as found in the directory (names, not open files)."""

    run: str
    number: int
    stem: str
    files: tuple[str, ...]  # the kinds present

    @property
    def sorted_index(self) -> bool:
        return "fidx" in self.files


def list_segments(directory: str) -> list[Segment]:
    """The segments in ``directory``, oldest first (by run, then number)."""
    found: dict[tuple[str, int], list[str]] = {}
    for name in os.listdir(directory):
        m = _NAME.match(name)
        if m:
            found.setdefault((m.group(1), int(m.group(2))), []).append(m.group(3))
    return [Segment(run, number, segment_name(run, number), tuple(kinds))
            for (run, number), kinds in sorted(found.items())]


def segment_bytes(directory: str, seg: Segment) -> int:
    """Bytes of the segment's files (those still there)."""
    total = 0
    for kind in seg.files:
        try:
            total += os.stat(os.path.join(directory, f"{seg.stem}.{kind}")).st_size
        except FileNotFoundError:
            pass
    return total


def read_index(path: str) -> np.ndarray:
    """Every complete row of an index file (a row cut short by a crash is left out);
    an empty array when the file is gone."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return np.zeros(0, dtype=INDEX_DTYPE)
    return np.frombuffer(data, dtype=INDEX_DTYPE, count=len(data) // ROW)


@dataclass(frozen=True, slots=True)
class FlowEnds:
    """What the ring says about a flow: its 5-tuple (a = initiator), packets kept on
    disk and their first and last capture times, and the cluster netmon last put it in
    (-1: none recorded) with that cluster's label."""

    run: str
    flow_id: int
    proto: int
    addr_a: str
    port_a: int
    addr_b: str
    port_b: int
    packets: int
    first: float
    last: float
    cluster: int = -1
    label: str = ""


def _address(fam: int, addr: bytes) -> str:
    return (socket.inet_ntop(socket.AF_INET, addr[12:]) if fam == 4
            else socket.inet_ntop(socket.AF_INET6, addr))


def read_flow_lines(path: str) -> dict[int, tuple[int, str, int, str, int]]:
    """flow id -> (proto, addr a, port a, addr b, port b) from a ``.flows`` file (a
    row cut short by a crash is left out; so are malformed lines of an older run's
    text file)."""
    out: dict[int, tuple[int, str, int, str, int]] = {}
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return out
    if data.startswith(FLOWS_MAGIC):
        body = memoryview(data)[len(FLOWS_MAGIC):]
        rows = np.frombuffer(body, dtype=FLOWS_DTYPE, count=len(body) // FLOWS_DTYPE.itemsize)
        for flow, proto, fam, pa, pb, a, b in zip(
                rows["flow"].tolist(), rows["proto"].tolist(), rows["fam"].tolist(),
                rows["port_a"].tolist(), rows["port_b"].tolist(), rows["addr_a"],
                rows["addr_b"], strict=True):
            out[flow] = (proto, _address(fam, a.tobytes()), pa, _address(fam, b.tobytes()), pb)
        return out
    for line in data.decode("ascii", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 6 and all(parts[i].isdigit() for i in (0, 1, 3, 5)):
            out[int(parts[0])] = (int(parts[1]), parts[2], int(parts[3]), parts[4],
                                  int(parts[5]))
    return out


class DiskReader:
    """A flow's packets and frames from the segments of one run (``run``), or of every
    run (``run`` None: then flow ids are ambiguous, see :meth:`flows`).

    Thread-safe: the only shared state is a cache of memory-mapped sorted indexes of
    closed segments (which never change), guarded by a lock. ``shared``, given by the
    writer of this process, returns the open segment's stem, index rows written so far
    and their flow ids (arrays it never changes): searched in memory rather than
    reading the whole unsorted ``.idx`` file at every question.
    """

    def __init__(self, directory: str, run: str | None = None, *,
                 shared: Callable[[], tuple[str, np.ndarray, np.ndarray] | None] | None = None,
                 ) -> None:
        self.directory = directory
        self.run = run
        self._shared = shared
        self._lock = threading.Lock()
        self._maps: dict[str, np.ndarray] = {}

    def _segments(self) -> list[Segment]:
        try:
            segs = list_segments(self.directory)
        except OSError:
            return []
        return [s for s in segs if self.run is None or s.run == self.run]

    def _sorted(self, seg: Segment) -> np.ndarray | None:
        with self._lock:
            rows = self._maps.get(seg.stem)
        if rows is not None:
            return rows
        path = os.path.join(self.directory, f"{seg.stem}.fidx")
        try:
            size = os.path.getsize(path)
            rows = (np.memmap(path, dtype=INDEX_DTYPE, mode="r", shape=(size // ROW,))
                    if size >= ROW else np.zeros(0, dtype=INDEX_DTYPE))
        except (FileNotFoundError, ValueError):
            return None
        with self._lock:
            if len(self._maps) > 256:  # segments long deleted: drop the maps
                self._maps.clear()
            self._maps[seg.stem] = rows
        return rows

    def _unsorted(self, seg: Segment) -> tuple[np.ndarray, np.ndarray]:
        """An open segment's index rows and their flow ids: the writer's, else its
        file's, else (closed meanwhile) the sorted file's."""
        shared = self._shared() if self._shared is not None else None
        if shared is not None and shared[0] == seg.stem:
            return shared[1], shared[2]
        rows = read_index(os.path.join(self.directory, f"{seg.stem}.idx"))
        if not len(rows):
            rows = self._sorted(seg)
            if rows is None:
                rows = np.zeros(0, dtype=INDEX_DTYPE)
        return rows, rows["flow"]

    def _rows(self, flow_id: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The flow's index rows in every segment, by seq; each row's segment as an
        index into the third value, the segments' stems."""
        parts, where = [], []
        stems = []
        for seg in self._segments():
            rows = self._sorted(seg) if seg.sorted_index else None
            if rows is not None:
                col = rows["flow"]
                lo = bisect.bisect_left(col, flow_id)
                hi = bisect.bisect_right(col, flow_id, lo)
                mine = np.array(rows[lo:hi])
            else:
                rows, flow = self._unsorted(seg)
                mine = rows[np.flatnonzero(flow == flow_id)]
            if len(mine):
                parts.append(mine)
                where.append(np.full(len(mine), len(stems), dtype=np.int64))
                stems.append(seg.stem)
        if not parts:
            return np.zeros(0, dtype=INDEX_DTYPE), np.zeros(0, dtype=np.int64), stems
        rows, seg_of = np.concatenate(parts), np.concatenate(where)
        order = np.argsort(rows["seq"], kind="stable")
        return rows[order], seg_of[order], stems

    def packets_of(self, flow_id: int) -> StorePackets:
        """The flow's packets on disk, oldest first (the in-memory ring's shape)."""
        rows, _, _ = self._rows(flow_id)
        seq = rows["seq"].astype(np.int64)
        return StorePackets(seq=seq, ts=rows["ts"].astype(np.float64),
                           a2b=rows["a2b"].astype(np.bool_),
                           size=rows["wirelen"].astype(np.int32),
                           flags=rows["flags"].astype(np.uint8),
                           proto=rows["proto"].astype(np.uint8),
                           has_bytes=np.ones(len(rows), dtype=np.bool_),
                           tier=np.full(len(rows), TIER_DISK, dtype=np.uint8))

    def frames_of(self, flow_id: int, upto_seq: int | None = None,
                  limit: int | None = None) -> list[RingFrame]:
        """The flow's frames on disk, whole, oldest first: those up to packet
        ``upto_seq`` when given, at most the last ``limit`` of them. Frames in a
        segment deleted meanwhile are left out."""
        rows, seg_of, stems = self._rows(flow_id)
        if upto_seq is not None:
            keep = rows["seq"] <= upto_seq
            rows, seg_of = rows[keep], seg_of[keep]
        if limit is not None:
            first = max(len(rows) - limit, 0)
            rows, seg_of = rows[first:], seg_of[first:]
        out: list[RingFrame] = []
        fds: dict[int, int | None] = {}
        try:
            for row, s in zip(rows.tolist(), seg_of.tolist(), strict=True):
                if s not in fds:
                    try:
                        fds[s] = os.open(os.path.join(self.directory,
                                                      f"{stems[s]}.pcapng"), os.O_RDONLY)
                    except FileNotFoundError:
                        fds[s] = None
                fd = fds[s]
                if fd is None:
                    continue
                _flow, seq, off, ts, caplen, wirelen, linktype = row[:7]
                data = os.pread(fd, caplen, off)
                if len(data) == caplen:
                    out.append(RingFrame(seq, ts, wirelen, linktype, data))
        finally:
            for fd in fds.values():
                if fd is not None:
                    os.close(fd)
        return out

    def flows(self) -> list[FlowEnds]:
        """Every flow with packets in the ring (of this reader's run, or all runs),
        by run then flow id."""
        by_run: dict[str, list[Segment]] = {}
        for seg in self._segments():
            by_run.setdefault(seg.run, []).append(seg)
        out: list[FlowEnds] = []
        for run, segs in by_run.items():
            tuples: dict[int, tuple[int, str, int, str, int]] = {}
            member, labels = read_clusters([os.path.join(self.directory, f"{g.stem}.clus")
                                            for g in segs if "clus" in g.files])
            parts = []
            for seg in segs:
                parts.append(read_index(os.path.join(self.directory, f"{seg.stem}.fidx"))
                             if seg.sorted_index else self._unsorted(seg)[0])
                tuples.update(read_flow_lines(os.path.join(self.directory,
                                                           f"{seg.stem}.flows")))
            rows = np.concatenate(parts) if parts else np.zeros(0, dtype=INDEX_DTYPE)
            if not len(rows):
                continue
            order = np.lexsort((rows["ts"], rows["flow"]))
            flow, ts = rows["flow"][order], rows["ts"][order]
            ids, start, counts = np.unique(flow, return_index=True, return_counts=True)
            for fid, s, c in zip(ids.tolist(), start.tolist(), counts.tolist(), strict=True):
                proto, a, pa, b, pb = tuples.get(fid, (0, "?", 0, "?", 0))
                cl = member.get(fid, -1)
                out.append(FlowEnds(run, fid, proto, a, pa, b, pb, c, float(ts[s]),
                                    float(ts[s + c - 1]), cl, labels.get(cl, "")))
        return out


def write_pcapng(path: str, frames: list[RingFrame]) -> int:
    """Write ``frames`` (in the order given) as one pcapng file, one IDB per link
    type; returns the bytes written. The file is 0600 (it holds captured payload)."""
    ifaces: dict[int, int] = {}
    blocks = [pcapng_shb()]
    for fr in frames:
        if fr.linktype not in ifaces:
            ifaces[fr.linktype] = len(ifaces)
            blocks.append(pcapng_idb(fr.linktype))
    for fr in frames:
        blocks.append(pcapng_epb(ifaces[fr.linktype], fr.ts, fr.data, wirelen=fr.wirelen))
    data = b"".join(blocks)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return len(data)
