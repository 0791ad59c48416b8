"""Replay sources: a capture file (optionally gzip-compressed) or standard input.

Runs on the reactor thread. A file is read in large chunks, yielding to the reactor
between chunks so ticks and commands keep running; ``speed`` paces records by their
capture timestamps instead. Standard input is read as a non-blocking pipe (so
``ssh host tcpdump -U -w - | netmon -r -`` streams), or as a file when it is one.
"""

from __future__ import annotations

import errno
import os
import stat
import time
import zlib
from collections import deque
from typing import Any

import numpy as np
from twisted.internet import abstract

from netmon.core.errors import EXIT_BAD_INPUT, SourceError
from netmon.core.text import NAME_MAX, safe_text
from netmon.ingest.batch import PacketBatch
from netmon.sources.base import PcapFeed, Source

CHUNK = 1 << 20
#: Paced replay never waits longer than this for the next packet: merged traces have
#: gaps of years, which a person watching does not want to sit through.
MAX_GAP_WALL = 2.0
_GZIP_MAGIC = b"\x1f\x8b"


def _open_input(path: str) -> int:
    """Open a capture file for reading or raise a one-line SourceError."""
    shown = safe_text(path, NAME_MAX)  # a file name can hold escape sequences
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SourceError(f"{shown}: no such file", EXIT_BAD_INPUT) from None
    except OSError as exc:
        raise SourceError(f"{shown}: {exc.strerror}", EXIT_BAD_INPUT) from None
    if stat.S_ISDIR(st.st_mode):
        raise SourceError(f"{shown}: is a directory, not a capture file", EXIT_BAD_INPUT)
    try:
        return os.open(path, os.O_RDONLY)
    except PermissionError:
        raise SourceError(f"{shown}: permission denied", EXIT_BAD_INPUT) from None
    except OSError as exc:
        raise SourceError(f"{shown}: {exc.strerror}", EXIT_BAD_INPUT) from None


class _Inflater:
    """Transparent gzip: captures are often stored as .pcap.gz."""

    def __init__(self) -> None:
        self._z: zlib._Decompress | None = None
        self._sniffed = False
        self.error = ""

    def __call__(self, chunk: bytes) -> bytes:
        if not self._sniffed:
            self._sniffed = True
            if chunk[:2] == _GZIP_MAGIC:
                self._z = zlib.decompressobj(wbits=31)
        if self._z is None:
            return chunk
        try:
            return self._z.decompress(chunk)
        except zlib.error as exc:
            self.error = f"corrupt gzip data ({exc})"
            self._z = None
            return b""


class FileSource(Source):
    """Replay one capture file, as fast as possible or paced by ``speed``."""

    kind = "file"

    def __init__(self, path: str, *, speed: float | None = None, fd: int | None = None,
                 name: str | None = None) -> None:
        super().__init__(name or f"file {os.path.basename(path)}")
        self.path = path
        self.speed = speed if speed and speed > 0 else None
        self._fd = fd if fd is not None else _open_input(path)
        self.feed = PcapFeed(lambda: self._sink)
        self._inflate = _Inflater()
        self._reactor = None
        self._stopping = False
        self._eof = False
        self._queue: deque[PacketBatch] = deque()  # paced replay: decoded, not yet due
        self._queued = 0  # packets in _queue
        self._base: tuple[float, float] | None = None  # (capture ts, monotonic) anchor
        self._call = None
        self._paused = False
        if self.speed:
            self.name += f" {self.speed:g}x"

    def _begin(self, reactor: Any) -> None:
        self._reactor = reactor
        self.state = "running"
        self._call = reactor.callLater(0, self._pace if self.speed else self._pump)

    def stop(self) -> None:
        self._stopping = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._close(interrupted=True)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            if self.speed:
                self._base = None  # the pause does not count: the next packet is due now
            if self._call is None and not self._done and not self._stopping:
                self._call = self._reactor.callLater(0, self._pace if self.speed else self._pump)

    # ------------------------------------------------------------ full speed
    def _read(self) -> bytes:
        try:
            raw = os.read(self._fd, CHUNK)
        except OSError as exc:
            self._fail(f"{self.path}: read error: {exc.strerror}")
            return b""
        if not raw:
            self._eof = True
            return b""
        return self._inflate(raw)

    def _pump(self) -> None:
        self._call = None
        if self._stopping:
            return
        data = self._read()
        if data:
            self.feed.data(data)
        if self._check_stream():
            return
        if self._eof:
            self._close()
            return
        if self._paused:
            return  # resume() schedules the next chunk
        # Yield to the reactor between chunks: ticks, commands and stop requests run.
        self._call = self._reactor.callLater(0, self._pump)

    # ------------------------------------------------------------ paced
    def _pace(self) -> None:
        self._call = None
        if self._stopping or self._paused:
            return  # resume() schedules the next turn
        # Queued batches (not records): they keep the frames' bytes for the frame ring.
        queue = self._queue
        while self._queued < 20000 and not self._eof:
            data = self._read()
            if data:
                batch = self.feed.decoder.feed_batch(data)
                if len(batch):
                    queue.append(batch)
                    self._queued += len(batch)
                self.feed.bytes_in += len(data)
            if self._check_stream():
                return
        now = time.monotonic()
        if queue and self._base is None:
            self._base = (float(queue[0].ts[0]), now)
        out = []
        if queue:
            base_ts, base_wall = self._base
            horizon = base_ts + (now - base_wall) * self.speed
            while queue:  # take every packet before the first one not yet due
                late = np.flatnonzero(queue[0].ts > horizon)
                if not len(late):
                    out.append(queue.popleft())
                    continue
                if late[0]:
                    out.append(queue[0].head(int(late[0])))
                    queue[0] = queue[0].tail(int(late[0]))
                break
            self._queued -= sum(len(b) for b in out)
            if queue and queue[0].ts[0] - horizon > MAX_GAP_WALL * self.speed:
                # Jump the gap: re-anchor so the next packet is due now.
                self._base = (float(queue[0].ts[0]), now)
        if out and self._sink is not None:
            self._sink(PacketBatch.concat(out))
        if not queue and self._eof:
            self._close()
            return
        delay = 0.01
        if queue and self._base is not None:
            due = self._base[1] + (float(queue[0].ts[0]) - self._base[0]) / self.speed - now
            delay = min(max(due, 0.0), 0.05)
        self._call = self._reactor.callLater(delay, self._pace)

    # ------------------------------------------------------------ endings
    def _check_stream(self) -> bool:
        """Stop on input that cannot be decoded further; True when stopped."""
        err = self.feed.error or self._inflate.error
        if not err:
            return False
        shown = safe_text(self.path, NAME_MAX)
        if self.feed.decoder.frames == 0:
            self._fail(f"{shown}: {err}")
        else:
            # Keep everything before the damage: a warning, not an abort.
            self.detail = f"stopped at damaged data after {self.feed.decoder.frames} packets: {err}"
            self._fail(f"{shown}: {err} (after {self.feed.decoder.frames} packets)")
        return True

    def _fail(self, message: str) -> None:
        self._release_fd()
        self._finish(SourceError(message, EXIT_BAD_INPUT))

    def _close(self, interrupted: bool = False) -> None:
        self.feed.end()
        self._release_fd()
        if not interrupted and self.feed.error:
            self._fail(f"{self.path}: {self.feed.error}")
            return
        if self.feed.warning:
            self.detail = self.feed.warning
        self._finish(None)

    def _release_fd(self) -> None:
        if self._fd is not None and self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1


