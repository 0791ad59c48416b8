"""What the clusterer remembers of each display cluster's members: when it last had
any, their server ports, responders and names; and the facts labels are made from.

Pure module (numpy). Owned by :class:`netmon.cluster.online.OnlineClusterer` and run
where it runs (one owner at a time, the reactor thread or one worker thread). Bounded:
ports are cut to the 256 heaviest beyond 512, responders to :data:`MAX_PEERS`, names
to :data:`MAX_NAMES`; recent ticks weigh more (each tick's counts are added to the
earlier ones times 0.9).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from netmon.cluster.features import server_ports
from netmon.cluster.labels import NAMES_SHOWN, ClusterFacts

#: Distinct responders remembered per cluster (a label says "4096 peers" beyond).
MAX_PEERS = 4096
#: Distinct sites remembered per cluster (the lightest go beyond it).
MAX_NAMES = 64
_DECAY = 0.9


def site_of(name: str) -> str:
    """The part of a host name a person recognises: "i.redd.it" -> "redd.it",
    "www.bbc.co.uk" -> "bbc.co.uk"; other text as it is."""
    labels = name.rstrip(".").split(".")
    if len(labels) <= 2 or not all(labels):
        return name
    # A country's second-level domain ("co.uk", "com.au"): keep one label more.
    keep = 3 if len(labels[-1]) == 2 and len(labels[-2]) <= 3 else 2
    return ".".join(labels[-keep:])


class MemberBook:
    """Per display cluster ID: last tick with members, server ports, responders, names."""

    def __init__(self) -> None:
        self.last_seen: dict[int, int] = {}
        self._ports: dict[int, Counter] = {}
        self._peers: dict[int, set[int]] = {}  # responders' address digests (bounded)
        self._names: dict[int, Counter] = {}

    def note(self, ids: np.ndarray, cols: dict[str, np.ndarray], tick: int) -> None:
        """The flows in ``cols`` are members of clusters ``ids`` at ``tick``."""
        if not len(ids):
            return
        uniq, inv = np.unique(ids, return_inverse=True)
        inv = inv.reshape(-1)
        pairs, counts = np.unique(inv * 65536 + server_ports(cols), return_counts=True)
        peers = _responders(cols)
        names = _names(cols, inv)
        for j, cid in enumerate(uniq.tolist()):
            self.last_seen[cid] = tick
            seen = self._ports.setdefault(cid, Counter())
            for p in seen:
                seen[p] *= _DECAY  # recent ports count more
            sel = pairs // 65536 == j
            for p, c in zip((pairs[sel] % 65536).tolist(), counts[sel].tolist(), strict=True):
                seen[p] += c
            if len(seen) > 512:
                self._ports[cid] = Counter(dict(seen.most_common(256)))
            if peers is not None:
                known = self._peers.setdefault(cid, set())
                if len(known) < MAX_PEERS:
                    known.update(np.unique(peers[inv == j])[:MAX_PEERS - len(known)].tolist())
            if cid in self._names or j in names:
                book = self._names.setdefault(cid, Counter())
                for site in book:
                    book[site] *= _DECAY
                book.update(names.get(j, ()))
                if len(book) > MAX_NAMES:
                    self._names[cid] = Counter(dict(book.most_common(MAX_NAMES // 2)))

    def facts(self, cid: int, centroid: dict[str, float]) -> ClusterFacts:
        """What :func:`netmon.cluster.labels.distinct_labels` needs of cluster ``cid``."""
        names = self._names.get(cid)
        top = tuple(s for s, _ in names.most_common(NAMES_SHOWN)) if names else ()
        return ClusterFacts(centroid, self._ports.get(cid, Counter()),
                            len(self._peers.get(cid, ())), top)

    def forget(self, cid: int) -> None:
        for d in (self.last_seen, self._ports, self._peers, self._names):
            d.pop(cid, None)


def _responders(cols: dict[str, np.ndarray]) -> np.ndarray | None:
    """Each flow's responder: its address digest (``host_b``) or, for columns built
    from flow views, its address text; None when the columns have neither."""
    for key in ("host_b", "addr_b"):
        if key in cols:
            return np.asarray(cols[key])
    return None


def _names(cols: dict[str, np.ndarray], inv: np.ndarray) -> dict[int, Counter]:
    """Per cluster position, its named members' sites this tick (only named rows are
    looked at: a Python loop over them, not over every flow)."""
    if "server_name" not in cols or "named" not in cols:
        return {}
    out: dict[int, Counter] = {}
    server = cols["server_name"]
    for i in np.flatnonzero(cols["named"]).tolist():
        name = server[i]
        if name:
            out.setdefault(int(inv[i]), Counter())[site_of(name)] += 1
    return out
