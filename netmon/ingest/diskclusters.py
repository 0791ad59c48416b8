"""Which cluster each flow on the on-disk ring belongs to: the ring's ``.clus`` files.

A flow's packets sit in the ring's segments, but its cluster is decided later (and
may change while it lives), so the ring also records, per segment, each clustering
decision made while that segment was open, as JSON lines::

    {"flow": [ids], "cluster": [ids], "labels": {"3": "TCP/443 request-response"}}

(``labels``: only clusters new to the segment or whose label changed). Reading a run's
segments in order, the last line naming a flow gives its cluster. When a flow's
packets first enter a segment, the segment also gets the flow's cluster so far
(:meth:`Memberships.joined`), so deleting the oldest segments never loses the cluster
of a flow whose packets are still kept. ``netmon packets DIR --cluster ID`` reads them
back.

Threads: :class:`Memberships` belongs to the ring's writer thread (``netmon-keep``);
:func:`read_clusters` runs on whichever thread reads a directory. What it reads is
untrusted (any file in DIR): malformed lines are skipped, labels capped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from netmon.core.text import NAME_MAX, safe_text


@dataclass(frozen=True, slots=True)
class ClusterNote:
    """Flows and the cluster each was put in, with the clusterer's labels (reactor
    thread -> writer thread; copies, never changed after). ``ended``: the flows have
    ended, this is their last word."""

    flow: np.ndarray
    cluster: np.ndarray
    labels: dict[int, str]
    ended: bool = False
    nbytes: int = 0  # holds no capture buffer: nothing counts against the queue


def _line(flows: list[int], clusters: list[int], labels: dict[int, str]) -> bytes:
    return (json.dumps({"flow": flows, "cluster": clusters,
                        "labels": {str(k): v for k, v in labels.items()}},
                       separators=(",", ":")) + "\n").encode()


class Memberships:
    """The writer's view: the newest cluster of each live flow noted (ended flows are
    forgotten once written: memory is bounded by the flow table), and the labels the
    open segment's ``.clus`` file already has."""

    def __init__(self) -> None:
        self.cluster: dict[int, int] = {}
        self._labels: dict[int, str] = {}  # every cluster's newest label
        self._written: dict[int, str] = {}  # ... as the open segment has it

    def note(self, note: ClusterNote, present: dict[int, int]) -> bytes:
        """The line to append for ``note`` (b"" when it changes nothing): for the
        flows of ``present`` (with packets on disk); the others get theirs when their
        packets do (:meth:`joined`)."""
        pairs = list(zip(note.flow.tolist(), note.cluster.tolist(), strict=True))
        self._labels.update(note.labels)
        if note.ended:
            for f, _ in pairs:
                self.cluster.pop(f, None)
        else:
            self.cluster.update(pairs)
        mine = [(f, c) for f, c in pairs if f in present]
        return self._emit([f for f, _ in mine], [c for _, c in mine])

    def joined(self, flows: list[int]) -> bytes:
        """The line for flows whose first packets the open segment just got: their
        clusters so far, so the segment names them even once older ones are gone."""
        mine = [(f, self.cluster[f]) for f in flows if f in self.cluster]
        return self._emit([f for f, _ in mine], [c for _, c in mine])

    def opened(self) -> None:
        """A new segment: it has no labels yet."""
        self._written = {}

    def _emit(self, flows: list[int], clusters: list[int]) -> bytes:
        labels = {c: self._labels[c] for c in dict.fromkeys(clusters)
                  if c in self._labels and self._written.get(c) != self._labels[c]}
        if not flows and not labels:
            return b""
        self._written.update(labels)
        return _line(flows, clusters, labels)


def read_clusters(paths: list[str]) -> tuple[dict[int, int], dict[int, str]]:
    """flow id -> cluster id and cluster id -> label, from ``.clus`` files read in
    order (later lines win). Missing files, cut or malformed lines are skipped."""
    cluster: dict[int, int] = {}
    labels: dict[int, str] = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for raw in lines:
            try:
                rec = json.loads(raw)
                flows, clusters, names = rec["flow"], rec["cluster"], rec["labels"]
                if not (isinstance(flows, list) and isinstance(clusters, list)
                        and isinstance(names, dict) and len(flows) == len(clusters)
                        and all(type(v) is int for v in flows + clusters)):
                    continue
                pairs = [(int(k), safe_text(v, NAME_MAX)) for k, v in names.items()
                         if isinstance(v, str)]
            except (ValueError, KeyError, TypeError):
                continue
            cluster.update(zip(flows, clusters, strict=True))
            labels.update(pairs)
    return cluster, labels
