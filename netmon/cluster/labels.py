"""Readable names for display clusters, from a centroid and its members' server ports.

Pure module (numpy): :func:`label_for` maps a display cluster's centroid, in raw feature
units, to a name like "TCP/443 bulk download". Called by
:class:`netmon.cluster.online.OnlineClusterer`, so it runs where the clusterer does:
one owner at a time, the reactor thread or one worker thread, never two at once.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from netmon.core.values import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, proto_name


def label_for(c: dict[str, float], ports: Counter) -> str:
    """A readable name from a cluster's centroid (raw feature units, keys as in
    :data:`netmon.cluster.features.FEATURE_NAMES`) and its members' server ports (port ->
    weight), e.g. "TCP/443 bulk download", "TCP SYN-only probes to many ports"."""
    proto_no = (PROTO_TCP, PROTO_UDP, PROTO_ICMP, 0)[
        int(np.argmax([c["is_tcp"], c["is_udp"], c["is_icmp"], c["is_other"]]))]
    name = proto_name(proto_no) if proto_no else "IP"
    total = sum(ports.values()) or 1.0
    port, top = ports.most_common(1)[0] if ports else (0, 0.0)
    many = len(ports) >= 10 and top < 0.5 * total
    where = f"{name}/{port}" if port and top >= 0.5 * total else name
    pkts_ab, pkts_ba = np.expm1(c["log_pkts_a2b"]), np.expm1(c["log_pkts_b2a"])
    volume = np.expm1(c["log_bytes_a2b"]) + np.expm1(c["log_bytes_b2a"])
    duration = np.expm1(c["log_duration_ms"]) / 1000
    size = np.expm1(c["log_size_mean"])
    iat = np.expm1(c["log_iat_mean_ms"]) / 1000
    balance = c["byte_balance"]
    if proto_no in (PROTO_ICMP, PROTO_ICMPV6):
        return f"{name} echo" if pkts_ba >= 0.5 * pkts_ab and abs(balance) < 0.3 \
            else f"{name} one-way"
    # SYNs seen but (mostly) no SYN-ACK: refused or unanswered connection attempts.
    # (Short flows caught mid-connection have neither and fall through.)
    if proto_no == PROTO_TCP and c["log_syn"] >= 0.35 and c["log_synack"] < 0.35 \
            and pkts_ab + pkts_ba <= 4:
        return "TCP SYN-only probes to many ports" if many else f"{where} SYN-only probes"
    if volume >= 5e5 and abs(balance) > 0.6:
        return f"{where} bulk {'download' if balance < 0 else 'upload'}"
    if pkts_ab >= 20 and pkts_ba <= 0.05 * pkts_ab and c["iat_cv"] < 0.5:
        return f"{where} constant-rate stream"
    chatty = size < 300 and iat >= 0.02 and pkts_ba > 0.2 * pkts_ab
    if proto_no == PROTO_TCP and duration >= 2.0 and chatty:
        return f"{where} interactive"
    if (pkts_ab + pkts_ba <= 24 and duration < 2.0) or (proto_no == PROTO_UDP and chatty):
        return f"{where} request-response"
    if pkts_ba <= 0.05 * pkts_ab:
        return f"{where} one-way"
    return f"{where} long-lived" if duration >= 10.0 else f"{where} mixed"
