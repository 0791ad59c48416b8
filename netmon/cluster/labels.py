"""Readable names for display clusters, from a centroid and its members' server ports,
distinct from each other.

Pure module (numpy): :func:`label_for` maps a display cluster's centroid, in raw feature
units, to a name like "TCP/443 bulk download"; :func:`distinct_labels` names a whole set
of clusters so that no two share a label: where two share protocol, port and shape, the
label goes on with what differs ("TCP/443 request-response · ~20kB/flow"). Called by
:class:`netmon.cluster.online.OnlineClusterer`, so it runs where the clusterer does:
one owner at a time, the reactor thread or one worker thread, never two at once.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from netmon.core.text import safe_text
from netmon.core.units import si
from netmon.core.values import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, proto_name

#: Longest name (a host or application name from the wire) a label shows, and how many.
NAME_CHARS = 32
NAMES_SHOWN = 2
#: Joins a label's base to what tells it apart from look-alikes.
SEP = " · "


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


@dataclass(frozen=True)
class ClusterFacts:
    """What :func:`distinct_labels` knows of one display cluster."""

    centroid: Mapping[str, float]
    """Centroid in raw feature units, keys as in :data:`netmon.cluster.features.FEATURE_NAMES`."""
    ports: Counter = field(default_factory=Counter)
    """Members' server ports -> weight."""
    peers: int = 0
    """Distinct responders among its members (0: not known)."""
    names: Sequence[str] = ()
    """Dominant names of its members' traffic, most common first (host names,
    applications: untrusted wire text, capped and escaped here). Empty until names are
    decoded from the traffic."""


def _round(v: float, digits: int) -> float:
    """``v`` to ``digits`` significant digits (0 stays 0)."""
    if v <= 0 or not math.isfinite(v):
        return 0.0
    return round(v, digits - 1 - math.floor(math.log10(v)))


def _fig(v: float, digits: int, unit: str = "") -> str:
    """"~" and ``v`` at ``digits`` significant digits, without a dangling ".0"."""
    text = si(_round(v, digits), unit)
    return "~" + re.sub(r"\.0(?=\D|$)", "", text)


def _seconds(s: float, digits: int) -> str:
    return _fig(s * 1000, digits, "ms") if _round(s, digits) < 1 else _fig(s, digits, "s")


def _quantities(c: Mapping[str, float]) -> dict[str, float]:
    pkts = float(np.expm1(c["log_pkts_a2b"]) + np.expm1(c["log_pkts_b2a"]))
    volume = float(np.expm1(c["log_bytes_a2b"]) + np.expm1(c["log_bytes_b2a"]))
    duration = float(np.expm1(c["log_duration_ms"])) / 1000
    return {"volume": volume, "duration": duration, "pkts": pkts,
            "rate": volume / duration if duration > 1e-3 else 0.0,
            "size": float(np.expm1(c["log_size_mean"]))}


#: What can tell look-alike clusters apart, in order of preference: text per cluster at a
#: precision of 1 or 2 significant digits ("" when it says nothing for that cluster).
_Discriminator = Callable[[ClusterFacts, dict[str, float], int], str]
_DISCRIMINATORS: tuple[tuple[str, _Discriminator], ...] = (
    # Cut before escaping: a 64 KB name costs no more than a short one.
    ("names", lambda f, q, d: ", ".join(safe_text(str(n)[:NAME_CHARS * 4], NAME_CHARS)
                                        for n in f.names[:NAMES_SHOWN])),
    ("volume", lambda f, q, d: f"{_fig(q['volume'], d, 'B')}/flow"),
    ("duration", lambda f, q, d: _seconds(q["duration"], d)),
    ("rate", lambda f, q, d: _fig(q["rate"], d, "B/s") if q["rate"] else ""),
    ("peers", lambda f, q, d: (f"{f.peers} peer{'s' if f.peers != 1 else ''}"
                               if f.peers else "")),
    ("pkts", lambda f, q, d: f"{_fig(q['pkts'], d)} pkts"),
    ("size", lambda f, q, d: f"{_fig(q['size'], d, 'B')} packets"),
)


def _tell_apart(group: list[int], facts: Mapping[int, ClusterFacts]) -> dict[int, str]:
    """Suffixes that make the labels of ``group`` (clusters of one base label) differ:
    the fewest discriminators, coarse figures before finer ones."""
    qs = {cid: _quantities(facts[cid].centroid) for cid in group}
    best: dict[int, tuple[str, ...]] = {cid: () for cid in group}
    for digits in (1, 2):
        texts = {name: {cid: fn(facts[cid], qs[cid], digits) for cid in group}
                 for name, fn in _DISCRIMINATORS}
        keys: dict[int, tuple[str, ...]] = {cid: () for cid in group}
        left = dict(texts)
        while len(set(keys.values())) < len(group) and left:
            gain = {name: len({keys[c] + (t[c],) for c in group}) for name, t in left.items()}
            name = max(left, key=gain.__getitem__)  # first of the best: order breaks ties
            if gain[name] <= len(set(keys.values())):
                break
            keys = {c: keys[c] + (texts[name][c],) for c in group}
            del left[name]
        if len(set(keys.values())) > len(set(best.values())):
            best = keys
        if len(set(best.values())) == len(group):
            break
    return {cid: ", ".join(t for t in best[cid] if t) for cid in group}


def distinct_labels(facts: Mapping[int, ClusterFacts]) -> dict[int, str]:
    """A label per cluster ID, never empty, no two alike: :func:`label_for`'s base,
    then, for clusters whose base another cluster shares, what differs between them
    (names first, then volume per flow, duration, rate, peers, packets, packet size);
    clusters nothing tells apart end with their ID. Names, when given, always show."""
    base = {cid: label_for(f.centroid, f.ports) for cid, f in facts.items()}
    groups: dict[str, list[int]] = {}
    for cid in sorted(base):
        groups.setdefault(base[cid], []).append(cid)
    out: dict[int, str] = {}
    for label, group in groups.items():
        extra = _tell_apart(group, facts) if len(group) > 1 else {}
        for cid in group:
            names = _DISCRIMINATORS[0][1](facts[cid], {}, 0)
            tail = extra.get(cid, "")
            if names and not tail.startswith(names):
                tail = f"{names}, {tail}" if tail else names
            out[cid] = f"{label}{SEP}{tail}" if tail else label
    seen: Counter = Counter(out.values())
    for cid in sorted(out):  # what nothing told apart: the ID does
        if seen[out[cid]] > 1:
            out[cid] = f"{out[cid]} #{cid}"
    return out
