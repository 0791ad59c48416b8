"""Tests for netmon.cluster.online, .matching and .labels: stable IDs, labels, new-behaviour
flags, determinism."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from netmon.cluster.features import FEATURE_NAMES, features
from netmon.cluster.labels import NAME_CHARS, ClusterFacts, distinct_labels, label_for
from netmon.cluster.matching import match_clusters, merge_micro
from netmon.cluster.online import Assignment, OnlineClusterer, Tuning

ROOT = Path(__file__).resolve().parent.parent

# Behaviour templates: protocol, server port, packets and bytes each way, duration,
# mean gap, gap std, flags and the first packet sizes.
KINDS = {
    "bulk": dict(proto=6, port=80, pkts=(300, 300), bytes=(20_000, 8e6), dur=3.0,
                 iat=0.01, iat_std=0.01, syn=1, synack=1, fin=2, rst=0,
                 first=[74, -74, 66, 175, -66, -32834, 66, -32834]),
    "dns": dict(proto=17, port=53, pkts=(1, 1), bytes=(72, 140), dur=0.002,
                iat=0.002, iat_std=0.0, syn=0, synack=0, fin=0, rst=0, first=[72, -140]),
    "scan": dict(proto=6, port=None, pkts=(1, 1), bytes=(74, 54), dur=0.0001,
                 iat=0.0001, iat_std=0.0, syn=1, synack=0, fin=0, rst=1, first=[74, -54]),
    "icmp": dict(proto=1, port=0, pkts=(30, 30), bytes=(2940, 2940), dur=30.0,
                 iat=0.5, iat_std=0.25, syn=0, synack=0, fin=0, rst=0,
                 first=[98, -98, 98, -98, 98, -98, 98, -98]),
    "cbr": dict(proto=17, port=5004, pkts=(1000, 0), bytes=(214_000, 0), dur=20.0,
                iat=0.02, iat_std=0.0005, syn=0, synack=0, fin=0, rst=0, first=[214] * 8),
}


def make(kind: str, n: int, rng: np.random.Generator, *, first_id: int = 0,
         grow: float = 1.0) -> dict[str, np.ndarray]:
    """Columns of ``n`` flows of ``kind`` with +-10% jitter; ``grow`` scales volumes."""
    k = KINDS[kind]
    j = np.exp(rng.normal(0, 0.1, (6, n)))
    pab = np.maximum(np.round(k["pkts"][0] * grow * j[0]), 1).astype(np.int64)
    pba = np.round(k["pkts"][1] * grow * j[1]).astype(np.int64)
    bab = np.round(k["bytes"][0] * grow * j[2]).astype(np.int64)
    bba = np.round(k["bytes"][1] * grow * j[3]).astype(np.int64)
    dur = k["dur"] * grow * j[4]
    first = rng.uniform(0, 10, n)
    port_b = (rng.integers(1, 65536, n) if k["port"] is None
              else np.full(n, k["port"], dtype=np.int64))
    sizes = np.zeros((n, 8), dtype=np.int64)
    sizes[:, :len(k["first"])] = k["first"]
    npk = np.maximum(pab + pba, 1)
    tot = (bab + bba).astype(float)
    return {
        "flow_id": np.arange(first_id, first_id + n), "proto": np.full(n, k["proto"]),
        "port_a": np.where(k["proto"] == 1, 0, rng.integers(32768, 61000, n)),
        "port_b": port_b, "pkts_a2b": pab, "bytes_a2b": bab, "pkts_b2a": pba,
        "bytes_b2a": bba, "first": first, "last": first + dur,
        **{f: np.full(n, k[f]) for f in ("syn", "synack", "fin", "rst")},
        "psh": npk // 3, "size_mean": tot / npk, "size_std": tot / npk * 0.2 * j[5],
        "iat_mean": np.full(n, k["iat"]) * j[5], "iat_std": np.full(n, k["iat_std"]),
        "first_sizes": sizes,
    }


def concat(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def tick_of(kinds: list[str], rng: np.random.Generator, per: int = 40,
            ids: dict[str, int] | None = None, grow: float = 1.0) -> dict[str, np.ndarray]:
    """One tick's changed flows: ``per`` flows of each kind, ids stable per kind."""
    ids = ids or {}
    return concat(*(make(k, per, rng, first_id=ids.get(k, 1000 * (list(KINDS).index(k) + 1)),
                         grow=grow) for k in kinds))


