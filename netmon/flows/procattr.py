"""Which process each flow belongs to: new flows looked up in a process table once per
tick, and the per-process totals (with an explicit "unknown") the snapshot carries.

Reactor thread only: :class:`ProcessAttributor` belongs to the engine, which calls
:meth:`~ProcessAttributor.attribute` once a tick (after counting, before expiry),
:meth:`~ProcessAttributor.ended` with the flows that ended before they are handed on,
and :meth:`~ProcessAttributor.totals` when it builds a snapshot. The process tables it
reads (:class:`netmon.names.procs.ProcessTable`) are immutable values other threads
publish: the local ``netmon-procs`` resolver, or what ``ss`` printed on an ``--ssh``
host; each observation point (capture) has its own.

Per tick, the flows whose ``process`` column is still unset are found with one numpy
mask; each is looked up once (a few dict look-ups), and again only when its table's
generation changed (a refresh saw new sockets), for :attr:`ProcessAttributor.window`
seconds after the first try; then it is "unknown" (pid 0) for good. A miss asks the
resolver for an early refresh, which is what catches short-lived processes.

Which end is local: the end whose 4-tuple is a connected socket in the table. When
neither is, a socket bound to the end's address and port: the initiator's (an
unconnected UDP client), else the responder's (a server's listening socket before its
accepted socket was read; while the initiator's address is local too, that answer
waits for a refresh until the window ends). A wildcard socket (``0.0.0.0:443``) only
counts for an address that is local (loopback, or seen as the local end of some
socket), so a local server on 443 does not claim flows to remote port 443. A
short-lived client gone before any refresh leaves the flow to its server's process
(``peer_process`` empty).

Both ends local (loopback, or two containers): ``process``, ``pid``, ``user`` and
``container`` are the initiator's (the client's: it opened the flow, and its bytes are
what a user asks about), ``peer_process`` the responder's name. Per-process totals
count a flow once, for its ``process``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from netmon.core.values import ProcessTotal
from netmon.flows.table import FlowTable
from netmon.names.procs import ProcessInfo, ProcessTable
from netmon.names.proctext import ANY

_V4 = bytes(12)  # the key layout's prefix of an IPv4 address
_LO6 = bytes(15) + b"\x01"  # ::1
#: Seconds after its first look-up that a flow still without a process is retried.
WINDOW = 5.0
#: The text a flow gets when no process was found within the window.
UNKNOWN_TEXT = "unknown"
#: (process, container) pairs whose totals of ended flows are kept; beyond that the
#: smallest half is folded into "other" (memory stays bounded over long runs).
ENDED_MAX = 4096
#: Processes named in a snapshot (by bytes); the rest is one "other" entry.
TOP = 10


class ProcessSource(Protocol):
    """What attribution reads: the current table, and a way to ask for a fresh one
    (:class:`netmon.names.procs.ProcessResolver` is one)."""

    table: ProcessTable

    def request_refresh(self) -> None: ...


@dataclass(slots=True)
class _Sums:
    packets: int = 0
    bytes: int = 0
    flows: int = 0

    def add(self, packets: int, nbytes: int, flows: int) -> None:
        self.packets += packets
        self.bytes += nbytes
        self.flows += flows


class ProcessAttributor:
    """Fills the table's process columns for flows seen at the observation points it
    was given a :class:`ProcessSource` for (see the module docstring)."""

    def __init__(self, table: FlowTable, window: float = WINDOW) -> None:
        self.table = table
        self.window = window
        self.sources: dict[int, ProcessSource] = {}
        # Per slot: the flow id last looked up there, at which table generation, and
        # when first (a slot is reused by later flows: the flow id tells them apart).
        self._fid = np.zeros(0, np.int64)
        self._gen = np.zeros(0, np.int64)
        self._since = np.zeros(0, np.float64)
        self._local: tuple[int, frozenset[bytes]] = (-1, frozenset())
        self._ended: dict[tuple[str, str], _Sums] = {}
        self._folded = _Sums()
        #: Counters: look-ups, flows attributed, flows given up on (unknown).
        self.lookups = 0
        self.attributed = 0
        self.unknown = 0

    def add_source(self, obs: int, source: ProcessSource) -> None:
        """Attribute the flows of observation point ``obs`` from ``source``."""
        self.sources[obs] = source

    # ------------------------------------------------------------------ per tick
    def attribute(self, now: float, final: bool = False) -> int:
        """Look up the flows still without a process; return how many got one.
        ``final`` (the run ends): one last look at each, the rest is unknown."""
        t, names = self.table, self.table.names
        if len(self._fid) < t.cap:
            self._fit(t.cap)
        todo = np.flatnonzero(t.live[:t.cap] & (names.process[:t.cap] == 0))
        done = 0
        for obs, src in self.sources.items():
            sl = todo[t.obs[todo] == obs]
            if len(sl):
                done += self._attribute(sl, src, now, final)
        return done

    def _attribute(self, sl: np.ndarray, src: ProcessSource, now: float,
                   final: bool) -> int:
        t, names = self.table, self.table.names
        ptable = src.table
        fid = t.flow_id[sl]
        first_try = self._fid[sl] != fid
        self._fid[sl] = fid
        self._since[sl[first_try]] = now
        self._gen[sl[first_try]] = -1
        fresh = self._gen[sl] != ptable.generation
        expired = (now - self._since[sl]) >= self.window
        if final:
            expired[:] = True
        # Expired flows get one last look (where a listener's answer is accepted).
        ask = fresh | expired
        look = sl[ask]
        self._gen[look] = ptable.generation
        keys, a_lo = t.keys, t.a_is_lo[look].tolist()
        found: list[int] = []
        owners: list[ProcessInfo] = []
        peers: list[ProcessInfo | None] = []
        local = self._local_addresses(ptable)
        final = expired[ask].tolist()
        for slot, alo, last in zip(look.tolist(), a_lo, final, strict=True):
            hit = _owners(ptable, keys[slot], alo, local, last)
            if hit is not None:
                found.append(slot)
                owners.append(hit[0])
                peers.append(hit[1])
        self.lookups += len(look)
        if len(found) < len(look):
            src.request_refresh()  # misses: a refresh may find their sockets
        if found:
            self._write(np.array(found, np.int64), owners, peers)
        hit = np.zeros(t.cap, np.bool_)
        hit[found] = True
        give_up = sl[expired & ~hit[sl]]
        if len(give_up):
            names.process[give_up] = names.intern(UNKNOWN_TEXT)
            self.unknown += len(give_up)
        self.attributed += len(found)
        return len(found)

    def _write(self, slots: np.ndarray, owners: list[ProcessInfo],
               peers: list[ProcessInfo | None]) -> None:
        names = self.table.names
        ids: dict[str, int] = {}

        def sid(text: str) -> int:
            got = ids.get(text)
            if got is None:
                got = ids[text] = names.intern(text)
            return got

        names.process[slots] = [sid(o.name) for o in owners]
        names.pid[slots] = [o.pid for o in owners]
        names.user[slots] = [sid(o.user) for o in owners]
        names.container[slots] = [sid(o.container) for o in owners]
        names.peer[slots] = [sid(p.name) if p is not None else 0 for p in peers]

    def _local_addresses(self, ptable: ProcessTable) -> frozenset[bytes]:
        """Addresses of this host (as the table's sockets show them), per table."""
        if self._local[0] != id(ptable):
            addrs = {k[1:17] for k in ptable.connected} | {k[1:17] for k in ptable.bound}
            self._local = (id(ptable), frozenset(addrs))
        return self._local[1]

    def _fit(self, cap: int) -> None:
        for name, dtype in (("_fid", np.int64), ("_gen", np.int64), ("_since", np.float64)):
            old = getattr(self, name)
            new = np.zeros(cap, dtype)
            new[:len(old)] = old
            setattr(self, name, new)

    # ------------------------------------------------------------------ totals
    def ended(self, chunks: Iterable[dict[str, np.ndarray]]) -> None:
        """Count flows that ended (their :meth:`FlowTable.columns`) into the totals."""
        sums = self._ended
        for cols in chunks:
            known = np.flatnonzero(cols["pid"] != 0)
            if not len(known):
                continue
            pk = (cols["pkts_a2b"] + cols["pkts_b2a"])[known].tolist()
            by = (cols["bytes_a2b"] + cols["bytes_b2a"])[known].tolist()
            for name, cont, p, b in zip(cols["process"][known].tolist(),
                                        cols["container"][known].tolist(), pk, by,
                                        strict=True):
                got = sums.get((name, cont))
                if got is None:
                    got = sums[(name, cont)] = _Sums()
                got.add(p, b, 1)
        if len(sums) > ENDED_MAX:
            small = sorted(sums, key=lambda k: sums[k].bytes)[:len(sums) // 2]
            for k in small:
                s = sums.pop(k)
                self._folded.add(s.packets, s.bytes, s.flows)

    def totals(self, top: int = TOP) -> tuple[ProcessTotal, ...]:
        """Per process (name and container) since the start: ended plus live flows;
        the ``top`` by bytes, then "other" (the rest), then "unknown" (all traffic of
        the table no process was found for), so the entries add up to the table's
        packets, bytes and flows."""
        t, names = self.table, self.table.names
        sums = {k: _Sums(s.packets, s.bytes, s.flows) for k, s in self._ended.items()}
        live = t.live_slots()
        live = live[names.pid[live] != 0]
        if len(live):
            pair = (names.process[live].astype(np.int64) << 32) | names.container[live]
            uniq, inv = np.unique(pair, return_inverse=True)
            pk = np.bincount(inv, weights=t.pkts_ab[live] + t.pkts_ba[live])
            by = np.bincount(inv, weights=t.bytes_ab[live] + t.bytes_ba[live])
            nf = np.bincount(inv)
            for u, p, b, f in zip(uniq.tolist(), pk.tolist(), by.tolist(), nf.tolist(),
                                  strict=True):
                key = (names.text(u >> 32), names.text(u & 0xFFFFFFFF))
                got = sums.get(key)
                if got is None:
                    got = sums[key] = _Sums()
                got.add(int(p), int(b), f)
        ranked = sorted(sums.items(), key=lambda kv: (-kv[1].bytes, kv[0]))
        out = [ProcessTotal(name=n, container=c, packets=s.packets, bytes=s.bytes,
                            flows=s.flows) for (n, c), s in ranked[:top]]
        other = _Sums(self._folded.packets, self._folded.bytes, self._folded.flows)
        for _, s in ranked[top:]:
            other.add(s.packets, s.bytes, s.flows)
        if other.flows:
            out.append(ProcessTotal(name="other", kind="other", packets=other.packets,
                                    bytes=other.bytes, flows=other.flows))
        known = _Sums()
        for e in out:
            known.add(e.packets, e.bytes, e.flows)
        out.append(ProcessTotal(name=UNKNOWN_TEXT, kind="unknown",
                                packets=max(t.packets - known.packets, 0),
                                bytes=max(t.bytes - known.bytes, 0),
                                flows=max(t.flows_seen - known.flows, 0)))
        return tuple(out)


def _owners(ptable: ProcessTable, key: bytes, a_is_lo: bool, local: frozenset[bytes],
            final: bool) -> tuple[ProcessInfo, ProcessInfo | None] | None:
    """(owner, the other end's owner or None) of a flow key (see the module docstring
    for which end), or None when neither end is a socket the table knows. A listening
    socket's answer while the initiator's address is local too (loopback: the client's
    own socket is probably just not read yet) waits for a refresh, until ``final``."""
    lo = key[0:1] + key[2:38]
    hi = key[0:1] + key[20:38] + key[2:20]
    client, server = (lo, hi) if a_is_lo else (hi, lo)
    conn = ptable.connected
    c, s = conn.get(client), conn.get(server)
    if c is not None:
        # A UDP server's socket is not connected: its bound one names it.
        return c, s if s is not None else _bound(ptable, server, local)
    if s is not None:
        return s, None
    # Bound sockets: an unconnected UDP client's own, else the responder's listening
    # socket (the usual reason a connected one is missing: accepted after the last
    # refresh), which waits while the initiator may be local too.
    cb, sb = _bound(ptable, client, local), _bound(ptable, server, local)
    if cb is not None:
        return cb, sb
    if sb is not None and (final or not _is_local(client[1:17], local)):
        return sb, None
    return None


def _is_local(addr: bytes, local: frozenset[bytes]) -> bool:
    """An address of this host: seen as a socket's local end, or loopback."""
    return addr in local or addr == _LO6 or (addr[:12] == _V4 and addr[12] == 127)


def _bound(ptable: ProcessTable, end: bytes, local: frozenset[bytes]) -> ProcessInfo | None:
    """The owner of a socket bound to this end's address and port, or to any address
    on that port when the address is local."""
    hit = ptable.bound.get(end[:19])
    if hit is None and _is_local(end[1:17], local):
        hit = ptable.bound.get(end[:1] + ANY + end[17:19])
    return hit
