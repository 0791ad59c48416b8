"""The listener source: a hardened TCP server whose every connection becomes a record.

Runs on the reactor thread (the sockets are bound on the main thread, in the
constructor, so "port in use" is one clear line before anything starts). Each
accepted connection is counted, its first bytes are classified
(:mod:`netmon.sources.firstbytes`) and, when it ends, one
:class:`~netmon.core.values.ConnectionRecord` goes to the engine's record sink; open
connections are also reported (with running totals) a few times a second so they
appear as live flows. The engine accounts records in the same FlowTable as
captured TCP flows (:meth:`netmon.flows.table.FlowTable.add_connections`).

Hardening: the server never writes to a connection (no echo, no banner), never
interprets what it reads beyond the classifier, and never logs per connection;
limits on open connections (global and per source address), idle time, lifetime
and bytes per connection end connections with a reset, and every refusal is
counted in :meth:`ListenerSource.status`, not logged. Payload is dropped as it is
read; only a 64-byte prefix is kept while the connection is open, and it leaves
as an escaped preview.
"""

from __future__ import annotations

import ipaddress
import resource
import socket
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet import error as terror

from netmon.core.errors import SourceError
from netmon.core.sourcestats import ListenerStats
from netmon.core.values import ConnectionRecord, SourceStatus
from netmon.flows.keys import FIRST_SIZES
from netmon.sources.base import ConnectionSink, EngineSinks, Sink, Source
from netmon.sources.firstbytes import FirstBytes
from netmon.sources.sockets import bind_listening_socket

# How a connection ended (ConnectionRecord.end_reason; "" while it is open).
END_CLIENT_CLOSED = "client-closed"
END_RESET = "reset"
END_IDLE = "idle-timeout"
END_BYTE_CAP = "byte-cap"
END_CONN_CAP = "connection-cap"
END_LIFETIME = "lifetime-cap"
END_STOPPED = "stopped"

#: Finished records are handed on in batches of this many (or at each sweep).
RECORD_BATCH = 512
#: Seconds between sweeps (timeouts, reports of open connections).
SWEEP = 0.25


@dataclass(frozen=True)
class ListenLimits:
    """What one listener accepts; every limit ends connections with a reset."""

    max_connections: int = 1000
    """Open connections at once, all ports together; more are refused."""
    max_per_source: int = 50
    """Open connections at once from one source address; more are refused."""
    idle_timeout: float = 30.0
    """A connection that sends nothing for this many seconds is closed."""
    max_bytes: int = 1_000_000
    """A connection that sends more bytes than this is closed."""
    max_lifetime: float = 300.0
    """A connection open longer than this is closed, however active."""


def _packed(host: str) -> bytes:
    """Text address -> packed bytes; IPv4-mapped IPv6 (dual-stack sockets) -> IPv4."""
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.packed


class ConnectionMeter:
    """Running totals of one connection (pure): reads, bytes, timing, first bytes.

    Reads stand in for packets: the listener sees what the kernel hands over, not
    frames. Sizes keep a sum of squares and inter-read times Welford's mean and M2,
    as the FlowTable keeps them for captured flows.
    """

    __slots__ = ("bytes_in", "dirty", "first", "iat_m2", "iat_mean", "last", "reads",
                 "sizes", "sizesq", "start")

    def __init__(self, now: float) -> None:
        self.start = now
        self.last = now
        self.bytes_in = 0
        self.reads = 0
        self.sizesq = 0.0
        self.iat_mean = 0.0
        self.iat_m2 = 0.0
        self.sizes: list[int] = []
        self.first = FirstBytes()
        #: Changed since the last report of this open connection.
        self.dirty = True

    def data(self, chunk: bytes, now: float) -> None:
        n = len(chunk)
        if self.reads:
            # Welford over the gaps between reads (the first read has none).
            gap = max(now - self.last, 0.0)
            k = self.reads  # gaps so far + 1
            delta = gap - self.iat_mean
            self.iat_mean += delta / k
            self.iat_m2 += delta * (gap - self.iat_mean)
        self.reads += 1
        self.bytes_in += n
        self.sizesq += n * n
        self.last = now
        if len(self.sizes) < FIRST_SIZES:
            self.sizes.append(n)
        self.first.feed(chunk)
        self.dirty = True

    def record(self, peer: bytes, peer_port: int, local: bytes, local_port: int,
               end: float, end_reason: str = "") -> ConnectionRecord:
        """The connection so far (``end_reason`` "" = still open; ``end`` = last activity)."""
        kind = self.first.finish() if end_reason else (self.first.kind or "")
        return ConnectionRecord(
            start=self.start, end=max(end, self.start), peer=peer, peer_port=peer_port,
            local=local, local_port=local_port, bytes_in=self.bytes_in, bytes_out=0,
            pkts_in=self.reads, pkts_out=0, end_reason=end_reason, first_class=kind,
            preview=self.first.preview, sizesq=self.sizesq, iat_mean=self.iat_mean,
            iat_m2=self.iat_m2, first_sizes=tuple(self.sizes))