class _PipeReader(abstract.FileDescriptor):
    """Non-blocking reader of a pipe fd on the reactor (epoll cannot watch files)."""

    def __init__(self, reactor: Any, fd: int, source: StdinSource) -> None:
        super().__init__(reactor)
        self._fd = fd
        self._source = source
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> object:
        try:
            data = os.read(self._fd, CHUNK)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINTR:
                return None
            self._source.read_failed(exc.strerror or str(exc))
            return None
        if not data:
            from twisted.internet.main import CONNECTION_DONE

            return CONNECTION_DONE
        self._source.got(data)
        return None

    def connectionLost(self, reason: object) -> None:
        super().connectionLost(reason)
        self._source.ended()


class StdinSource(Source):
    """A pcap stream on standard input (a pipe), e.g. from a remote tcpdump."""

    kind = "stdin"

    def __init__(self, fd: int = 0) -> None:
        super().__init__("stdin")
        try:
            st = os.fstat(fd)
        except OSError:
            raise SourceError("standard input is closed: pipe a capture into 'netmon -r -'",
                              EXIT_BAD_INPUT) from None
        if os.isatty(fd):
            raise SourceError("standard input is a terminal: pipe a capture into 'netmon -r -'"
                              " (e.g. ssh host sudo tcpdump -U -w - | netmon -r -)",
                              EXIT_BAD_INPUT)
        # Keep our own copy of the descriptor: the TUI may reopen fd 0 on the terminal.
        self._fd = os.dup(fd)
        self._is_file = stat.S_ISREG(st.st_mode)
        self._file: FileSource | None = None
        self._reader: _PipeReader | None = None
        self.feed = PcapFeed(lambda: self._sink)
        self._inflate = _Inflater()

    def _begin(self, reactor: Any) -> None:
        self.state = "running"
        if self._is_file:
            self._file = FileSource("stdin", fd=self._fd, name="stdin")
            self.feed = self._file.feed
            self._file.start(reactor, self._sink, lambda _src, err: self._finish_from(err))
            return
        self._reader = _PipeReader(reactor, self._fd, self)
        self._reader.startReading()

    def _finish_from(self, err: SourceError | None) -> None:
        if self._file is not None:
            self.detail = self._file.detail
        self._finish(err)

    def got(self, data: bytes) -> None:
        data = self._inflate(data)
        if data:
            self.feed.data(data)
        err = self.feed.error or self._inflate.error
        if err:
            frames = self.feed.decoder.frames
            self._stop_reader()
            self._finish(SourceError(f"stdin: {err}" + (f" (after {frames} packets)"
                                                        if frames else ""), EXIT_BAD_INPUT))

    def read_failed(self, why: str) -> None:
        self._stop_reader()
        self._finish(SourceError(f"stdin: read error: {why}", EXIT_BAD_INPUT))

    def ended(self) -> None:
        self.feed.end()
        if self.feed.error:
            self._finish(SourceError(f"stdin: {self.feed.error}", EXIT_BAD_INPUT))
            return
        if self.feed.warning:
            self.detail = self.feed.warning
        self._finish(None)

    def _stop_reader(self) -> None:
        if self._reader is not None:
            self._reader.stopReading()
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._reader = None

    def pause(self) -> None:
        if self._file is not None:
            self._file.pause()
        elif self._reader is not None:
            self._reader.stopReading()

    def resume(self) -> None:
        if self._file is not None:
            self._file.resume()
        elif self._reader is not None:
            self._reader.startReading()

    def stop(self) -> None:
        if self._file is not None:
            self._file.stop()
            return
        self._stop_reader()
        self.feed.end()
        self._finish(None)
