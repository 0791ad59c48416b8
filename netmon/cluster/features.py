"""Per-flow feature vectors for behavioural clustering, vectorised over many flows.

Pure module (numpy only): it runs in whichever thread calls it, which in netmon is the
thread doing the clustering work for a tick (the reactor thread or the one worker the
engine hands a tick to). Nothing here keeps state.

Input is the column dict of :meth:`netmon.flows.table.FlowTable.columns` (initiator "a"
orientation), or the same built from finished flows by :func:`columns_from_views`.
Output is a float64 matrix, one row per flow, columns named by :data:`FEATURE_NAMES`
(or :func:`feature_names` with ``ports=False``). Counts and sizes are log1p-scaled so
a 10 GB download and a 10 kB page differ by a few units, not by six orders of
magnitude; times are taken in milliseconds before log1p so sub-second differences
count. Binary indicators (protocol, port bucket) stay 0/1: the clusterer weighs them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from netmon.core.values import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, FlowView

# A flow's features hold as many leading packet sizes (signed by direction) as the
# flow table keeps: FIRST_SIZES comes from there.
from netmon.flows.keys import FIRST_SIZES

#: Server-port buckets: well-known services by name, then the IANA ranges. Ports of one
#: service's usual alternatives share a bucket (80/8080, 53/5353, 22/2222).
PORT_BUCKETS: tuple[tuple[str, frozenset[int]], ...] = (
    ("dns", frozenset({53, 5353, 5355, 853})),
    ("http", frozenset({80, 8000, 8008, 8080, 8888})),
    ("https", frozenset({443, 8443})),
    ("shell", frozenset({22, 23, 2222, 3389, 5900})),
    ("mail", frozenset({25, 110, 143, 465, 587, 993, 995})),
    ("time", frozenset({123})),
    ("dhcp", frozenset({67, 68, 546, 547})),
    ("smb", frozenset({135, 137, 138, 139, 445})),
    ("media", frozenset({1935, 3478, 5004, 5005, 5060, 5061})),
)
#: Names of every bucket, in feature order: the services, then the ranges.
PORT_BUCKET_NAMES = (*(name for name, _ in PORT_BUCKETS), "system", "registered", "dynamic")

_BASE_NAMES = (
    "is_tcp", "is_udp", "is_icmp", "is_other",
    "log_pkts_a2b", "log_pkts_b2a", "log_bytes_a2b", "log_bytes_b2a",
    "log_duration_ms", "log_size_a2b", "log_size_b2a", "log_size_mean", "log_size_std",
    "log_iat_mean_ms", "log_iat_std_ms",
    "iat_cv", "byte_balance", "log_syn", "log_synack", "log_fin", "log_rst", "psh_share",
    *(f"first_size_{i}" for i in range(1, FIRST_SIZES + 1)),
)

#: Column names of :func:`features` with ``ports=True`` (the default).
FEATURE_NAMES: tuple[str, ...] = (*_BASE_NAMES, *(f"port_{b}" for b in PORT_BUCKET_NAMES))

#: Features a flow built from exported records (NetFlow/IPFIX) cannot have: they need
#: each packet's size or time. :func:`features` gives NaN there; the clusterer puts
#: NaN at the scaler's mean, so only what is known pulls an exported flow anywhere.
#: Exported flows keep: protocol, packets, bytes and mean size each way, duration,
#: the mean gap (span / packets), byte balance, TCP flags seen, the service port.
EXPORT_UNKNOWN: tuple[str, ...] = (
    "log_size_std", "log_iat_std_ms", "iat_cv", "psh_share",
    *(f"first_size_{i}" for i in range(1, FIRST_SIZES + 1)),
)
_UNKNOWN_IDX = np.array([_BASE_NAMES.index(n) for n in EXPORT_UNKNOWN])

#: Features that are 0/1 indicators: scaling leaves them alone (see netmon.cluster.online).
BINARY_FEATURES = frozenset(n for n in FEATURE_NAMES if n.startswith(("is_", "port_")))

# Bucket index per port number, built once: a table lookup beats per-flow branching.
_BUCKET_OF = np.empty(65536, dtype=np.int8)
_BUCKET_OF[:1024] = len(PORT_BUCKETS)  # system
_BUCKET_OF[1024:49152] = len(PORT_BUCKETS) + 1  # registered
_BUCKET_OF[49152:] = len(PORT_BUCKETS) + 2  # dynamic
for _i, (_, _ports) in enumerate(PORT_BUCKETS):
    _BUCKET_OF[list(_ports)] = _i
_BUCKET_OF[0] = -1  # no port: no bucket

#: Linux hands out source ports from 32768 up: a port there is a client's, mostly.
EPHEMERAL_START = 32768


def feature_names(*, ports: bool = True) -> tuple[str, ...]:
    """Names of the columns :func:`features` returns for this ``ports`` setting."""
    return FEATURE_NAMES if ports else _BASE_NAMES


def server_ports(cols: dict[str, np.ndarray]) -> np.ndarray:
    """The service port of each flow: the responder's port, unless only the initiator's
    looks like a service (the capture began mid-flow and saw the server speak first)."""
    pa = np.asarray(cols["port_a"], dtype=np.int64)
    pb = np.asarray(cols["port_b"], dtype=np.int64)
    swap = (pb >= EPHEMERAL_START) & (pa < EPHEMERAL_START) & (pa > 0)
    return np.where(swap, pa, pb)


def port_buckets(ports: np.ndarray) -> np.ndarray:
    """Bucket index (into :data:`PORT_BUCKET_NAMES`) per port; -1 for port 0."""
    return _BUCKET_OF[np.clip(np.asarray(ports, dtype=np.int64), 0, 65535)].astype(np.int64)


def _log_ms(seconds: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(seconds, 0.0) * 1000.0)


def features(cols: dict[str, np.ndarray], *, ports: bool = True) -> np.ndarray:
    """Feature matrix (n flows x ``len(feature_names(ports=ports))``), float64."""
    proto = np.asarray(cols["proto"], dtype=np.int64)
    n = len(proto)
    out = np.zeros((n, len(feature_names(ports=ports))), dtype=np.float64)
    if not n:
        return out

    def f(key: str) -> np.ndarray:
        return np.asarray(cols[key], dtype=np.float64)
    out[:, 0] = proto == PROTO_TCP
    out[:, 1] = proto == PROTO_UDP
    out[:, 2] = (proto == PROTO_ICMP) | (proto == PROTO_ICMPV6)
    out[:, 3] = out[:, :3].sum(axis=1) == 0
    pab, pba, bab, bba = f("pkts_a2b"), f("pkts_b2a"), f("bytes_a2b"), f("bytes_b2a")
    out[:, 4] = np.log1p(pab)
    out[:, 5] = np.log1p(pba)
    out[:, 6] = np.log1p(bab)
    out[:, 7] = np.log1p(bba)
    out[:, 8] = _log_ms(f("last") - f("first"))
    # Mean packet size each way: unlike the totals it does not grow with a flow's age.
    out[:, 9] = np.log1p(bab / np.maximum(pab, 1.0))
    out[:, 10] = np.log1p(bba / np.maximum(pba, 1.0))
    out[:, 11] = np.log1p(f("size_mean"))
    out[:, 12] = np.log1p(f("size_std"))
    iat_mean, iat_std = f("iat_mean"), f("iat_std")
    out[:, 13] = _log_ms(iat_mean)
    out[:, 14] = _log_ms(iat_std)
    # Coefficient of variation of the gaps: ~0 for a constant-rate stream, ~1 for
    # Poisson-like arrivals, more for bursts; undefined (0) before the third packet.
    out[:, 15] = np.where(iat_mean > 0, np.minimum(iat_std / np.maximum(iat_mean, 1e-12), 5.0),
                          0.0)
    total = bab + bba
    out[:, 16] = np.where(total > 0, (bab - bba) / np.maximum(total, 1.0), 0.0)
    out[:, 17] = np.log1p(f("syn"))
    out[:, 18] = np.log1p(f("synack"))
    out[:, 19] = np.log1p(f("fin"))
    out[:, 20] = np.log1p(f("rst"))
    out[:, 21] = f("psh") / np.maximum(pab + pba, 1.0)
    fs = np.zeros((n, FIRST_SIZES), dtype=np.float64)
    given = np.asarray(cols["first_sizes"], dtype=np.float64).reshape(n, -1)[:, :FIRST_SIZES]
    fs[:, :given.shape[1]] = given
    out[:, 22:22 + FIRST_SIZES] = np.sign(fs) * np.log1p(np.abs(fs))
    if ports:
        bucket = port_buckets(server_ports(cols))
        # A port says what service a flow used only once the flow did use it: a TCP
        # flow of 4 packets or fewer (a probe, a refused or unanswered connection)
        # carries its port at a quarter, so a scan over thousands of ports stays one
        # behaviour while services apart by port stay apart.
        probe = (proto == PROTO_TCP) & (pab + pba <= 4)
        has = bucket >= 0
        out[np.flatnonzero(has), len(_BASE_NAMES) + bucket[has]] = np.where(probe[has], 0.25,
                                                                            1.0)
    exported = cols.get("exported")
    if exported is not None and np.any(exported):
        out[np.ix_(np.flatnonzero(exported), _UNKNOWN_IDX)] = np.nan
    return out


_VIEW_INT = ("flow_id", "proto", "port_a", "port_b", "pkts_a2b", "bytes_a2b", "pkts_b2a",
             "bytes_b2a", "syn", "synack", "fin", "rst", "psh")
_VIEW_FLOAT = ("size_mean", "size_std", "iat_mean", "iat_std")


def columns_from_views(views: Sequence[FlowView]) -> dict[str, np.ndarray]:
    """The :meth:`FlowTable.columns` dict built from flow views (e.g. finished flows),
    plus ``addr_a``/``addr_b`` as object arrays of address strings; of the names, the
    server name (and ``named``)."""
    n = len(views)
    cols: dict[str, np.ndarray] = {
        k: np.fromiter((getattr(v, k) for v in views), dtype=np.int64, count=n)
        for k in _VIEW_INT}
    for k in _VIEW_FLOAT:
        cols[k] = np.fromiter((getattr(v, k) for v in views), dtype=np.float64, count=n)
    cols["first"] = np.fromiter((v.first_epoch for v in views), dtype=np.float64, count=n)
    cols["last"] = np.fromiter((v.last_epoch for v in views), dtype=np.float64, count=n)
    sizes = np.zeros((n, FIRST_SIZES), dtype=np.int64)
    for i, v in enumerate(views):
        fs = v.first_sizes[:FIRST_SIZES]
        sizes[i, :len(fs)] = fs
    cols["first_sizes"] = sizes
    cols["addr_a"] = np.array([v.addr_a for v in views], dtype=object)
    cols["addr_b"] = np.array([v.addr_b for v in views], dtype=object)
    # Names, for the clusters' labels (not a feature).
    cols["server_name"] = np.array([v.server_name for v in views] + [None],
                                   dtype=object)[:n]
    cols["named"] = cols["server_name"] != ""
    return cols
