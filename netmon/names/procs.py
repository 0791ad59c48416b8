"""Which local process owns a flow's socket: the answer (:class:`ProcessInfo`), the
immutable table look-ups read (:class:`ProcessTable`), and the thread that keeps it
fresh (:class:`ProcessResolver`).

Threads: a :class:`ProcessResolver` runs a :class:`~netmon.names.procscan.ProcessScanner`
on a worker thread of its own ("netmon-procs"), the scanner's one owner. Each refresh
publishes a new :class:`ProcessTable` by replacing one attribute; any thread (the
reactor, in netmon) reads ``resolver.table`` and looks up with dict look-ups, never
waiting for a scan. :meth:`ProcessResolver.request_refresh` is how a look-up that
found nothing for a NEW flow asks for an early refresh (an ``Event.set``; refreshes
are at most one per ``min_interval``), which catches most short-lived processes:
their sockets are read while they still exist, and a socket seen once keeps its owner
for ``grace`` seconds after it or its process is gone, so late packets still count.

Nothing found is an explicit :data:`UNKNOWN` (pid 0), so totals per process add up.
Replays have no processes: callers simply do not build a resolver for them.

Cost: :mod:`netmon.names.procscan` has the numbers of ``python -m netmon.bench
procs`` (refreshes of tens to hundreds of ms at 300 processes and thousands of sockets,
on the resolver's thread; look-ups of 1-4 us on the caller's).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from netmon.names.proctext import ANY, TCP, UDP, local_key, parse_ss, tuple_key

__all__ = ["TCP", "UDP", "UNKNOWN", "ProcessInfo", "ProcessResolver", "ProcessTable",
           "table_from_ss"]


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """The process that owns a socket: pid, name (comm, or the executable's name when
    comm is cut short), user name (or uid as text), container / cgroup label
    (``docker:0123456789ab``, ``sshd.service``, ``""`` at the root) and network
    namespace id (the inode of ``/proc/<pid>/ns/net``). Text fields are capped and
    safe for display."""

    pid: int
    name: str
    user: str = ""
    container: str = ""
    netns: int = 0

    @property
    def known(self) -> bool:
        return self.pid > 0


#: The answer when no process matches: the "unknown" bucket.
UNKNOWN = ProcessInfo(pid=0, name="unknown")


@dataclass(frozen=True)
class ProcessTable:
    """Socket owners at one moment; never changed after it is built (a refresh
    publishes a new one), so any thread may read it.

    ``connected`` maps :func:`tuple_key` to the owner of each connected socket (TCP
    established and the rest, connected UDP); ``bound`` maps :func:`local_key` to the
    owner of each listening TCP or unconnected UDP socket. Both include sockets gone
    less than the grace period ago.
    """

    connected: dict[bytes, ProcessInfo] = field(default_factory=dict)
    bound: dict[bytes, ProcessInfo] = field(default_factory=dict)
    #: Counts for the status line and the benchmark.
    sockets: int = 0
    processes: int = 0
    namespaces: int = 0
    #: Increases with every refresh: a caller re-tries unknown flows when it changes.
    generation: int = 0

    def lookup(self, proto: int, local: bytes, lport: int, remote: bytes,
               rport: int) -> ProcessInfo:
        """Owner of the local end ``local:lport`` of a flow with ``remote:rport``: the
        connected socket of that 4-tuple, else a socket listening / bound on that
        address and port, else on the wildcard address and port, else UNKNOWN."""
        return self._find(tuple_key(proto, local, lport, remote, rport))

    def owners(self, flow_key: bytes) -> tuple[ProcessInfo, ProcessInfo]:
        """(owner of the lo end, owner of the hi end) of a flow key in
        ``netmon.flows.keys.KEY_DTYPE`` layout; both are known for a flow between
        two local processes on loopback, UNKNOWN where the end is not local."""
        k = flow_key
        return (self._find(k[0:1] + k[2:38]),
                self._find(k[0:1] + k[20:38] + k[2:20]))

    def _find(self, key: bytes) -> ProcessInfo:
        hit = self.connected.get(key)
        if hit is None:
            hit = self.bound.get(key[:19])
            if hit is None:
                hit = self.bound.get(key[:1] + ANY + key[17:19], UNKNOWN)
        return hit


def table_from_ss(text: str, generation: int = 0) -> ProcessTable:
    """A table from ``ss -tunp`` output (``-a`` adds listening and unconnected
    sockets): how an ``--ssh`` source attributes flows on a host where ``ss`` runs.
    ss gives pid and name only (user, container and namespace stay empty); a socket
    that several processes share goes to the lowest pid (the parent, as a rule)."""
    connected: dict[bytes, ProcessInfo] = {}
    bound: dict[bytes, ProcessInfo] = {}
    rows = parse_ss(text)
    pids = set()
    for row in rows:
        if not row.processes:
            continue
        pid, name = min(row.processes)
        pids.add(pid)
        info = ProcessInfo(pid=pid, name=name)
        if row.remote == ANY and row.rport == 0:
            bound.setdefault(local_key(row.proto, row.local, row.lport), info)
        else:
            connected.setdefault(
                tuple_key(row.proto, row.local, row.lport, row.remote, row.rport), info)
    return ProcessTable(connected, bound, sockets=len(rows), processes=len(pids),
                        generation=generation)


class ProcessResolver:
    """Keeps a :class:`ProcessTable` fresh on a thread of its own.

    ``scan`` is the refresh (a :meth:`ProcessScanner.refresh`, called only on the
    resolver's thread); a refresh runs every ``period`` seconds and early on
    :meth:`request_refresh`, but never twice within ``min_interval``. ``stop`` joins
    the thread and raises what a refresh raised (a programming error is not lost);
    errors reading /proc files never get that far (a process that exits mid-scan is
    normal, the scanner skips it).
    """

    def __init__(self, scan: Callable[[], ProcessTable], period: float = 2.0,
                 min_interval: float = 0.2) -> None:
        self._scan = scan
        self._period = period
        self._min_interval = min_interval
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.table = ProcessTable()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="netmon-procs", daemon=True)

    def start(self) -> ProcessResolver:
        self._thread.start()
        return self

    def request_refresh(self) -> None:
        """Ask for a refresh soon (any thread; cheap; repeated calls merge)."""
        self._wake.set()

    def lookup(self, proto: int, local: bytes, lport: int, remote: bytes,
               rport: int) -> ProcessInfo:
        """Look up in the current table; an unknown answer asks for a refresh, so the
        caller should call this once per new flow (and again when ``table.generation``
        changed), not per packet."""
        hit = self.table.lookup(proto, local, lport, remote, rport)
        if not hit.known:
            self._wake.set()
        return hit

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                self.table = self._scan()
                # The rate limit: however often refreshes are asked for.
                if self._stopping.wait(self._min_interval):
                    break
                self._wake.wait(max(self._period - self._min_interval, 0.0))
        except BaseException as exc:  # kept for stop(): the thread must not die silently
            self.error = exc

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.error is not None:
            raise self.error
