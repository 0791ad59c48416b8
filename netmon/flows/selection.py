"""Answers to flow and host questions, vectorised over the flow table's columns.

Pure module (numpy only); runs on the thread that owns the FlowTable (the reactor
thread, through :mod:`netmon.engine.link`). Selecting, sorting and paging 100 k live flows
takes ~10-20 ms: one mask per filter term, then ``np.lexsort`` on the key columns (with
``np.partition`` first when only the top of the list is asked for), ties broken by
flow id so pages never overlap or skip a flow.
"""

from __future__ import annotations

import numpy as np

from netmon.core.link import FLOW_SORT_KEYS, FlowQuery, HostRow
from netmon.core.values import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP
from netmon.flows.filter import FILTER_COLUMNS, TEXT_WORDS, Filter
from netmon.flows.keys import KEY_DTYPE, split_key
from netmon.flows.table import FlowTable

#: Sorting needs only the top ``offset + limit`` rows in order; below this share of the
#: selection, the rest is cut off with a partition first.
_PARTIAL = 0.25
_TCP_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
_ICMP_TYPES = {0: "echo-reply", 3: "dest-unreachable", 4: "source-quench", 5: "redirect",
               8: "echo-request", 9: "router-advertisement", 10: "router-solicitation",
               11: "time-exceeded", 12: "parameter-problem", 13: "timestamp",
               14: "timestamp-reply"}
_ICMPV6_TYPES = {1: "dest-unreachable", 2: "packet-too-big", 3: "time-exceeded",
                 4: "parameter-problem", 128: "echo-request", 129: "echo-reply",
                 130: "mld-query", 131: "mld-report", 133: "router-solicitation",
                 134: "router-advertisement", 135: "neighbor-solicitation",
                 136: "neighbor-advertisement", 137: "redirect", 143: "mldv2-report"}


class QueryError(Exception):
    """A question that cannot be answered as asked (one line for the UI)."""


def flag_text(proto: int, flags: int) -> str:
    """"SYN,ACK" for TCP, "echo-request" for ICMP(v6), "" otherwise."""
    if proto == PROTO_TCP:
        return ",".join(n for bit, n in enumerate(_TCP_FLAG_NAMES) if flags >> bit & 1)
    if proto == PROTO_ICMP:
        return _ICMP_TYPES.get(flags, f"type {flags}")
    if proto == PROTO_ICMPV6:
        return _ICMPV6_TYPES.get(flags, f"type {flags}")
    return ""


def select_flows(t: FlowTable, query: FlowQuery, flt: Filter, *, paged: bool,
                 ordered: bool = True) -> tuple[np.ndarray, int]:
    """Slots of the flows ``query`` selects (live ones, and the ended ones kept unless
    it says not; its cluster, ``flt`` its compiled filter), in its order (only its
    page when ``paged``; in no order when not ``ordered``), and how many match in
    all. Raises QueryError for a bad sort column."""
    if ordered and query.sort not in FLOW_SORT_KEYS:
        raise QueryError(f"cannot sort by {query.sort!r} (one of: "
                         f"{', '.join(FLOW_SORT_KEYS)})")
    sel = t.queryable_slots() if query.ended else t.live_slots()
    if query.cluster_id is not None:
        sel = sel[t.cluster[sel] == query.cluster_id]
    if not flt.empty and len(sel):
        cols = {c: getattr(t, c)[sel] for c in FILTER_COLUMNS}
        for c in set(TEXT_WORDS.values()):
            cols[f"name_{c}"] = getattr(t.names, c)[sel]
        sel = sel[flt.mask({**cols, "observers": t.observers, "names": t.names})]
    total = len(sel)
    if not ordered:
        return sel, total
    offset = max(query.offset, 0)
    need = offset + max(query.limit, 0) if paged else total
    sel = _ordered(t, sel, query.sort, query.descending, need)
    return (sel[offset:need] if paged else sel), total