def truth(cols: dict[str, np.ndarray]) -> np.ndarray:
    return cols["flow_id"] // 1000


def warm(kinds: list[str], ticks: int = 6, seed: int = 0, **tuning: object
         ) -> tuple[OnlineClusterer, np.random.Generator]:
    cl = OnlineClusterer(seed=seed, tuning=Tuning(**tuning))
    rng = np.random.default_rng(seed)
    for _ in range(ticks):
        cl.update(tick_of(kinds, rng))
    assert cl.warm
    return cl, rng


def ids_by_kind(cols: dict[str, np.ndarray], a: Assignment) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for t, c in zip(truth(cols).tolist(), a.cluster_id.tolist(), strict=True):
        out.setdefault(t, set()).add(c)
    return out


# ---------------------------------------------------------------------------- warm-up
def test_warmup_returns_no_ids_then_freezes_the_scaler() -> None:
    cl = OnlineClusterer(tuning=Tuning(warmup_ticks=3, warmup_min=50))
    rng = np.random.default_rng(1)
    for _ in range(2):
        a = cl.update(tick_of(["bulk", "dns"], rng))
        assert (a.cluster_id == -1).all() and not a.is_new.any()
    probe = tick_of(["bulk", "dns"], np.random.default_rng(9))
    assert (cl.assign(probe).cluster_id == -1).all()
    a = cl.update(tick_of(["bulk", "dns"], rng))
    assert cl.warm and (a.cluster_id > 0).all()
    before = cl.transform(features(probe))
    for _ in range(5):
        cl.update(tick_of(["scan", "cbr"], rng, per=200))  # a very different mix
    np.testing.assert_array_equal(cl.transform(features(probe)), before)


# ---------------------------------------------------------------------------- clusters
def test_each_behaviour_gets_its_own_cluster_and_label() -> None:
    kinds = list(KINDS)
    cl, rng = warm(kinds)
    cols = tick_of(kinds, rng)
    a = cl.update(cols)
    by_kind = ids_by_kind(cols, a)
    assert all(len(v) == 1 for v in by_kind.values()), by_kind
    assert len({next(iter(v)) for v in by_kind.values()}) == len(kinds)
    labels = cl.labels()
    named = {kinds[t - 1]: labels[next(iter(v))] for t, v in by_kind.items()}
    assert named["bulk"] == "TCP/80 bulk download"
    assert named["dns"] == "UDP/53 request-response"
    assert named["scan"] == "TCP SYN-only probes to many ports"
    assert named["icmp"] == "ICMP echo"
    assert named["cbr"] == "UDP/5004 constant-rate stream"


def test_ids_survive_centroid_drift() -> None:
    kinds = ["bulk", "icmp", "cbr", "dns"]
    cl, rng = warm(kinds)
    first = ids_by_kind(cols := tick_of(kinds, rng), cl.update(cols))
    for step in range(40):  # volumes and durations grow 3% per tick: ~3.3x overall
        cols = tick_of(kinds, rng, grow=1.03 ** step)
        assert ids_by_kind(cols, cl.update(cols)) == first, step


def test_ids_survive_reordering_of_flows_and_kinds() -> None:
    kinds = ["bulk", "dns", "scan", "icmp"]
    cl, rng = warm(kinds)
    first = ids_by_kind(cols := tick_of(kinds, rng), cl.update(cols))
    for step in range(10):
        order = list(np.random.default_rng(step).permutation(kinds))
        cols = tick_of(order, rng)
        perm = np.random.default_rng(100 + step).permutation(len(cols["flow_id"]))
        cols = {k: v[perm] for k, v in cols.items()}
        assert ids_by_kind(cols, cl.update(cols)) == first


def test_a_class_that_disappears_is_retired_and_keeps_its_id_on_return() -> None:
    cl, rng = warm(["bulk", "dns", "icmp"], retire_ticks=5)
    cols = tick_of(["bulk", "dns", "icmp"], rng)
    icmp_id = next(iter(ids_by_kind(cols, cl.update(cols))[4]))
    assert icmp_id in cl.cluster_ids()
    for _ in range(8):
        cl.update(tick_of(["bulk", "dns"], rng))
    assert icmp_id not in cl.cluster_ids()
    assert icmp_id not in cl.labels()
    cols = tick_of(["bulk", "dns", "icmp"], rng)
    assert ids_by_kind(cols, cl.update(cols))[4] == {icmp_id}
    assert icmp_id in cl.cluster_ids()


