"""Reading flows out of a FlowTable: numpy columns in initiator orientation and
immutable FlowView copies.

Pure module (numpy only). One owner: the reactor thread in netmon (the engine), which
owns the FlowTable these methods read; other threads get only the copies built here.
The table counts in lo->hi key orientation; this is where counters turn around to
the initiator ("a") -> responder ("b") orientation everything downstream uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from netmon.core.values import FlowView
from netmon.flows.keys import FIRST_SIZES, key_observer, split_key


class FlowViewsMixin:
    """The read side of :class:`netmon.flows.table.FlowTable` (mixed into it; reads
    its columns, never writes them)."""

    def views(self, slots: np.ndarray | Sequence[int], reason: str = "",
              labels: dict[int, str] | None = None) -> list[FlowView]:
        """Immutable copies of the flows in ``slots`` (vectorised reads)."""
        sl = np.asarray(slots, dtype=np.int64)
        if not len(sl):
            return []
        keys = [self.keys[s] for s in sl.tolist()]
        cols = self.columns(sl)
        conns = self.connections
        listener = None
        if conns:  # listener connections: what is known of their first bytes
            listener = [c[1:] if (c := conns.get(s)) is not None and c[0] == fid else None
                        for s, fid in zip(sl.tolist(), cols["flow_id"].tolist(), strict=True)]
        out = views_from_columns(cols, keys, reason, labels, self.observers, listener)
        ended = self.ended
        if ended.count:  # kept rows of ended flows say why they ended
            kept = ended.kept[sl]
            if kept.any():
                why = ended.reasons(sl)
                out = [replace(v, end_reason=w) if w else v
                       for v, w in zip(out, why, strict=True)]
        return out

    def columns(self, slots: np.ndarray | Sequence[int]) -> dict[str, np.ndarray]:
        """Copies of the flows' counters as numpy columns, turned to initiator (a->b)
        orientation: the input of vectorised feature extraction.

        Keys: flow_id, proto, a_is_lo, port_a, port_b, pkts_a2b, bytes_a2b, pkts_b2a,
        bytes_b2a, first, last, syn, synack, fin, rst, psh, size_mean, size_std,
        iat_mean, iat_std, first_sizes (n x FIRST_SIZES, + = a->b, 0 = none),
        cluster, outlier, exported, tunnel, host_b (the responder's address digest),
        and the names (:meth:`netmon.flows.namecols.NameColumns.columns`).
        """
        sl = np.asarray(slots, dtype=np.int64)
        a_lo = self.a_is_lo[sl]
        n = self.pkts_ab[sl] + self.pkts_ba[sl]
        nf = np.maximum(n, 1).astype(np.float64)
        tot = (self.bytes_ab[sl] + self.bytes_ba[sl]).astype(np.float64)
        smean = tot / nf
        return {
            "flow_id": self.flow_id[sl],
            "proto": self.proto[sl].astype(np.int64),
            "a_is_lo": a_lo,
            "port_a": np.where(a_lo, self.port_lo[sl], self.port_hi[sl]),
            "port_b": np.where(a_lo, self.port_hi[sl], self.port_lo[sl]),
            "pkts_a2b": np.where(a_lo, self.pkts_ab[sl], self.pkts_ba[sl]),
            "bytes_a2b": np.where(a_lo, self.bytes_ab[sl], self.bytes_ba[sl]),
            "pkts_b2a": np.where(a_lo, self.pkts_ba[sl], self.pkts_ab[sl]),
            "bytes_b2a": np.where(a_lo, self.bytes_ba[sl], self.bytes_ab[sl]),
            "first": self.first[sl], "last": self.last[sl],
            "syn": self.syn[sl], "synack": self.synack[sl], "fin": self.fin[sl],
            "rst": self.rst[sl], "psh": self.psh[sl],
            "size_mean": smean,
            "size_std": np.sqrt(np.maximum(self.sizesq[sl] / nf - smean * smean, 0.0)),
            "iat_mean": self.iat_mean[sl],
            "iat_std": np.sqrt(self.iat_m2[sl] / np.maximum(n - 1, 1)),
            "first_sizes": np.where(a_lo[:, None], self.first_sizes[sl], -self.first_sizes[sl]),
            "cluster": self.cluster[sl].astype(np.int64),
            "outlier": self.outlier[sl].astype(np.float64),
            "exported": self.exported[sl],
            "tunnel": self.tunnel[sl],
            "host_b": np.where(a_lo, self.host_hi[sl], self.host_lo[sl]),
            **self.names.columns(sl),
        }

    def live_views(self) -> list[FlowView]:
        """Views of every live flow (for exports; O(live flows))."""
        return self.views(self.live_slots())


def views_from_columns(cols: dict[str, np.ndarray], keys: list[bytes], reason: str,
                       labels: dict[int, str] | None = None,
                       observers: Sequence[str] = (),
                       listener: Sequence[tuple[str, str] | None] | None = None,
                       ) -> list[FlowView]:
    """FlowViews from :meth:`FlowTable.columns` output and the flows' keys
    (``observers``: the table's observation point names, or a copy of them;
    ``listener``: per flow, (class, preview) of a listener connection's first bytes,
    None for other flows)."""
    if not keys:
        return []
    labels = labels or {}
    nobs = len(observers)
    exported = cols["exported"].tolist() if "exported" in cols else [False] * len(keys)
    tunnel = cols["tunnel"].tolist() if "tunnel" in cols else [False] * len(keys)
    npk = (cols["pkts_a2b"] + cols["pkts_b2a"]).tolist()
    names = _names(cols, len(keys))
    rows = zip(keys, cols["a_is_lo"].tolist(), cols["flow_id"].tolist(),
               cols["pkts_a2b"].tolist(), cols["bytes_a2b"].tolist(),
               cols["pkts_b2a"].tolist(), cols["bytes_b2a"].tolist(),
               cols["first"].tolist(), cols["last"].tolist(), cols["syn"].tolist(),
               cols["synack"].tolist(), cols["fin"].tolist(), cols["rst"].tolist(),
               cols["psh"].tolist(), cols["size_mean"].tolist(), cols["size_std"].tolist(),
               cols["iat_mean"].tolist(), cols["iat_std"].tolist(),
               cols["first_sizes"].tolist(), npk, cols["cluster"].tolist(),
               cols["outlier"].tolist(), exported, tunnel, names, strict=True)
    conn = listener if listener is not None else [None] * len(keys)
    out = []
    for (key, alo, fid, pab, bab, pba, bba, first, last, syn, synack, fin, rst, psh,
         sm, ss, im, is_, sizes, n, cid, score, exp, tun, named), lc in zip(rows, conn,
                                                                            strict=True):
        proto, lo, lop, hi, hip = split_key(key)
        a, pa, b, pb = (lo, lop, hi, hip) if alo else (hi, hip, lo, lop)
        out.append(FlowView(
            flow_id=fid, proto=proto, addr_a=a, port_a=pa, addr_b=b, port_b=pb,
            pkts_a2b=pab, bytes_a2b=bab, pkts_b2a=pba, bytes_b2a=bba,
            first_epoch=first, last_epoch=last, syn=syn, synack=synack, fin=fin, rst=rst,
            psh=psh, size_mean=sm, size_std=ss, iat_mean=im, iat_std=is_,
            first_sizes=() if exp else tuple(sizes[:min(n, FIRST_SIZES)]), end_reason=reason,
            cluster_id=cid if cid >= 0 else None, cluster_label=labels.get(cid, ""),
            outlier=score, observer=observers[obs] if (obs := key_observer(key)) < nobs else "",
            exported=exp, tunnel=tun, listener=lc is not None,
            first_class=lc[0] if lc else "", preview=lc[1] if lc else "", **named))
    return out


_NAME_FIELDS = ("server_name", "name_source", "app", "ja4", "ja3", "software", "process",
                "pid", "user", "container", "peer_process")
_NO_NAMES: dict = {}


def _names(cols: dict[str, np.ndarray], n: int) -> list[dict]:
    """Per row, the name fields to pass on (an empty dict for the many unnamed flows)."""
    if "named" not in cols:
        return [_NO_NAMES] * n
    out = [_NO_NAMES] * n
    for i in np.flatnonzero(cols["named"]).tolist():
        out[i] = {f: cols[f][i] if f != "pid" else int(cols[f][i]) for f in _NAME_FIELDS}
    return out

