"""Labels from what a cluster's members are now (netmon.cluster.profiles), and display
clusters merged by average linkage weighted by the rows each micro-cluster holds."""

from __future__ import annotations

import numpy as np

from netmon.cluster.matching import merge_micro
from netmon.cluster.online import OnlineClusterer, Tuning
from netmon.cluster.profiles import MemberProfiles


def sessions(ages: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of keystroke sessions to port 22 at the given ages (s), as the demo makes
    them: a handshake and banner, then after 0.6 s ~12 keys/s echoed with ~80 B packets."""
    n = len(ages)
    typing = np.maximum(ages - 0.6, 0.0)
    pab = (3 + np.round(12 * typing)).astype(np.int64)
    pba = (2 + np.round(7 * typing)).astype(np.int64)
    dur = np.where(ages < 0.6, 0.002, ages)
    npk = pab + pba
    iat = dur / np.maximum(npk - 1, 1)
    one = np.ones(n, dtype=np.int64)
    return {"flow_id": ids, "proto": 6 * one, "port_a": 40000 * one, "port_b": 22 * one,
            "pkts_a2b": pab, "bytes_a2b": pab * 70, "pkts_b2a": pba, "bytes_b2a": pba * 80,
            "first": np.zeros(n), "last": dur, "syn": one, "synack": one, "fin": 0 * one,
            "rst": 0 * one, "psh": npk // 2, "size_mean": (pab * 70 + pba * 80) / npk,
            "size_std": np.full(n, 8.0), "iat_mean": iat, "iat_std": iat * 0.8,
            "first_sizes": np.tile([74, -74, 66, -110, 67, -67, 67, -67], (n, 1))}


def test_a_cluster_is_named_after_what_its_members_are_now() -> None:
    # One cluster (a huge cut) of 8 sessions, learnt every tick as they grow: 8 ticks of
    # handshake, then 5.5 s of typing. The model's centroid holds every state they went
    # through and says "request-response"; the members, as they are now, are
    # interactive sessions of ~6 s.
    cl = OnlineClusterer(tuning=Tuning(merge_distance=100.0, warmup_ticks=1, warmup_min=8))
    ids = np.arange(1, 9)
    ages = [0.1 + 0.04 * k for k in range(8)] + [0.6 + 0.5 * (k + 1) for k in range(11)]
    for age in ages:
        a = cl.update(sessions(np.full(8, age) + np.linspace(0, 0.05, 8), ids))
    (cid,) = set(a.cluster_id.tolist())
    assert cl.labels() == {cid: "TCP/22 interactive"}


def test_profiles_keep_each_members_latest_row_bounded() -> None:
    p = MemberProfiles(per_cluster=4)
    assert p.mean(1) is None
    p.note(np.array([1, 1, 2]), np.array([10, 11, 20]), np.array([[1.0], [3.0], [5.0]]))
    assert p.mean(1).tolist() == [2.0] and p.members(2) == 1
    p.note(np.array([1]), np.array([10]), np.array([[7.0]]))  # flow 10 grew: its new row
    assert p.mean(1).tolist() == [5.0] and p.members(1) == 2
    p.note(np.array([-1]), np.array([12]), np.array([[99.0]]))  # not clustered yet: ignored
    assert p.members(1) == 2
    # Room for 4: the flows changed longest ago make room for newcomers.
    p.note(np.array([1, 1, 1]), np.array([13, 14, 15]), np.array([[1.0], [1.0], [1.0]]))
    assert p.members(1) == 4 and p.mean(1).tolist() == [2.5]  # 11 (3.0) left
    # More changed members than room: an even spread of them, nothing older.
    p.note(np.full(9, 1), np.arange(100, 109), np.arange(9.0)[:, None])
    assert p.members(1) == 4 and p.mean(1).tolist() == [4.0]
    p.forget(1)
    assert p.mean(1) is None and p.members(2) == 1


def test_a_flow_that_moves_leaves_its_old_clusters_sample() -> None:
    p = MemberProfiles()
    p.note(np.array([1, 1, 2]), np.array([10, 11, 20]), np.array([[1.0], [3.0], [5.0]]))
    p.note(np.array([2]), np.array([11]), np.array([[9.0]]))
    assert p.members(1) == 1 and p.mean(1).tolist() == [1.0]
    assert p.members(2) == 2 and p.mean(2).tolist() == [7.0]


def test_mean_leaves_out_what_members_do_not_have() -> None:
    # Exported flows have no per-packet timing (NaN): the mean is of those that do.
    p = MemberProfiles()
    p.note(np.array([1, 1]), np.array([1, 2]), np.array([[1.0, np.nan, np.nan],
                                                         [3.0, 4.0, np.nan]]))
    mean = p.mean(1)
    assert mean[:2].tolist() == [2.0, 4.0] and np.isnan(mean[2])


def test_weighted_merge_with_equal_weights_is_average_linkage() -> None:
    rng = np.random.default_rng(3)
    for _ in range(100):
        m = int(rng.integers(2, 40))
        centres = rng.normal(size=(int(rng.integers(1, 6)), 4)) * 4
        pts = centres[rng.integers(0, len(centres), m)] + rng.normal(size=(m, 4))
        cut = float(rng.uniform(1, 8))
        plain = merge_micro(pts, cut)
        weighted = merge_micro(pts, cut, weights=np.ones(m))
        pairs = set(zip(plain.tolist(), weighted.tolist(), strict=True))
        assert len(pairs) == len(set(plain.tolist())) == len(set(weighted.tolist()))


def test_a_light_bridge_does_not_merge_two_heavy_groups() -> None:
    # Young flows' states sit between two behaviours (a web page and a bulk download
    # both start with a handshake and a GET): one such row must not join two groups of
    # hundreds that average linkage over the rows keeps 6 apart.
    pts = np.array([[0.0], [3.0], [6.0]])
    assert merge_micro(pts, 5.0).tolist() == [0, 0, 0]
    assert len(set(merge_micro(pts, 5.0, weights=np.array([100.0, 1.0, 100.0])).tolist())) == 2
    # ...while the hysteresis band still holds last tick's decision near the cut.
    pts = np.array([[0.0], [5.5]])
    kept = merge_micro(pts, 5.0, np.array([3, 3]), 0.15, weights=np.array([9.0, 9.0]))
    assert kept.tolist() == [0, 0]
