"""Tests for netmon.cluster.features: hand-built columns -> expected feature values."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from netmon.cluster.features import (
    FEATURE_NAMES,
    PORT_BUCKET_NAMES,
    columns_from_views,
    feature_names,
    features,
    port_buckets,
    server_ports,
)
from netmon.core.values import PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_SYN
from netmon.flows.table import FlowTable


def _cols(**over: object) -> dict[str, np.ndarray]:
    """Columns of three flows: a TCP download, a UDP lookup, an ICMP echo pair."""
    cols = {
        "flow_id": [1, 2, 3],
        "proto": [PROTO_TCP, PROTO_UDP, PROTO_ICMP],
        "port_a": [40000, 50000, 0],
        "port_b": [80, 53, 0],
        "pkts_a2b": [10, 1, 3],
        "bytes_a2b": [700, 72, 294],
        "pkts_b2a": [20, 1, 3],
        "bytes_b2a": [30000, 136, 294],
        "first": [100.0, 100.0, 100.0],
        "last": [102.0, 100.005, 101.0],
        "syn": [1, 0, 0], "synack": [1, 0, 0], "fin": [2, 0, 0], "rst": [0, 0, 0],
        "psh": [15, 0, 0],
        "size_mean": [1023.3, 104.0, 98.0],
        "size_std": [500.0, 32.0, 0.0],
        "iat_mean": [0.1, 0.005, 0.2],
        "iat_std": [0.05, 0.0, 0.0],
        "first_sizes": [[74, -74, 66, 120, -66, -1500, 66, -1500],
                        [72, -136, 0, 0, 0, 0, 0, 0],
                        [98, -98, 98, -98, 98, -98, 0, 0]],
    }
    cols.update(over)
    return {k: np.asarray(v) for k, v in cols.items()}


def col(x: np.ndarray, name: str) -> np.ndarray:
    return x[:, FEATURE_NAMES.index(name)]


def test_shape_names_and_dtype() -> None:
    x = features(_cols())
    assert x.shape == (3, len(FEATURE_NAMES))
    assert x.dtype == np.float64
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert features(_cols(), ports=False).shape == (3, len(feature_names(ports=False)))
    assert not any(n.startswith("port_") for n in feature_names(ports=False))


def test_protocol_one_hot() -> None:
    x = features(_cols(proto=np.array([PROTO_TCP, PROTO_UDP, 47])))
    onehot = x[:, [FEATURE_NAMES.index(n) for n in ("is_tcp", "is_udp", "is_icmp", "is_other")]]
    assert onehot.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]


def test_volumes_duration_and_sizes() -> None:
    x = features(_cols())
    assert col(x, "log_pkts_a2b")[0] == pytest.approx(math.log1p(10))
    assert col(x, "log_bytes_b2a")[0] == pytest.approx(math.log1p(30000))
    assert col(x, "log_duration_ms").tolist() == pytest.approx(
        [math.log1p(2000), math.log1p(5), math.log1p(1000)])
    assert col(x, "log_size_a2b")[0] == pytest.approx(math.log1p(70))
    assert col(x, "log_size_b2a")[0] == pytest.approx(math.log1p(1500))
    assert col(x, "log_size_mean")[1] == pytest.approx(math.log1p(104))
    assert col(x, "log_iat_mean_ms")[2] == pytest.approx(math.log1p(200))
    assert col(x, "iat_cv").tolist() == pytest.approx([0.5, 0.0, 0.0])


def test_balance_flags_and_first_sizes() -> None:
    x = features(_cols())
    assert col(x, "byte_balance")[0] == pytest.approx((700 - 30000) / 30700)
    assert col(x, "byte_balance")[2] == 0.0
    assert col(x, "log_syn")[0] == pytest.approx(math.log1p(1))
    assert col(x, "log_fin")[0] == pytest.approx(math.log1p(2))
    assert col(x, "psh_share")[0] == pytest.approx(0.5)
    assert col(x, "first_size_1")[0] == pytest.approx(math.log1p(74))
    assert col(x, "first_size_2")[0] == pytest.approx(-math.log1p(74))
    assert col(x, "first_size_3")[1] == 0.0  # no third packet


def test_server_port_and_buckets() -> None:
    cols = _cols(port_a=np.array([443, 50000, 0]), port_b=np.array([51000, 5353, 0]))
    # The capture began mid-flow: the initiator's 443 is the service.
    assert server_ports(cols).tolist() == [443, 5353, 0]
    x = features(cols)
    buckets = x[:, len(FEATURE_NAMES) - len(PORT_BUCKET_NAMES):]
    assert buckets.sum(axis=1).tolist() == [1, 1, 0]  # ICMP: no port, no bucket
    assert col(x, "port_https")[0] == 1 and col(x, "port_dns")[1] == 1
    names = [PORT_BUCKET_NAMES[b] for b in port_buckets(np.array([22, 8080, 999, 5000, 60000]))]
    assert names == ["shell", "http", "system", "registered", "dynamic"]


def test_empty_and_zero_packet_safety() -> None:
    empty = {k: v[:0] for k, v in _cols().items()}
    assert features(empty).shape == (0, len(FEATURE_NAMES))
    zero = _cols(pkts_a2b=np.zeros(3), pkts_b2a=np.zeros(3), bytes_a2b=np.zeros(3),
                 bytes_b2a=np.zeros(3), iat_mean=np.zeros(3), iat_std=np.zeros(3))
    assert np.isfinite(features(zero)).all()


def test_columns_from_views_match_table_columns() -> None:
    a, b = socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2")
    table = FlowTable()
    records = [
        (1.0, 74, PROTO_TCP, a, 40000, b, 80, TCP_SYN),
        (1.001, 74, PROTO_TCP, b, 80, a, 40000, TCP_SYN | TCP_ACK),
        (1.002, 66, PROTO_TCP, a, 40000, b, 80, TCP_ACK),
        (1.01, 1500, PROTO_TCP, b, 80, a, 40000, TCP_ACK),
        (1.2, 66, PROTO_TCP, a, 40000, b, 80, TCP_FIN | TCP_ACK),
        (2.0, 80, PROTO_UDP, b, 5000, a, 53, 0),
        (2.01, 120, PROTO_UDP, a, 53, b, 5000, 0),
    ]
    table.add_packets(records)
    slots = table.live_slots()
    direct = table.columns(slots)
    views = table.views(slots)
    built = columns_from_views(views)
    assert built["addr_a"].tolist() == [v.addr_a for v in views]
    np.testing.assert_allclose(features(built), features(direct))
    assert built["server_name"].tolist() == direct["server_name"].tolist()
    for key in set(built) - {"addr_a", "addr_b", "server_name"}:  # the table may add more
        np.testing.assert_allclose(np.asarray(built[key], dtype=float),
                                   np.asarray(direct[key], dtype=float), err_msg=key)


_counts = hnp.arrays(np.int64, 5, elements=st.integers(0, 10**12))
_times = hnp.arrays(np.float64, 5, elements=st.floats(0, 1e9, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(pkts=_counts, byts=_counts, first=_times, last=_times, iat=_times,
       sizes=hnp.arrays(np.int64, (5, 8), elements=st.integers(-65535, 65535)),
       ports=hnp.arrays(np.int64, 5, elements=st.integers(0, 65535)),
       proto=hnp.arrays(np.int64, 5, elements=st.integers(0, 255)))
def test_any_counters_give_finite_features(pkts: np.ndarray, byts: np.ndarray,
                                           first: np.ndarray, last: np.ndarray,
                                           iat: np.ndarray, sizes: np.ndarray,
                                           ports: np.ndarray, proto: np.ndarray) -> None:
    cols = {"flow_id": np.arange(5), "proto": proto, "port_a": ports[::-1], "port_b": ports,
            "pkts_a2b": pkts, "bytes_a2b": byts, "pkts_b2a": pkts[::-1],
            "bytes_b2a": byts[::-1], "first": first, "last": last,
            **{k: pkts % 7 for k in ("syn", "synack", "fin", "rst", "psh")},
            "size_mean": iat, "size_std": iat[::-1], "iat_mean": iat, "iat_std": last,
            "first_sizes": sizes}
    x = features(cols)
    assert x.shape == (5, len(FEATURE_NAMES))
    assert np.isfinite(x).all()
