"""Reading ``/proc`` to find which process owns each socket, incrementally, in every
network namespace.

Owned by one thread: the :class:`~netmon.names.procs.ProcessResolver`'s worker
("netmon-procs"), or a test calling :meth:`ProcessScanner.refresh` itself.

How (bandwhich and nethogs do the same): the socket tables ``net/{tcp,tcp6,udp,udp6}``
give each socket's endpoints and inode; the links in ``/proc/<pid>/fd`` name the
inodes a process holds (``socket:[12345]``). Sockets of other network namespaces
(containers) are not in netmon's own tables: the pids are grouped by the inode of
``/proc/<pid>/ns/net``, and one live member's ``/proc/<pid>/net/tcp`` (which shows
its namespace's sockets) is read per namespace. When one 4-tuple is in two
namespaces, netmon's own namespace wins (that is where it captures).

Incremental: the socket tables are read whole each time (only new lines are decoded);
walking every process's fds costs in proportion to all open files, so it runs only
when a socket's inode has no known owner, visits first the processes new since the
last walk, then those that were last seen opening sockets, then the rest, and stops as
soon as every new inode is placed. An inode that a whole walk could not place (a
process we may not read, a socket in flight) is hunted again only after ``rehunt``
seconds. Process details (name, user, cgroup) are read once per process and again
every ``info_ttl`` seconds (a process may rename itself).

Measured with ``python -m netmon.bench procs`` on this machine (2 vCPUs shared with
other jobs, load average 3 to 11 during the runs, hence ranges; Linux 6.18, Python
3.11): 300 extra processes each holding 11 loopback TCP sockets, 3.5 k to 8 k sockets
in the tables with TIME_WAITs, one namespace. Cold refresh (every fd link and every
owner's details read) 165-510 ms; nothing new 36-130 ms (mostly the kernel writing
/proc/net/tcp, ~6 us a socket here, and splitting its lines); 50 new sockets in a busy
process 48-190 ms; a new process 100-250 ms; a new socket in an idle process (the
whole fd walk) 130-320 ms. Baselines in the same runs: ``psutil.net_connections()``
97-470 ms, ``ss -tunap`` 80-250 ms. Look-ups: 1.3-4 us for one end, ~2 us for both
ends of a flow key. At the resolver's default period (2 s) the steady cost is 2-6 %
of one core, in slices the GIL's switch interval (5 ms) interleaves with the reactor.
Faster would be netlink sock_diag instead of /proc/net (not done).
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass

from netmon.names.procs import ProcessInfo, ProcessTable
from netmon.names.proctext import (
    TCP,
    UDP,
    LineMemo,
    SocketLine,
    cgroup_path,
    container_label,
    parse_proc_net,
    process_name,
)

#: The socket tables read per namespace, with their protocol.
TABLES = (("tcp", TCP), ("tcp6", TCP), ("udp", UDP), ("udp6", UDP))
#: Bytes read of one /proc file (a socket table of 100 k sockets is ~15 MB; more
#: than this many is cut, the rest unattributed rather than netmon stalling).
READ_CAP = 32 << 20
#: Processes whose details are cached, most recent first (bounded memory).
MRU_MAX = 256


@dataclass(slots=True)
class _Held:
    """A socket seen in a refresh: its line, namespace, owner, last time seen."""

    line: SocketLine
    netns: int
    owner: ProcessInfo | None
    seen: float


class ProcessScanner:
    """Builds :class:`ProcessTable` s from ``proc`` (``/proc``); keeps sockets that
    disappeared for ``grace`` seconds with their last owner; re-reads a process's
    details after ``info_ttl`` seconds; see the module docstring for ``rehunt``."""

    def __init__(self, proc: str = "/proc", grace: float = 30.0, info_ttl: float = 10.0,
                 rehunt: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.proc = proc
        self.grace = grace
        self.info_ttl = info_ttl
        self.rehunt = rehunt
        self.clock = clock
        self._owner: dict[int, int] = {}  # inode -> pid (first seen holding it)
        # Inodes a whole fd walk did not find -> when; hunted again after rehunt.
        self._unplaceable: dict[int, float] = {}
        self._info: dict[int, tuple[float, ProcessInfo]] = {}  # pid -> (read at, info)
        self._walked: set[int] = set()  # pids whose fds a walk read
        self._recent: list[int] = []  # pids that last gained sockets, newest first
        self._held: dict[tuple[int, int, bytes], _Held] = {}
        self._users: dict[int, str] = {}
        self._generation = 0
        self._last: ProcessTable | None = None
        # Parsed lines of the last read of each (namespace, table), to decode only
        # new sockets (see parse_proc_net).
        self._memos: dict[tuple[int, str], LineMemo] = {}
        self.own_netns = self._netns("self")

    # -- one refresh -----------------------------------------------------------

    def refresh(self) -> ProcessTable:
        """Read the socket tables and place new sockets; the previous table again
        (same generation) when nothing a look-up sees has changed."""
        now = self.clock()
        pids = self._pids()
        namespaces = self._namespaces(pids)
        memos: dict[tuple[int, str], LineMemo] = {}
        lines: list[tuple[SocketLine, int]] = []
        for ns, members in namespaces.items():
            lines += [(line, ns) for line in self._socket_lines(ns, members, memos)]
        self._memos = memos
        inodes = {line.inode for line, _ in lines if line.inode}
        alive = set(pids)
        self._owner = {i: p for i, p in self._owner.items() if i in inodes and p in alive}
        self._unplaceable = {i: t for i, t in self._unplaceable.items()
                             if i in inodes and now - t < self.rehunt}
        missing = inodes - self._owner.keys() - self._unplaceable.keys()
        if missing:
            self._walk_fds(pids, missing)
        self._walked &= alive
        for pid in [p for p in self._info if p not in alive]:
            del self._info[pid]
        changed = False
        for line, ns in lines:
            pid = self._owner.get(line.inode) if line.inode else None
            owner = self._process(pid, ns, now) if pid else None
            held = self._held.get((line.inode, line.key))
            if held is None:
                self._held[(line.inode, line.key)] = _Held(line, ns, owner, now)
                changed = changed or owner is not None
            else:
                held.seen = now
                # A socket whose holder exited (passed on, or held by a process we
                # may not read) keeps the owner it had.
                if owner is not None and owner != held.owner:
                    held.owner = owner
                    changed = True
        before = len(self._held)
        self._held = {k: h for k, h in self._held.items() if now - h.seen <= self.grace}
        if changed or len(self._held) != before or self._last is None:
            self._generation += 1
            self._last = self._table(len(namespaces))
        return self._last

    def _table(self, namespaces: int) -> ProcessTable:
        connected: dict[bytes, ProcessInfo] = {}
        bound: dict[bytes, ProcessInfo] = {}
        # setdefault keeps the first: sockets seen in this refresh win over ones in
        # their grace period (a 4-tuple reused), netmon's own namespace (where it
        # captures) over other namespaces.
        order = sorted(self._held.values(),
                       key=lambda h: (-h.seen, h.netns != self.own_netns))
        pids = set()
        for h in order:
            if h.owner is None:
                continue
            pids.add(h.owner.pid)
            if h.line.bound:
                bound.setdefault(h.line.key[:19], h.owner)
            else:
                connected.setdefault(h.line.key, h.owner)
        return ProcessTable(connected, bound, sockets=len(self._held), processes=len(pids),
                            namespaces=namespaces, generation=self._generation)

    # -- reading /proc ---------------------------------------------------------

    def _pids(self) -> list[int]:
        try:
            return [int(n) for n in os.listdir(self.proc) if n.isdigit()]
        except OSError:
            return []

    def _netns(self, pid: int | str) -> int:
        try:
            link = os.readlink(f"{self.proc}/{pid}/ns/net")  # "net:[4026531840]"
        except OSError:
            return 0
        return _bracketed(link)

    def _namespaces(self, pids: list[int]) -> dict[int, list[int | str]]:
        groups: dict[int, list[int | str]] = {self.own_netns: ["self"]}
        for pid in pids:
            ns = self._netns(pid)
            if ns and ns != self.own_netns:
                groups.setdefault(ns, []).append(pid)
        return groups

    def _socket_lines(self, ns: int, members: list[int | str],
                      memos: dict[tuple[int, str], LineMemo]) -> list[SocketLine]:
        # Any live member shows the namespace's tables; the first may exit meanwhile.
        for pid in members[:8]:
            out: list[SocketLine] = []
            for name, proto in TABLES:
                try:
                    text = _read(f"{self.proc}/{pid}/net/{name}")
                except OSError:
                    if name == "tcp":
                        break  # this member is gone: try the next
                    continue  # tcp6 and udp6 are absent where IPv6 is off
                seen: LineMemo = {}
                out += parse_proc_net(text, proto, memo=self._memos.get((ns, name)),
                                      seen=seen)
                memos[(ns, name)] = seen
            else:
                return out
        return []

    def _walk_fds(self, pids: list[int], missing: set[int]) -> None:
        pidset = set(pids)
        # New processes first (few per refresh, and a new socket is often theirs),
        # then the ones that last gained sockets, then the rest.
        new = [p for p in pids if p not in self._walked]
        recent = [p for p in self._recent if p in pidset]
        seen: set[int] = set()
        for pid in (*new, *recent, *pids):
            if pid in seen:
                continue
            seen.add(pid)
            found = self._fd_sockets(pid)
            self._walked.add(pid)
            for inode in found:
                self._owner.setdefault(inode, pid)
            if not missing.isdisjoint(found):
                missing -= found
                self._recent = [pid, *(p for p in self._recent if p != pid)][:MRU_MAX]
                if not missing:
                    return
        now = self.clock()
        self._unplaceable.update(dict.fromkeys(missing, now))

    def _fd_sockets(self, pid: int) -> set[int]:
        base = f"{self.proc}/{pid}/fd"
        try:
            names = os.listdir(base)
        except OSError:  # gone, or not ours to read
            return set()
        out = set()
        for fd in names:
            try:
                link = os.readlink(f"{base}/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(_bracketed(link))
        return out

    def _process(self, pid: int, netns: int, now: float) -> ProcessInfo:
        cached = self._info.get(pid)
        if cached is not None and now - cached[0] < self.info_ttl:
            return cached[1]
        base = f"{self.proc}/{pid}"
        comm = _read_text(f"{base}/comm", 256)
        try:
            exe = os.readlink(f"{base}/exe")
        except OSError:
            exe = ""
        try:
            uid = os.stat(base).st_uid  # the effective uid owns /proc/<pid>
        except OSError:
            uid = -1
        container = container_label(cgroup_path(_read_text(f"{base}/cgroup", 16384)))
        info = ProcessInfo(pid=pid, name=process_name(comm, exe) or f"pid {pid}",
                           user=self._user(uid), container=container, netns=netns)
        self._info[pid] = (now, info)
        return info

    def _user(self, uid: int) -> str:
        if uid < 0:
            return ""
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name


def _bracketed(link: str) -> int:
    start, end = link.find("["), link.rfind("]")
    try:
        return int(link[start + 1:end]) if 0 <= start < end else 0
    except ValueError:
        return 0


def _read(path: str) -> str:
    with open(path, "rb") as fh:
        return fh.read(READ_CAP).decode("ascii", "replace")


def _read_text(path: str, cap: int) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(cap).decode("utf-8", "replace")
    except OSError:
        return ""