def test_new_behaviour_is_flagged_then_learnt() -> None:
    cl, rng = warm(["bulk", "dns", "icmp"])
    known_ids = set(cl.cluster_ids())
    cols = tick_of(["bulk", "dns", "icmp", "scan"], rng)
    a = cl.update(cols)
    scan = truth(cols) == 3
    assert a.is_new[scan].mean() > 0.9
    assert a.is_new[~scan].mean() < 0.05
    assert (a.outlier[scan] > a.outlier[~scan].max()).all()
    scan_ids = set(a.cluster_id[scan].tolist())
    assert len(scan_ids) == 1 and not scan_ids & known_ids
    assert cl.is_recent(next(iter(scan_ids)))
    a = cl.update(tick_of(["bulk", "dns", "icmp", "scan"], rng))
    assert a.is_new.mean() < 0.05


def test_assign_does_not_learn() -> None:
    cl, rng = warm(["bulk", "dns"])
    micro, ids = cl.micro_clusters, cl.cluster_ids()
    novel = tick_of(["scan", "cbr"], rng)
    a1 = cl.assign(novel)
    a2 = cl.assign(novel)
    assert a1.is_new.all()
    np.testing.assert_array_equal(a1.cluster_id, a2.cluster_id)
    assert cl.micro_clusters == micro and cl.cluster_ids() == ids


def test_deterministic_for_a_seed() -> None:
    def run(seed: int) -> tuple[list, dict]:
        cl = OnlineClusterer(seed=seed, tuning=Tuning(max_learn=100))
        rng = np.random.default_rng(5)
        out = []
        for i in range(12):
            kinds = list(KINDS) if i % 3 else ["bulk", "dns"]
            a = cl.update(tick_of(kinds, rng, per=60))
            out.append((a.cluster_id.tolist(), np.round(a.outlier, 12).tolist()))
        return out, cl.labels()
    assert run(3) == run(3)


def test_without_ports_labels_still_name_the_port() -> None:
    cl = OnlineClusterer(ports=False)
    rng = np.random.default_rng(2)
    for _ in range(6):
        cols = tick_of(["dns", "bulk"], rng)
        a = cl.update(cols)
    assert len(cl.names) < len(FEATURE_NAMES)
    assert sorted(cl.labels().values()) == ["TCP/80 bulk download", "UDP/53 request-response"]
    assert len(set(a.cluster_id.tolist())) == 2


def test_update_cost_at_10k_changed_flows() -> None:
    cl, rng = warm(list(KINDS))
    cols = tick_of(list(KINDS), rng, per=2000)  # 10 k flows
    cl.update(cols)
    start = time.perf_counter()
    cl.update(tick_of(list(KINDS), rng, per=2000))
    assert time.perf_counter() - start < 1.0  # ~0.03 s here; loose for slow CI


# ---------------------------------------------------------------------------- matching
def test_match_clusters_follows_drift_and_reordering() -> None:
    rng = np.random.default_rng(0)
    known = rng.normal(0, 10, (6, 5))
    moved = known + rng.normal(0, 0.2, known.shape)
    perm = rng.permutation(6)
    assert match_clusters(moved[perm], known, gate=2.0).tolist() == perm.tolist()


def test_match_clusters_gate_and_newcomers() -> None:
    known = np.array([[0.0, 0.0], [10.0, 0.0]])
    now = np.array([[10.5, 0.0], [0.0, 5.0], [0.2, 0.0]])
    assert match_clusters(now, known, gate=2.0).tolist() == [1, -1, 0]
    assert match_clusters(now[:0], known, gate=2.0).tolist() == []
    assert match_clusters(now, known[:0], gate=2.0).tolist() == [-1, -1, -1]


def test_match_clusters_prefers_the_current_cluster_over_a_vanished_one() -> None:
    known = np.array([[0.0, 0.0], [0.1, 0.0]])  # the second vanished a while ago
    now = np.array([[0.06, 0.0]])
    assert match_clusters(now, known, gate=1.0).tolist() == [1]
    assert match_clusters(now, known, gate=1.0, penalty=np.array([0.0, 0.25])).tolist() == [0]