def host_rows(t: FlowTable, slots: np.ndarray,
              query: FlowQuery) -> tuple[tuple[HostRow, ...], int]:
    """One row per address among the flows in ``slots``, sorted by bytes (by packets
    when the query sorts by a packet count) and paged as the query says; and how many
    addresses there are. A row counts the flows the address is in, its distinct peers,
    the distinct server ports (each flow's responder port), and those flows' packets
    and bytes."""
    if not len(slots):
        return (), 0
    lo, hi = t.host_lo[slots], t.host_hi[slots]
    host = np.concatenate([lo, hi])
    peer = np.concatenate([hi, lo])
    a_lo = t.a_is_lo[slots]
    server = np.where(a_lo, t.port_hi[slots], t.port_lo[slots])
    server = np.concatenate([server, server])
    pk = t.pkts_ab[slots] + t.pkts_ba[slots]
    by = t.bytes_ab[slots] + t.bytes_ba[slots]
    uniq, first, inv = np.unique(host, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    nh = len(uniq)
    flows = np.bincount(inv, minlength=nh)
    packets = np.bincount(inv, weights=np.concatenate([pk, pk]), minlength=nh)
    nbytes = np.bincount(inv, weights=np.concatenate([by, by]), minlength=nh)
    peers = _distinct_per_group(inv, peer, nh)
    ports = _distinct_per_group(inv, server, nh)
    if query.sort in ("packets", "pkts_a2b", "pkts_b2a"):
        key = packets
    else:
        key = nbytes
    order = np.lexsort((uniq, -key if query.descending else key))
    offset = max(query.offset, 0)
    page = order[offset:offset + max(query.limit, 0)]
    rows = []
    n = len(slots)
    names = _responder_names(t, slots)
    for j in page.tolist():
        i = int(first[j])  # a flow this host is in, and on which side
        _, lo_text, _, hi_text, _ = split_key(t.keys[int(slots[i % n])])
        rows.append(HostRow(address=lo_text if i < n else hi_text, flows=int(flows[j]),
                            peers=int(peers[j]), ports=int(ports[j]),
                            packets=int(packets[j]), bytes=int(nbytes[j]),
                            name=names.get(int(uniq[j]), "")))
    return tuple(rows), nh


def _responder_names(t: FlowTable, slots: np.ndarray) -> dict[int, str]:
    """Address digest -> the server name of the first named flow among ``slots`` that
    address answered (names belong to responders: a client has many)."""
    ids = t.names.name[slots]
    named = np.flatnonzero(ids)
    if not len(named):
        return {}
    sl = slots[named]
    resp = np.where(t.a_is_lo[sl], t.host_hi[sl], t.host_lo[sl])
    digests, at = np.unique(resp, return_index=True)
    return {int(h): t.names.text(int(ids[named[i]]))
            for h, i in zip(digests.tolist(), at.tolist(), strict=True)}


def _sort_keys(t: FlowTable, sel: np.ndarray, name: str) -> list[np.ndarray]:
    """The sort key columns of ``name`` for the flows in ``sel``, least significant first
    (np.lexsort's order)."""
    a_lo = t.a_is_lo[sel]

    def oriented(lo_col: np.ndarray, hi_col: np.ndarray, a_side: bool) -> np.ndarray:
        lo_v, hi_v = lo_col[sel], hi_col[sel]
        return np.where(a_lo, lo_v, hi_v) if a_side else np.where(a_lo, hi_v, lo_v)

    simple = {
        "bytes": lambda: t.bytes_ab[sel] + t.bytes_ba[sel],
        "packets": lambda: t.pkts_ab[sel] + t.pkts_ba[sel],
        "pkts_a2b": lambda: oriented(t.pkts_ab, t.pkts_ba, True),
        "pkts_b2a": lambda: oriented(t.pkts_ab, t.pkts_ba, False),
        "bytes_a2b": lambda: oriented(t.bytes_ab, t.bytes_ba, True),
        "bytes_b2a": lambda: oriented(t.bytes_ab, t.bytes_ba, False),
        "first_epoch": lambda: t.first[sel],
        "last_epoch": lambda: t.last[sel],
        "duration": lambda: t.last[sel] - t.first[sel],
        # As FlowView.rate: bytes per second over the flow's life, at least a second.
        "rate": lambda: (t.bytes_ab[sel] + t.bytes_ba[sel])
        / np.maximum(t.last[sel] - t.first[sel], 1.0),
        "port_a": lambda: oriented(t.port_lo, t.port_hi, True),
        "port_b": lambda: oriented(t.port_lo, t.port_hi, False),
        "proto": lambda: t.proto[sel],
        "outlier": lambda: t.outlier[sel],
        "cluster_id": lambda: t.cluster[sel],
    }
    if name in simple:
        col = simple[name]()
        return [col.astype(np.float64 if col.dtype.kind == "f" else np.int64)]
    # addr_a / addr_b: the 16-byte addresses from the flow keys, as two big-endian words.
    keys = np.frombuffer(b"".join([t.keys[s] for s in sel.tolist()]), dtype=KEY_DTYPE)
    lo = np.frombuffer(keys["a"].tobytes(), dtype=">u8").reshape(-1, 2).astype(np.uint64)
    hi = np.frombuffer(keys["b"].tobytes(), dtype=">u8").reshape(-1, 2).astype(np.uint64)
    side = a_lo if name == "addr_a" else ~a_lo
    addr = np.where(side[:, None], lo, hi)
    return [addr[:, 1], addr[:, 0]]


def _ordered(t: FlowTable, sel: np.ndarray, name: str, descending: bool,
             need: int) -> np.ndarray:
    """``sel`` sorted by ``name`` (ties by flow id, oldest first); only the first
    ``need`` positions are guaranteed when fewer than all are needed."""
    if not len(sel) or need <= 0:
        return sel[:0]
    keys = _sort_keys(t, sel, name)
    if descending:
        keys = [~k if k.dtype.kind == "u" else -k for k in keys]
    fid = t.flow_id[sel]
    if len(keys) == 1 and need < len(sel) * _PARTIAL:
        # Everything at or below the need-th smallest key (ties included) is enough.
        k = keys[0]
        cut = np.partition(k, need - 1)[need - 1]
        cand = np.flatnonzero(k <= cut)
        order = cand[np.lexsort((fid[cand], k[cand]))]
        return sel[order[:need]]
    return sel[np.lexsort((fid, *keys))]


def _distinct_per_group(group: np.ndarray, value: np.ndarray, ngroups: int) -> np.ndarray:
    """How many distinct ``value``s each group number (0..ngroups-1) has."""
    order = np.lexsort((value, group))
    g, v = group[order], value[order]
    new = np.r_[True, (g[1:] != g[:-1]) | (v[1:] != v[:-1])]
    return np.bincount(g[new], minlength=ngroups)
