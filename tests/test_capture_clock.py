"""The replay clock: capture seconds played, whatever the chunking, with merged
traces' jumps and stray stamps cut out (netmon.engine.captureclock)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from netmon.engine.captureclock import CaptureClock


def played(ts: list[float], cuts: list[int], max_gap: float = 3600.0) -> CaptureClock:
    clock = CaptureClock(max_gap)
    arr = np.array(ts, dtype=np.float64)
    for part in np.split(arr, sorted(set(cuts))):
        clock.advance(part)
    return clock


def test_a_steady_capture_plays_for_its_span() -> None:
    ts = [1000.0 + 0.05 * i for i in range(41)]
    assert abs(played(ts, []).elapsed - 2.0) < 1e-9
    assert abs(played(ts, [1, 7, 40]).elapsed - 2.0) < 1e-9


def test_merged_traces_and_stray_stamps_do_not_stretch_the_clock() -> None:
    # Two traces of 10 s, years apart, and one packet stamped in 2100 in between.
    first = [1.5e9 + i for i in range(11)]
    second = [1.6e9 + i for i in range(11)]
    stray = [4.1e9]
    clock = played(first + stray + second, [5, 12])
    assert abs(clock.elapsed - 20.0) < 1e-6
    assert clock.cuts == 1  # into the stray stamp; back from it is a backward step


def test_time_going_backwards_counts_nothing() -> None:
    clock = played([100.0, 101.0, 50.0, 51.0, 52.0], [2])
    assert abs(clock.elapsed - 3.0) < 1e-9  # 1 s, then back, then 2 s


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 5000, allow_nan=False), min_size=1, max_size=60),
       st.lists(st.integers(0, 60), max_size=6))
def test_any_chunking_gives_the_same_clock(gaps: list[float], cuts: list[int]) -> None:
    ts = list(np.cumsum(gaps) * np.where(np.arange(len(gaps)) % 7 == 3, -1, 1))
    whole = played(ts, [])
    parts = played(ts, [c for c in cuts if c <= len(ts)])
    assert abs(whole.elapsed - parts.elapsed) < 1e-6 * max(1.0, whole.elapsed)
    assert whole.cuts == parts.cuts
    assert 0.0 <= whole.elapsed <= np.clip(np.diff(ts), 0, None).sum() + 1e-6
