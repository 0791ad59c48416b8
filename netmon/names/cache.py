"""A bounded, TTL-aware cache of address -> name, filled from DNS answers on the wire.

Pure module (numpy). One owner thread: the thread that feeds packets to the name
parsers (the reactor thread in netmon, which owns the flow table too); nothing here
locks. What leaves it is immutable: :class:`NameEntry` values, and the fresh numpy
array :meth:`NameCache.lookup_many` returns, so a snapshot built from them may cross
to the UI thread.

Addresses are keyed as the flow table keeps them: 16 bytes (IPv4 in the last four,
``netmon.ingest.batch.V4_PREFIX``) plus the family. Internally an IPv4 address is the
IPv4-mapped IPv6 address ``::ffff:a.b.c.d`` (the same host), held as two uint64 words,
so :meth:`lookup_many` answers many addresses (a flow table's column) with numpy: a
64-bit fold of each key is binary-searched in a sorted index (rebuilt only after the
cache changed) and both words compared, so a fold collision can never give a wrong
name (colliding keys are looked up one by one).

Bounds: at most ``max_entries`` addresses (default :data:`MAX_ENTRIES`). When full,
expired entries go first, then the least recently used ones, :data:`EVICT_FRACTION` of
the capacity at once (recency is a counter bumped by every call, so one lookup of a
whole column costs one vector store, not a list reordering). An entry expires ``ttl``
seconds after the capture time of the packet that carried it, the TTL clamped to
[:data:`TTL_MIN`, :data:`TTL_MAX`]. Memory: 334 bytes per entry measured at 100 k
entries with distinct 24-character names (tests/test_names_cache.py measures it with
tracemalloc, arrays and index included; ~33 MB at the default cap); the addresses of
one answer share one name string.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netmon.names.dns import DnsMessage

#: Addresses kept by default (~33 MB at the measured 334 bytes per entry).
MAX_ENTRIES = 100_000
#: TTLs are clamped: a 0 or 5 s TTL (CDNs) would lose the name before the flow that
#: follows the answer is looked up; a week-long one would keep a re-used address's
#: old name for too long.
TTL_MIN = 60.0
TTL_MAX = 86_400.0
#: Share of the capacity evicted at once when the cache is full (least recently used).
EVICT_FRACTION = 1 / 16
_MAPPED = np.uint64(0xFFFF << 32)  # ::ffff:0:0/96, where an IPv4 address sits
_LOW = (1 << 64) - 1
_FOLD = np.uint64(0x9E37_79B9_7F4A_7C15)  # odd multiplier of the 64-bit fold (golden ratio)
_STRONG, _WEAK = 0, 1  # what an entry came from: an answer, or glue (authority/additional)


@dataclass(frozen=True, slots=True)
class NameEntry:
    """The name of one address: ``name`` (safe text), ``alias`` (the CDN's own name,
    or ""), ``source`` ("dns", "mdns", ...) and ``expiry`` (capture-clock seconds)."""

    name: str
    alias: str
    source: str
    expiry: float


class NameCache:
    """Address -> :class:`NameEntry`, bounded and expiring; see the module docstring."""

    def __init__(self, max_entries: int = MAX_ENTRIES, *, ttl_min: float = TTL_MIN,
                 ttl_max: float = TTL_MAX) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.ttl_min, self.ttl_max = ttl_min, ttl_max
        self._slot: dict[int, int] = {}  # 128-bit key (hi << 64 | lo) -> slot
        self._free: list[int] = []
        self._hi = np.zeros(max_entries, np.uint64)
        self._lo = np.zeros(max_entries, np.uint64)
        self._expiry = np.zeros(max_entries, np.float64)
        self._used = np.zeros(max_entries, np.int64)
        self._rank = np.zeros(max_entries, np.uint8)
        self._entries = np.full(max_entries, None, dtype=object)
        self._live = np.zeros(max_entries, bool)
        self._top = 0  # slots below this have been used at least once
        self._clock = 0
        self._index: tuple[np.ndarray, np.ndarray] | None = None  # (sorted folds, slots)
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._slot)

    def add(self, addr: bytes, family: int, name: str, source: str, ttl: float, now: float,
            *, alias: str = "", weak: bool = False) -> bool:
        """Name ``addr`` (16 bytes, IPv4 in the last four) for ``ttl`` seconds from
        ``now`` (clamped). A ``weak`` name (glue from the authority or additional
        section) never replaces an unexpired answer. True if stored."""
        key = _key(addr, family)
        if key is None:
            return False
        self._clock += 1
        expiry = now + min(max(float(ttl), self.ttl_min), self.ttl_max)
        rank = _WEAK if weak else _STRONG
        slot = self._slot.get(key)
        if slot is not None:
            if rank > self._rank[slot] and self._expiry[slot] > now:
                return False
        else:
            slot = self._take_slot(now)
            self._slot[key] = slot
            self._hi[slot], self._lo[slot] = key >> 64, key & _LOW
            self._index = None
        self._entries[slot] = NameEntry(name, alias, source, expiry)
        self._expiry[slot] = expiry
        self._live[slot] = True
        self._used[slot] = self._clock
        self._rank[slot] = rank
        return True

    def add_message(self, msg: DnsMessage, now: float, source: str | None = None) -> int:
        """Every address a parsed DNS message names; how many were stored. ``source``
        defaults to "mdns" or "dns" by the message."""
        src = source or ("mdns" if msg.mdns else "dns")
        return sum(self.add(n.addr, n.family, n.name, src, n.ttl, now, alias=n.alias,
                            weak=n.section != 0) for n in msg.names)

    def get(self, addr: bytes, family: int, now: float) -> NameEntry | None:
        """The unexpired name of one address, or None (counts as a use)."""
        key = _key(addr, family)
        slot = None if key is None else self._slot.get(key)
        if slot is None:
            return None
        if self._expiry[slot] <= now:
            self._drop(np.array([slot]))
            self.expired += 1
            return None
        self._clock += 1
        self._used[slot] = self._clock
        return self._entries[slot]

    def lookup_many(self, addrs: np.ndarray, families: np.ndarray, now: float) -> np.ndarray:
        """Names of many addresses at once: ``addrs`` n x 16 uint8 (IPv4 in the last
        four bytes), ``families`` n values of 4 or 6. Returns an object array of n
        NameEntry-or-None (None: unknown or expired). Counts as a use of each found."""
        n = len(addrs)
        out = np.full(n, None, dtype=object)
        if n == 0 or not self._slot:
            return out
        words = np.ascontiguousarray(addrs, dtype=np.uint8).view(">u8").reshape(n, 2)
        hi = words[:, 0].astype(np.uint64)
        lo = words[:, 1].astype(np.uint64)
        v4 = np.asarray(families) == 4
        hi[v4] = 0
        lo[v4] = (lo[v4] & np.uint64(0xFFFF_FFFF)) | _MAPPED
        folds, slots = self._sorted_index()
        q = _fold(hi, lo)
        pos = np.minimum(np.searchsorted(folds, q), len(folds) - 1)
        cand = slots[pos]
        hit = (folds[pos] == q) & (self._hi[cand] == hi) & (self._lo[cand] == lo)
        # A fold shared by two keys: the search found one of them; look the rest up.
        for i in np.flatnonzero((folds[pos] == q) & ~hit):
            slot = self._slot.get(int(hi[i]) << 64 | int(lo[i]))
            if slot is not None:
                cand[i], hit[i] = slot, True
        hit &= self._expiry[cand] > now
        found = cand[hit]
        self._clock += 1
        self._used[found] = self._clock
        out[hit] = self._entries[found]
        return out

    def expire(self, now: float) -> int:
        """Drop every entry expired at ``now``; how many went."""
        live = np.flatnonzero(self._live[: self._top])
        gone = live[self._expiry[live] <= now]
        self._drop(gone)
        self.expired += len(gone)
        return len(gone)

    # -- internals ------------------------------------------------------------------
    def _take_slot(self, now: float) -> int:
        if not self._free and self._top < self.max_entries:
            self._top += 1
            return self._top - 1
        if not self._free:
            if self.expire(now) == 0:
                live = np.flatnonzero(self._live[: self._top])
                k = max(1, int(self.max_entries * EVICT_FRACTION))
                oldest = live[np.argpartition(self._used[live], k - 1)[:k]] \
                    if k < len(live) else live
                self._drop(oldest)
                self.evicted += len(oldest)
        return self._free.pop()

    def _drop(self, slots: np.ndarray) -> None:
        for slot in slots.tolist():
            del self._slot[int(self._hi[slot]) << 64 | int(self._lo[slot])]
            self._free.append(slot)
        self._entries[slots] = None
        self._live[slots] = False
        if len(slots):
            self._index = None

    def _sorted_index(self) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            slots = np.fromiter(self._slot.values(), np.int64, len(self._slot))
            folds = _fold(self._hi[slots], self._lo[slots])
            order = np.argsort(folds, kind="stable")
            self._index = (folds[order], slots[order])
        return self._index


def _fold(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (hi * _FOLD) ^ lo


def _key(addr: bytes, family: int) -> int | None:
    """One int per address (a tuple of two words would cost ~80 bytes more)."""
    if len(addr) != 16 or family not in (4, 6):
        return None
    if family == 4:
        return int.from_bytes(addr[12:], "big") | (0xFFFF << 32)
    return int.from_bytes(addr, "big")