# ---------------------------------------------------------------------------- labels
def _centroid(**over: float) -> dict[str, float]:
    c = dict.fromkeys(FEATURE_NAMES, 0.0)
    c.update(is_tcp=1.0)
    for key, value in over.items():
        c[key] = float(np.log1p(value)) if key.startswith("log_") and not key.endswith(
            "_ms") else value
    return c


def ms(seconds: float) -> float:
    return float(np.log1p(seconds * 1000))


@pytest.mark.parametrize(("centroid", "ports", "label"), [
    (_centroid(log_pkts_a2b=200, log_pkts_b2a=400, log_bytes_a2b=13_000, log_bytes_b2a=6e6,
               byte_balance=-0.99, log_synack=1, log_duration_ms=ms(4)),
     Counter({443: 30}), "TCP/443 bulk download"),
    (_centroid(log_pkts_a2b=400, log_pkts_b2a=200, log_bytes_a2b=6e6, log_bytes_b2a=13_000,
               byte_balance=0.99, log_synack=1, log_duration_ms=ms(4)),
     Counter({22: 3}), "TCP/22 bulk upload"),
    (_centroid(log_pkts_a2b=1, log_pkts_b2a=1, log_bytes_a2b=74, log_bytes_b2a=54, log_syn=1,
               log_rst=1), Counter(dict.fromkeys(range(1, 200), 1)),
     "TCP SYN-only probes to many ports"),
    (_centroid(log_pkts_a2b=2, log_pkts_b2a=0, log_bytes_a2b=148, log_syn=2),
     Counter({3389: 40}), "TCP/3389 SYN-only probes"),
    # Two packets of a connection caught mid-way (no SYN at all): not a probe.
    (_centroid(log_pkts_a2b=1, log_pkts_b2a=1, log_bytes_a2b=900, log_bytes_b2a=500,
               log_duration_ms=ms(0.05)), Counter({80: 4}), "TCP/80 request-response"),
    (_centroid(is_tcp=0, is_udp=1, log_pkts_a2b=1, log_pkts_b2a=1, log_bytes_a2b=70,
               log_bytes_b2a=150, log_duration_ms=ms(0.003)),
     Counter({53: 90, 5353: 10}), "UDP/53 request-response"),
    (_centroid(is_tcp=0, is_icmp=1, log_pkts_a2b=30, log_pkts_b2a=30, log_bytes_a2b=2940,
               log_bytes_b2a=2940), Counter(), "ICMP echo"),
    (_centroid(is_tcp=0, is_udp=1, log_pkts_a2b=1500, log_bytes_a2b=321_000,
               byte_balance=1.0, iat_cv=0.05, log_duration_ms=ms(30)),
     Counter({5004: 3}), "UDP/5004 constant-rate stream"),
    (_centroid(log_pkts_a2b=80, log_pkts_b2a=60, log_bytes_a2b=5400, log_bytes_b2a=9000,
               log_synack=1, log_duration_ms=ms(12), log_size_mean=100,
               log_iat_mean_ms=ms(0.12)), Counter({22: 5}), "TCP/22 interactive"),
    (_centroid(log_pkts_a2b=5, log_pkts_b2a=5, log_bytes_a2b=430, log_bytes_b2a=2500,
               log_synack=1, log_duration_ms=ms(0.01)),
     Counter({80: 10, 8080: 12, 8000: 9}), "TCP request-response"),
])
def test_label_rules(centroid: dict[str, float], ports: Counter, label: str) -> None:
    assert label_for(centroid, ports) == label


