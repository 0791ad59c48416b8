"""The on-disk packet ring (``--keep-packets DIR``): every captured frame, written as
rotating pcapng segments with an index, under a size cap.

Threads. :class:`DiskRing` is made on the main thread (which checks DIR, so a bad one
stops netmon before capture starts); :meth:`DiskRing.append` runs on the engine's
reactor thread and only copies a batch's columns (the frames' ``bytes`` buffers are
immutable and handed over by reference) onto a bounded queue. When the writer falls
behind a live capture, the packets that do not fit are counted, never waited for; a
replay (:meth:`DiskRing.lossless`) loses none: :meth:`DiskRing.append` says the queue is
full and the engine pauses its sources until the writer has drained the queue below a
low-water mark (the writer thread calls back). One writer thread
(``netmon-keep``) owns every file in DIR: it writes the segments and their indexes
(layout in :mod:`netmon.ingest.diskindex`, blocks built in :mod:`netmon.ingest.diskseg`),
rotates at the segment size and deletes
the oldest segments, older runs' first, so the directory never holds more than the
cap. :meth:`DiskRing.close` (reactor thread, at the engine's end) lets it write what
is queued and joins it. A write error (disk full, file too large, DIR removed) stops
the writer with one message in :attr:`DiskRing.error`; counting goes on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from netmon.core.errors import EXIT_USAGE, SourceError
from netmon.core.text import NAME_MAX, safe_text
from netmon.ingest.batch import PacketBatch
from netmon.ingest.diskclusters import ClusterNote, Memberships
from netmon.ingest.diskindex import (
    FLOWS_MAGIC,
    INDEX_DTYPE,
    LOCK_NAME,
    ROW,
    DiskReader,
    list_segments,
    segment_bytes,
)
from netmon.ingest.diskseg import Item, OpenSegment, epbs, flow_rows, write_all
from netmon.ingest.pcapwrite import pcapng_idb, pcapng_shb

DEFAULT_CAP = 1 << 30
#: Segments are a sixteenth of the cap (so deleting one frees little), at least this
#: big (fewer files and index sorts), at most a quarter of the cap and at most
#: MAX_SEGMENT (sorting a closed segment's index takes one pass over it).
MIN_SEGMENT = 4 << 20
MAX_SEGMENT = 256 << 20
#: Buffers queued for the writer at most; past this, packets are counted as not written
#: (live) or the sources are paused until the queue is below LOW_WATER of it (replays).
QUEUE_BYTES = 64 << 20
#: Half: each pause lets the writer catch up by 32 MB, so pauses are few (each costs a
#: reactor turn) while the queue never stands empty when reading resumes.
LOW_WATER = 0.5

def segment_size_for(cap: int) -> int:
    return min(max(cap // 16, MIN_SEGMENT), max(cap // 4, 1), MAX_SEGMENT)


def _run_id() -> str:
    now = time.time()
    return (time.strftime("%Y%m%dT%H%M%S", time.localtime(now))
            + f".{int(now % 1 * 1e6):06d}-{os.getpid()}")


def _reason(exc: OSError) -> str:
    return {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EFBIG: "a file grew past the size limit",
            errno.ENOENT: "the directory or its files were removed",
            errno.EACCES: "no permission to write there any more",
            errno.EROFS: "the file system became read-only"}.get(
                exc.errno, exc.strerror or str(exc))


class DiskRing:
    """Rotating pcapng segments of every frame, at most ``cap`` bytes in ``directory``."""

    def __init__(self, directory: str, cap: int = DEFAULT_CAP, *,
                 segment_bytes: int | None = None, queue_bytes: int = QUEUE_BYTES) -> None:
        self.directory = directory
        self.shown = safe_text(directory, NAME_MAX)
        self.cap = int(cap)
        self.segment_bytes = int(segment_bytes or segment_size_for(self.cap))
        self.queue_bytes = queue_bytes
        self._lock_fd = self._claim(directory)
        self.run = _run_id()
        #: One clear message once writing has stopped for good (writer thread sets it).
        self.error = ""
        self.dropped = 0  # packets the queue had no room for (reactor thread)
        self.skipped = 0  # frames bigger than the cap allows (writer thread)
        self.written = 0  # packets written (writer thread)
        self.bytes_written = 0  # bytes of segments and index written (writer thread)
        #: Flows of this run with packets on disk -> their newest segment's number
        #: (replaced whole by the writer when segments go: readers see one or the other).
        self.present: dict[int, int] = {}
        self._cond = threading.Condition()
        self._items: deque[Item | ClusterNote] = deque()
        self._members = Memberships()  # writer thread
        self._queued = 0
        self._closing = False
        self._on_drained: Callable[[], None] | None = None  # replays: lossless()
        self._want_drain = False  # append() said "full"; the writer calls back when low
        self._ended = False  # the writer thread has ended (under _cond)
        self._thread: threading.Thread | None = None
        self._cur: OpenSegment | None = None
        self._number = 0
        self._old: deque[tuple[str, int, str]] = deque()  # closed segments: run, number, stem
        self._total = 0
        #: The open segment's stem, its index rows written so far and their flow ids
        #: (replaced whole by the writer): this process's readers search them instead
        #: of reading the .idx file.
        self.open_index: tuple[str, np.ndarray, np.ndarray] | None = None
        self._reader = DiskReader(directory, self.run, shared=lambda: self.open_index)

    @staticmethod
    def _claim(directory: str) -> int:
        """Check DIR (made 0700 if missing) and lock it; SourceError(EXIT_USAGE) if not
        usable, so netmon stops before capture starts."""
        shown = safe_text(directory, NAME_MAX)
        try:
            if not os.path.exists(directory):
                os.makedirs(directory, mode=0o700)
            if not os.path.isdir(directory):
                raise SourceError(f"--keep-packets {shown}: not a directory", EXIT_USAGE)
            fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SourceError(f"--keep-packets {shown}: {exc.strerror or exc}",
                              EXIT_USAGE) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SourceError(f"--keep-packets {shown}: another netmon is keeping packets "
                              "there", EXIT_USAGE) from None
        if not os.access(directory, os.W_OK | os.X_OK):
            os.close(fd)
            raise SourceError(f"--keep-packets {shown}: no permission to write there",
                              EXIT_USAGE)
        return fd

    # ------------------------------------------------------------ any thread
    @property
    def not_written(self) -> int:
        """Packets with bytes that were not written (writer behind, or frame too big)."""
        return self.dropped + self.skipped

    @property
    def queued(self) -> int:
        """Bytes of capture buffers waiting for the writer."""
        return self._queued

    def holds(self, flow_id: int) -> bool:
        """Whether this run's segments hold packets of the flow."""
        return flow_id in self.present

    def reader(self) -> DiskReader:
        """This run's flows' packets and frames (thread-safe)."""
        return self._reader

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------ reactor thread
    def lossless(self, on_drained: Callable[[], None]) -> None:
        """Replays: never drop for lack of queue room. :meth:`append` then returns True
        when the queue is full, and ``on_drained`` is called (on the writer thread; it
        must only hand over, e.g. ``reactor.callFromThread``) once the writer has
        drained it below the low-water mark, or has ended."""
        self._on_drained = on_drained

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="netmon-keep", daemon=True)
        self._thread.start()

    def append(self, batch: PacketBatch, flow_id: np.ndarray, a2b: np.ndarray,
               seq: np.ndarray) -> bool:
        """Queue the batch's frames that have bytes (cheap: copies of columns). True
        when the queue is full and the caller should pause (lossless mode only)."""
        if self.error or self._closing or batch.raw_off is None or not batch.bufs:
            return False
        has = batch.raw_chunk >= 0
        sel = slice(None) if has.all() else np.flatnonzero(has)
        n = len(batch) if isinstance(sel, slice) else len(sel)
        if not n:
            return False
        nbytes = batch.raw_nbytes
        with self._cond:
            if (self._queued + nbytes > self.queue_bytes and self._items
                    and (self._on_drained is None or self._ended)):
                self.dropped += n
                return False
            self._queued += nbytes
        item = Item(batch.bufs, batch.linktypes, batch.raw_chunk[sel].copy(),
                     batch.raw_off[sel].copy(), batch.raw_len[sel].copy(),
                     batch.ts[sel].copy(), batch.wirelen[sel].copy(),
                     np.array(flow_id[sel]), np.array(seq[sel]), np.array(a2b[sel]),
                     batch.flags[sel].copy(), batch.proto[sel].copy(), batch.fam[sel].copy(),
                     batch.src[sel].copy(), batch.dst[sel].copy(), batch.sport[sel].copy(),
                     batch.dport[sel].copy(), nbytes)
        with self._cond:
            self._items.append(item)
            self._cond.notify()
            full = self._on_drained is not None and self._queued >= self.queue_bytes
            if full:
                self._want_drain = True
        return full

    def note_clusters(self, flow_id: np.ndarray, cluster: np.ndarray,
                      labels: dict[int, str], ended: bool = False) -> None:
        """Record that these flows are now in these clusters (``labels``: the
        clusterer's, id -> label), after the packets queued so far; ``ended``: the
        flows have ended (their last note)."""
        if self.error or self._closing or not len(flow_id):
            return
        note = ClusterNote(np.array(flow_id, dtype=np.int64),
                           np.array(cluster, dtype=np.int64), dict(labels), ended)
        with self._cond:
            self._items.append(note)
            self._cond.notify()

    def close(self) -> None:
        """Write what is queued, close the segment, end the writer thread (joined)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        elif self._lock_fd >= 0:
            self._finish()

    # ------------------------------------------------------------ writer thread
    def _fail(self, exc: OSError) -> None:
        self.error = (f"--keep-packets {self.shown}: {_reason(exc)}; packets are no longer "
                      "kept on disk (monitoring goes on)")
        self._abandon()

    def _run(self) -> None:
        try:
            try:
                self._scan()
            except OSError as exc:
                self._fail(exc)
            while True:
                with self._cond:
                    while not self._items and not self._closing:
                        self._cond.wait()
                    if not self._items:
                        break
                    item = self._items.popleft()
                try:
                    if self.error:
                        pass
                    elif isinstance(item, ClusterNote):
                        self._write_note(item)
                    else:
                        self._write_item(item)
                except OSError as exc:
                    self._fail(exc)
                finally:
                    with self._cond:
                        self._queued -= item.nbytes
                        drained = (self._want_drain
                                   and self._queued <= self.queue_bytes * LOW_WATER)
                        if drained:
                            self._want_drain = False
                    if drained:
                        self._drained()
        finally:
            self._finish()
            with self._cond:  # nothing may wait for a writer that has ended
                self._ended = True
                drained, self._want_drain = self._want_drain, False
            if drained:
                self._drained()

    def _drained(self) -> None:
        if self._on_drained is not None:
            self._on_drained()

    def _finish(self) -> None:
        if self._cur is not None:
            try:
                self._close_segment()
            except OSError as exc:
                if not self.error:
                    self.error = f"--keep-packets {self.shown}: {_reason(exc)}"
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _abandon(self) -> None:
        """After a write error: close the segment's files as they are (each was cut
        back to its last whole frame); its index stays unsorted, which readers take."""
        self.open_index = None
        if self._cur is not None:
            self._cur.close()
            self._cur = None

    def _scan(self) -> None:
        for name in os.listdir(self.directory):  # a crash's half-written sorted index
            if name.startswith("netmon-") and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.directory, name))
        for seg in list_segments(self.directory):
            self._old.append((seg.run, seg.number, seg.stem))
            self._total += segment_bytes(self.directory, seg)

    def _delete_oldest(self) -> bool:
        if not self._old:
            return False
        run, number, stem = self._old.popleft()
        # The index first: readers skip the segment from then on.
        for kind in ("fidx", "idx", "flows", "clus", "pcapng"):
            path = os.path.join(self.directory, f"{stem}.{kind}")
            try:
                size = os.stat(path).st_size
                os.unlink(path)
                self._total -= size
            except FileNotFoundError:
                pass
        if run == self.run:
            self.present = {f: n for f, n in self.present.items() if n > number}
        return True

    def _open_segment(self) -> None:
        self._number += 1
        self._cur = OpenSegment(self.directory, self.run, self._number)
        shb = pcapng_shb()
        self._make_room(len(shb) + len(FLOWS_MAGIC))
        self._cur.write([shb], np.zeros(0, dtype=INDEX_DTYPE), FLOWS_MAGIC)
        self._total += len(shb) + len(FLOWS_MAGIC)
        self._members.opened()

    def _write_note(self, note: ClusterNote) -> None:
        line = self._members.note(note, self.present)
        if line:
            if self._cur is None:
                self._open_segment()
            self._write_clusters(line)

    def _write_clusters(self, line: bytes) -> None:
        if line and self._make_room(len(line)):
            self._cur.write_clusters(line)
            self._total += len(line)
            self.bytes_written += len(line)

    def _close_segment(self) -> None:
        """Sort the closed segment's index by (flow, seq) into ``.fidx``."""
        cur, self._cur = self._cur, None
        cur.close()
        base = os.path.join(self.directory, cur.stem)
        rows = cur.rows
        order = np.lexsort((rows["seq"], rows["flow"]))
        rows = rows.view(np.dtype((np.void, ROW)))[order]  # whole rows: 7x a field-wise copy
        tmp = f"{base}.fidx.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_all(fd, rows.tobytes())
        except OSError:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, f"{base}.fidx")
        self.open_index = None  # readers use the sorted file from now on
        os.unlink(f"{base}.idx")
        self._old.append((self.run, cur.number, cur.stem))

    def _make_room(self, need: int) -> bool:
        """Delete the oldest closed segments until ``need`` more bytes fit the cap."""
        while self._total + need > self.cap:
            if not self._delete_oldest():
                return False
        return True

    def _write_item(self, it: Item) -> None:
        cost = 32 + it.caplen.astype(np.int64) + (-it.caplen.astype(np.int64)) % 4 + ROW
        i, n = 0, len(cost)
        while i < n:
            if self._cur is None:
                self._open_segment()
            elif os.fstat(self._cur.fds[0]).st_nlink == 0:  # deleted under us
                raise OSError(errno.ENOENT, "segment removed")
            cur = self._cur
            room = self.segment_bytes - cur.bytes
            k = int(np.searchsorted(np.cumsum(cost[i:]), room, side="right"))
            if k == 0:
                if cur.packets:
                    self._close_segment()
                    continue
                k = 1  # one frame bigger than a segment: alone in its own
            self._write_piece(it, slice(i, i + k))
            i += k

    def _write_piece(self, it: Item, sl: slice) -> None:
        cur = self._cur
        lts = np.asarray(it.linktypes, dtype=np.int64)[it.chunk[sl]]
        idbs = b""
        for lt in np.unique(lts).tolist():
            if lt not in cur.ifaces:
                cur.ifaces[lt] = len(cur.ifaces)
                idbs += pcapng_idb(lt)
        lut = {lt: i for lt, i in cur.ifaces.items()}
        iface = np.vectorize(lut.__getitem__, otypes=[np.int64])(lts) if len(lut) > 1 \
            else np.zeros(len(lts), dtype=np.int64)
        blocks, data_at, nblocks = epbs(it, sl, iface)
        rows = np.empty(len(data_at), dtype=INDEX_DTYPE)
        rows["flow"] = it.flow[sl]
        rows["seq"] = it.seq[sl]
        rows["off"] = data_at + (cur.sizes[0] + len(idbs))
        rows["ts"] = it.ts[sl]
        rows["caplen"] = it.caplen[sl]
        rows["wirelen"] = it.wirelen[sl]
        rows["linktype"] = lts
        rows["flags"] = it.flags[sl]
        rows["proto"] = it.proto[sl]
        rows["a2b"] = it.a2b[sl]
        flows, first = np.unique(rows["flow"], return_index=True)
        ids = flows.tolist()
        new = np.fromiter(set(ids).difference(cur.flows), dtype=np.int64)
        tuples = (flow_rows(it, sl.start + first[np.isin(flows, new)]).tobytes()
                if len(new) else b"")
        if idbs:
            blocks.insert(0, idbs)
        size = len(idbs) + nblocks + rows.nbytes + len(tuples)
        # Room for this and for the sorted copy of the segment's index made at its close.
        if not self._make_room(size + cur.sizes[1] + rows.nbytes):
            self.skipped += len(rows)  # bigger than the cap allows at all
            return
        cur.write(blocks, rows, tuples)
        self.open_index = (cur.stem, cur.rows, cur.flow)
        self._total += size
        self.bytes_written += size
        self.written += len(rows)
        cur.packets += len(rows)
        if len(new):
            added = new.tolist()
            cur.flows.update(added)
            self._write_clusters(self._members.joined(added))
            # In place (one dict operation, atomic for readers on other threads); flows
            # already in this segment are mapped to it already.
            self.present.update(dict.fromkeys(added, cur.number))