class RecordingProtocol(protocol.Protocol):
    """One accepted connection: counts bytes into its meter, never writes back."""

    def __init__(self, listener: ListenerSource, peer_host: str, peer_port: int,
                 local_port: int, refused: str = "") -> None:
        self.listener = listener
        self.peer_host = peer_host
        self.peer = _packed(peer_host)
        self.peer_port = peer_port
        self.local_port = local_port
        #: Why this connection was refused at accept ("" = it was not).
        self.refused = refused
        #: Set when netmon ends the connection (a limit, or shutdown).
        self.end_reason = ""
        self.recorded = False
        self.local = b""
        self.meter = ConnectionMeter(listener.now())

    def connectionMade(self) -> None:
        self.local = _local_address(self.transport)
        if self.refused:
            self.listener.refused_connection(self)
            self.transport.abortConnection()
        else:
            self.listener.opened(self)

    def dataReceived(self, data: bytes) -> None:
        if self.end_reason:
            return
        self.meter.data(data, self.listener.now())
        if self.meter.bytes_in > self.listener.limits.max_bytes:
            self.listener.close(self, END_BYTE_CAP)

    def connectionLost(self, reason: Any = None) -> None:
        clean = reason is None or reason.check(terror.ConnectionDone) is not None
        self.listener.lost(self, END_CLIENT_CLOSED if clean else END_RESET)


class _Factory(protocol.Factory):
    noisy = False  # no log line per port start/stop

    def __init__(self, listener: ListenerSource, local_port: int) -> None:
        self.listener = listener
        self.local_port = local_port

    def buildProtocol(self, addr: Any) -> RecordingProtocol:
        refused = self.listener.admission(addr.host)
        return RecordingProtocol(self.listener, addr.host, addr.port, self.local_port,
                                 refused)