def test_core_imports_neither_textual_nor_twisted() -> None:
    code = ("import sys, netmon.cluster.online, netmon.cluster.features; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'twisted')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"


def test_merge_micro_cut_and_hysteresis() -> None:
    pts = np.array([[0.0, 0.0], [0.5, 0.0], [10.0, 0.0]])
    assert merge_micro(pts, 4.0).tolist() == [0, 0, 1]
    far, near = np.array([[0.0], [4.2]]), np.array([[0.0], [3.8]])
    assert len(set(merge_micro(far, 4.0).tolist())) == 2
    assert len(set(merge_micro(near, 4.0).tolist())) == 1
    # Last tick's decision stands inside the band: merged pairs stay merged a little
    # past the cut, separate pairs stay apart a little inside it, newcomers are neutral.
    assert len(set(merge_micro(far, 4.0, np.array([7, 7]), 0.15).tolist())) == 1
    assert len(set(merge_micro(near, 4.0, np.array([7, 8]), 0.15).tolist())) == 2
    assert len(set(merge_micro(near, 4.0, np.array([7, -1]), 0.15).tolist())) == 1
    assert len(set(merge_micro(np.array([[0.0], [5.0]]), 4.0, np.array([7, 7]), 0.15)
                   .tolist())) == 2


# ---------------------------------------------------------------------------- distinct labels
def _facts(**over: float) -> ClusterFacts:
    return ClusterFacts(_centroid(**over), Counter({443: 10}), peers=3)


def test_look_alike_clusters_get_labels_that_say_what_differs() -> None:
    small = _facts(log_pkts_a2b=5, log_pkts_b2a=5, log_bytes_a2b=400, log_bytes_b2a=2000,
                   log_synack=1, log_duration_ms=ms(0.2))
    big = _facts(log_pkts_a2b=8, log_pkts_b2a=12, log_bytes_a2b=900, log_bytes_b2a=60_000,
                 log_synack=1, log_duration_ms=ms(0.2))
    dns = _facts(is_tcp=0, is_udp=1, log_pkts_a2b=1, log_pkts_b2a=1, log_bytes_a2b=70,
                 log_bytes_b2a=150)
    out = distinct_labels({1: small, 2: big, 3: dns})
    assert out[1] == "TCP/443 request-response · ~2kB/flow"
    assert out[2] == "TCP/443 request-response · ~60kB/flow"
    assert out[3] == label_for(dns.centroid, dns.ports)  # nothing shares its base


def test_identical_clusters_still_differ_and_no_label_is_empty() -> None:
    same = _facts(log_pkts_a2b=5, log_pkts_b2a=5, log_bytes_a2b=400, log_bytes_b2a=2000)
    out = distinct_labels({4: same, 9: same, 2: ClusterFacts(_centroid(), Counter())})
    assert len(set(out.values())) == 3 and all(out.values())
    assert out[4].endswith("#4") and out[9].endswith("#9")


def test_dominant_names_show_capped_and_escaped() -> None:
    c = _centroid(log_pkts_a2b=5, log_pkts_b2a=5, log_bytes_a2b=400, log_bytes_b2a=2000)
    hostile = "\x1b[31mevil\x00" + "a" * 65536
    out = distinct_labels({1: ClusterFacts(c, Counter({443: 1}), names=("reddit.com",)),
                           2: ClusterFacts(c, Counter({443: 1}), names=(hostile,)),
                           3: ClusterFacts(c, Counter({443: 1}))})
    assert out[1] == "TCP/443 request-response · reddit.com"
    assert "\x1b" not in out[2] and "\x00" not in out[2] and "\\x1b[31mevil" in out[2]
    assert len(out[2]) < len(out[1]) + NAME_CHARS
    assert len(set(out.values())) == 3


def test_every_cluster_has_a_label_in_the_tick_it_appears() -> None:
    cl = OnlineClusterer(tuning=Tuning(warmup_ticks=1, warmup_min=10))
    rng = np.random.default_rng(3)
    a = cl.update(tick_of(["bulk", "dns", "scan"], rng))  # the warm-up ends here
    assert cl.warm
    labels = cl.labels()
    assert set(a.cluster_id.tolist()) <= set(labels) and all(labels.values())
    a = cl.update(tick_of(["icmp", "cbr"], rng))  # new behaviours: new clusters
    every = cl.all_labels()
    assert set(a.cluster_id.tolist()) <= set(every) and all(every.values())
    assert len(set(every.values())) == len(every)
    # A cluster the model made but no flow was assigned to is named too.
    assert set(cl._micro_ids.tolist()) <= set(every)


def test_a_single_flow_is_clustered_by_the_final_update() -> None:
    cl = OnlineClusterer()
    a = cl.update(make("bulk", 1, np.random.default_rng(0)), final=True)
    assert cl.warm and a.cluster_id[0] > 0 and cl.labels()[int(a.cluster_id[0])]
