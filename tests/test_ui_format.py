"""Pure UI helpers: number formats, sparklines, column widths, chart ticks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from netmon.core.units import duration, si
from netmon.core.values import FlowView
from netmon.ui.format import (
    clock,
    endpoint,
    flow_filter,
    flow_title,
    middle_ellipsis,
    percent,
    sparkline,
    top_ports,
)
from netmon.ui.themes import NETMON_THEMES, PALETTE_SIZE, cluster_colors, next_theme
from netmon.ui.widgets import Column, column_widths
from netmon.ui.widgets._rate_chart import ago, nice_ticks


def test_si_fits_six_columns() -> None:
    cases = {0: "0", 0.5: "0.5", 7: "7", 99.4: "99.4", 950: "950", 999.6: "1.0k",
             12_345: "12.3k", 99_960: "100k", 4.2e6: "4.2M", 1.5e12: "1.5T", -2500: "-2.5k"}
    for value, text in cases.items():
        assert si(value) == text
    for exp in range(0, 12):
        for mant in (1, 1.5, 9.99, 99.9, 999.4):
            assert len(si(mant * 10**exp)) <= 5
    assert si(1234567, "B/s") == "1.2MB/s"


def test_durations_clock_and_percent() -> None:
    assert duration(0.0123) == "12ms"
    assert duration(5) == "5.0s"
    assert duration(75) == "1m15s"
    assert duration(7384) == "2h03m"
    assert duration(200_000) == "2d07h"
    assert duration(-1) == "0ms"
    assert clock(0) == "-"
    assert len(clock(1_700_000_000.9996)) == len("00:00:00.000")
    assert percent(0.5) == "50%" and percent(0.004) == "0.4%" and percent(1) == "100%"


def test_sparkline_scales_to_its_own_maximum_and_pads() -> None:
    assert sparkline([0, 1, 2, 4], 4) == "▁▃▅█"
    assert sparkline([5, 5], 4) == "  ██"
    assert sparkline([0, 0, 0], 3) == "▁▁▁"
    assert sparkline([], 3) == "   "
    assert sparkline(list(range(100)), 8) == sparkline(list(range(92, 100)), 8)
    assert sparkline([1, 2], 0) == ""


def test_endpoints_and_ellipsis() -> None:
    assert endpoint("10.0.0.1", 443) == "10.0.0.1:443"
    assert endpoint("2001:db8::1", 443) == "[2001:db8::1]:443"
    assert endpoint("10.0.0.1", 0) == "10.0.0.1"
    assert endpoint("evil\x1b[2J", 1) == "evil\\x1b[2J:1"
    assert middle_ellipsis("2001:db8:85a3::8a2e:370:7334", 10) == "2001:…7334"
    assert middle_ellipsis("short", 10) == "short"
    assert middle_ellipsis("abc", 1) == "…"
    assert top_ports(((443, 10), (80, 2))) == "443,80" and top_ports(()) == "-"


def test_flow_title_and_filter() -> None:
    flow = FlowView(7, 6, "10.0.0.1", 51234, "192.0.2.1", 443, 1, 60, 1, 60, 0.0, 1.0)
    assert flow_title(flow) == "TCP 10.0.0.1:51234 → 192.0.2.1:443"
    assert flow_filter(flow) == ("proto tcp and host 10.0.0.1 and host 192.0.2.1 and "
                                 "port 443 and port 51234")


@given(st.lists(st.tuples(st.integers(1, 20), st.integers(0, 3), st.integers(0, 40)),
                min_size=1, max_size=10), st.integers(10, 300))
def test_column_widths_fill_the_line_when_they_can(spec, total: int) -> None:
    cols = [Column(f"c{i}", "t", w, flex=f, max_width=(w + m) if m else 0)
            for i, (w, f, m) in enumerate(spec)]
    widths = column_widths(cols, total)
    used = sum(widths) + len(cols) - 1
    assert all(w >= min(3, c.width) for w, c in zip(widths, cols, strict=True))
    natural = sum(c.width for c in cols) + len(cols) - 1
    if natural <= total:
        assert used <= total
        assert all(w >= c.width for w, c in zip(widths, cols, strict=True))
        assert all(not c.max_width or w <= max(c.max_width, c.width)
                   for w, c in zip(widths, cols, strict=True))
        capped = all(c.flex == 0 or (c.max_width and w >= c.max_width)
                     for w, c in zip(widths, cols, strict=True))
        assert used == total or capped


def test_chart_ticks() -> None:
    assert nice_ticks(0) == [0.0]
    assert nice_ticks(7.3e6) == [0, 2.5e6, 5e6, 7.5e6]
    assert nice_ticks(100) == [0, 50, 100]
    for top in (1, 3.3, 17, 999, 12345.6):
        ticks = nice_ticks(top)
        assert ticks[0] == 0 and ticks[-1] >= top and len(ticks) <= 4
    assert [ago(t) for t in (0, 30, 120, 90)] == ["now", "-30s", "-2m", "-1.5m"]


def test_every_theme_has_a_full_cluster_palette() -> None:
    assert len(NETMON_THEMES) >= 4
    for theme in NETMON_THEMES:
        colors = cluster_colors(theme)
        assert len(colors) == PALETTE_SIZE
        assert len({c.hex for c in colors}) == PALETTE_SIZE, theme.name
    assert next_theme("netmon-ansi") == "netmon-dark"
    assert next_theme("nonsense") == "netmon-dark"
    assert any(t.ansi for t in NETMON_THEMES)  # one for 16-colour terminals
