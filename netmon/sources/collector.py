"""Flow-export collector: NetFlow v5, v9 and IPFIX over UDP, as a source.

Runs on the reactor thread: a Twisted ``DatagramProtocol`` on a socket bound when the
source is made (so "port in use" fails before anything starts). Each datagram goes
through :class:`netmon.netflow.decoder.NetflowDecoder`, which keeps templates per exporter and
observation domain; the decoded records go to the engine's flow-record sink tagged with
their observation point, one per exporter address and domain ("exporter 10.0.0.1",
"exporter 10.0.0.1/7" for a domain other than 0). Malformed datagrams are counted and
dropped by the decoder; nothing a sender does can stop the source: the decoder caps
the work one datagram may cause (:class:`netmon.netflow.tsets.Limits`), so with Twisted
reading at most 256 KB per reactor event the reactor keeps ticking under crafted load,
and what is not decoded is counted as ``shed``, with the datagrams the kernel dropped
because its receive buffer was full (Linux: the socket's ``drops`` in /proc/net/udp).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from twisted.internet import protocol, task

from netmon.core.sourcestats import CollectorStats
from netmon.core.values import SourceStatus
from netmon.netflow.decoder import NetflowDecoder
from netmon.sources.base import EngineSinks, FlowRecordSink, Sink, Source
from netmon.sources.sockets import bind_listening_socket

#: The port flow exporters use by default (NetFlow's customary 2055).
DEFAULT_PORT = 2055
#: Socket receive buffer asked for: exporters send in bursts (a router flushing its
#: cache), and a datagram the kernel drops is a lost record. Root may exceed rmem_max.
RCVBUF = 16 << 20
#: Exporters (address, domain) told apart; any beyond share one observation point.
MAX_EXPORTERS = 1024
#: Seconds between sweeps of data sets buffered for templates that never came.
SWEEP = 1.0


class _Protocol(protocol.DatagramProtocol):
    def __init__(self, source: CollectorSource) -> None:
        self.source = source

    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        self.source.datagram(data, addr[0])


def kernel_drops(inode: int) -> int | None:
    """Datagrams the kernel dropped for the UDP socket ``inode`` (its receive buffer was
    full), from /proc/net/udp and udp6; None where there is no such table (not Linux)."""
    want = str(inode)
    found = None
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path, encoding="ascii", errors="replace") as table:
                next(table, None)  # the column names
                for line in table:
                    cols = line.split()
                    if len(cols) >= 13 and cols[9] == want:
                        return int(cols[12])
            found = 0
        except (OSError, ValueError):
            continue
    return found


def _grow_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer (forcing past rmem_max when allowed)."""
    force = getattr(socket, "SO_RCVBUFFORCE", 33)
    for opt in (force, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
            break
        except OSError:
            continue
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


class CollectorSource(Source):
    """A UDP port receiving NetFlow v5/v9 and IPFIX export from any number of exporters."""

    kind = "collect"

    def __init__(self, host: str, port: int) -> None:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(f"collect udp {where}")
        self.host, self.port = host, port
        self._sock: socket.socket | None = bind_listening_socket(host, port, udp=True)
        self.port = self._sock.getsockname()[1]  # port 0: the one the kernel chose
        self.rcvbuf = _grow_rcvbuf(self._sock, RCVBUF)
        self.decoder = NetflowDecoder()
        self._inode = os.fstat(self._sock.fileno()).st_ino  # (the reactor's dup shares it)
        self.kernel_drops = 0  #: datagrams the kernel dropped (read each sweep)
        self.record_sink: FlowRecordSink | None = None  # the engine's (see connect)
        #: Registers an observation point by name, returns its index (the engine's).
        self.observer_id: Callable[[str], int] = lambda name: 0
        self._obs: dict[tuple[str, int], int] = {}
        self._port: Any = None
        self._sweeper: task.LoopingCall | None = None

    def connect(self, sinks: EngineSinks) -> Sink:
        self.record_sink = sinks.flow_records
        self.observer_id = sinks.observer_id
        return super().connect(sinks)

    def _begin(self, reactor: Any) -> None:
        sock = self._sock
        self._port = reactor.adoptDatagramPort(sock.fileno(), sock.family, _Protocol(self),
                                               maxPacketSize=65535)
        sock.close()  # the reactor's port holds its own duplicate
        self._sock = None
        self._sweeper = task.LoopingCall(self._sweep)
        self._sweeper.clock = reactor
        self._sweeper.start(SWEEP, now=False)
        self.state = "running"

    def datagram(self, data: bytes, exporter: str) -> None:
        for domain, records in self.decoder.decode(data, exporter, time.time()):
            if not len(records) or self.record_sink is None:
                continue
            key = (exporter, domain)
            obs = self._obs.get(key)
            if obs is None:
                if len(self._obs) >= MAX_EXPORTERS:  # a sender making up domains
                    key, name = ("", -1), "exporters beyond the first 1024"
                else:
                    name = f"exporter {exporter}" + (f"/{domain}" if domain else "")
                obs = self._obs.get(key)
                if obs is None:
                    obs = self._obs[key] = self.observer_id(name)
            self.record_sink(records, np.full(len(records), obs, dtype=np.uint16))

    def _sweep(self) -> None:
        self.decoder.expire(time.time())
        self.read_kernel_drops()

    def read_kernel_drops(self) -> None:
        """Update ``kernel_drops`` from the kernel's count for this socket."""
        drops = kernel_drops(self._inode)
        if drops is not None:
            self.kernel_drops = drops

    def stop(self) -> None:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._port is not None:
            port, self._port = self._port, None
            port.stopListening()
        self._finish(None)

    def stats(self) -> CollectorStats:
        d = self.decoder
        return CollectorStats(
            address=self.name.removeprefix("collect udp "), exporters=len(self._obs),
            datagrams=d.datagrams, records=d.records, malformed=d.malformed,
            lost=d.lost, templates=d.templates, unknown_dropped=d.unknown_dropped,
            unknown_buffered=d.unknown_buffered,
            versions=tuple(sorted(d.by_version.items())), shed=d.shed + self.kernel_drops,
            shed_reasons=tuple(sorted({**d.shed_reasons, "kernel": self.kernel_drops}.items()))
            if self.kernel_drops else tuple(sorted(d.shed_reasons.items())))

    def status(self) -> SourceStatus:
        st = self.stats()
        return SourceStatus(name=self.name, state=self.state, detail=st.summary(),
                            dropped=st.lost + st.shed, collector=st)