class ListenerSource(Source):
    """Listen on one or more TCP ports; every connection becomes a record."""

    kind = "listen"

    def __init__(self, addresses: Sequence[tuple[str, int]],
                 limits: ListenLimits | None = None) -> None:
        if not addresses:
            raise ValueError("at least one address to listen on")
        self.limits = limits or ListenLimits()
        self._sockets: list[socket.socket] = []
        try:
            for host, port in addresses:
                self._sockets.append(bind_listening_socket(host, port))
        except SourceError:
            self._close_sockets()
            raise
        #: Where the sockets listen, as "host:port" (port 0 resolved).
        self.addresses = tuple(_where(s) for s in self._sockets)
        super().__init__("listen " + ", ".join(self.addresses))
        self.record_sink: ConnectionSink | None = None  # the engine's (see connect)
        self.now: Callable[[], float] = lambda: 0.0
        self.max_connections = self.limits.max_connections
        self._ports: list[Any] = []
        self._open: set[RecordingProtocol] = set()
        self._per_source: dict[str, int] = {}
        self._out: list[ConnectionRecord] = []
        self._sweeper: task.LoopingCall | None = None
        self.accepted = 0
        #: The most connections open at once so far.
        self.peak_open = 0
        self.refused: Counter[str] = Counter()
        self.ended: Counter[str] = Counter()
        self.classes: Counter[str] = Counter()
        self._samples: dict[str, str] = {}  # latest escaped preview per class

    @property
    def ports(self) -> tuple[int, ...]:
        """The bound port numbers (useful with port 0)."""
        return tuple(int(a.rsplit(":", 1)[1]) for a in self.addresses)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    # ------------------------------------------------------------ lifecycle
    def connect(self, sinks: EngineSinks) -> Sink:
        self.record_sink = sinks.connections
        return super().connect(sinks)

    def _begin(self, reactor: Any) -> None:
        self.now = reactor.seconds
        self.max_connections = _room_for(self.limits.max_connections)
        for sock, port in zip(self._sockets, self.ports, strict=True):
            self._ports.append(reactor.adoptStreamPort(sock.fileno(), sock.family,
                                                       _Factory(self, port)))
        self._close_sockets()  # the reactor's ports hold their own duplicates
        self._sweeper = task.LoopingCall(self.sweep)
        self._sweeper.clock = reactor
        self._sweeper.start(min(SWEEP, self.limits.idle_timeout / 4), now=False)
        self.state = "running"

    def stop(self) -> None:
        if self._done:
            return
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        closing = [p.stopListening() for p in self._ports]
        self._ports = []
        now = self.now()
        for conn in list(self._open):
            self._record_end(conn, END_STOPPED, now)
            conn.transport.abortConnection()
        self._flush()
        self._close_sockets()
        closing = [d for d in closing if d is not None]
        if closing:
            defer.DeferredList(closing).addBoth(lambda _: self._finish(None))
        else:
            self._finish(None)

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    # ------------------------------------------------------------ connections
    def admission(self, host: str) -> str:
        """Why a new connection from ``host`` is refused, or "" to accept it."""
        if len(self._open) >= self.max_connections:
            return "global-cap"
        if self._per_source.get(host, 0) >= self.limits.max_per_source:
            return "per-source-cap"
        return ""

    def opened(self, conn: RecordingProtocol) -> None:
        self.accepted += 1
        self._open.add(conn)
        self.peak_open = max(self.peak_open, len(self._open))
        self._per_source[conn.peer_host] = self._per_source.get(conn.peer_host, 0) + 1

    def refused_connection(self, conn: RecordingProtocol) -> None:
        self.refused[conn.refused] += 1
        self._record_end(conn, END_CONN_CAP, self.now())

    def close(self, conn: RecordingProtocol, reason: str) -> None:
        """End ``conn`` for ``reason`` (a limit): a reset, recorded once it is gone."""
        if not conn.end_reason:
            conn.end_reason = reason
            conn.transport.abortConnection()

    def lost(self, conn: RecordingProtocol, reason: str) -> None:
        if conn.recorded:
            return
        self._record_end(conn, conn.end_reason or reason, self.now())

    def _record_end(self, conn: RecordingProtocol, reason: str, now: float) -> None:
        conn.recorded = True
        if conn in self._open:
            self._open.discard(conn)
            left = self._per_source[conn.peer_host] - 1
            if left:
                self._per_source[conn.peer_host] = left
            else:
                del self._per_source[conn.peer_host]
        rec = conn.meter.record(conn.peer, conn.peer_port, conn.local, conn.local_port, now,
                                reason)
        self.ended[reason] += 1
        self.classes[rec.first_class] += 1
        if rec.preview:
            self._samples[rec.first_class] = rec.preview
        self._out.append(rec)
        if len(self._out) >= RECORD_BATCH:
            self._flush()

    def sweep(self) -> None:
        """Close idle and over-age connections, report the open ones that changed."""
        now = self.now()
        idle = now - self.limits.idle_timeout
        old = now - self.limits.max_lifetime
        for conn in list(self._open):
            m = conn.meter
            if conn.end_reason:
                continue
            if m.last < idle:
                self.close(conn, END_IDLE)
            elif m.start < old:
                self.close(conn, END_LIFETIME)
            elif m.dirty:
                m.dirty = False
                self._out.append(m.record(conn.peer, conn.peer_port, conn.local,
                                          conn.local_port, m.last))
        self._flush()

    def _flush(self) -> None:
        if self._out:
            out, self._out = self._out, []
            if self.record_sink is not None:
                self.record_sink(out)

    # ------------------------------------------------------------ status
    def status(self) -> SourceStatus:
        st = super().status()
        refused = sum(self.refused.values())
        stats = ListenerStats(
            addresses=self.addresses, open=len(self._open), accepted=self.accepted,
            refused=refused, refused_reasons=tuple(sorted(self.refused.items())),
            ended=tuple(sorted(self.ended.items())),
            classes=tuple(sorted(self.classes.items())),
            samples=tuple(sorted(self._samples.items())))
        detail = st.detail or f"{len(self._open)} open, {self.accepted} accepted, {refused} refused"
        return SourceStatus(name=st.name, state=st.state, detail=detail, dropped=st.dropped,
                            listener=stats)


def _local_address(transport: Any) -> bytes:
    try:
        return _packed(transport.getHost().host)
    except (AttributeError, ValueError):  # not a TCP transport (tests)
        return bytes(4)


def _where(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def _room_for(wanted: int) -> int:
    """Raise the open-files limit for ``wanted`` connections; return what fits."""
    spare = 64  # the reactor, the capture pipes, files
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + spare
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - spare))
