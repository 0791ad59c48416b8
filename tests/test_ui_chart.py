"""The rate chart on the snapshot's clock: a replay's capture time (one point read in a
blink still spans the capture), a legend, a colour per line, an axis fitted to the
data, and a table only as tall as its rows so the chart takes the rest."""

from __future__ import annotations

from dataclasses import replace

from netmon.core.settings import Settings
from netmon.testing.fake_engine import FakeLink, make_world
from netmon.ui import FixedFeed, make_app
from netmon.ui.widgets import ClusterTable, RateChart, line_colors
from netmon.ui.widgets._rate_chart import step_points
from tests.ui_support import clusters_shown, screen_text, ui_test, wait_until


def test_every_line_gets_a_colour_of_its_own() -> None:
    assert line_colors([1, 9, 17, 2]) == {1: 1, 9: 2, 17: 3, 2: 4}
    slots = line_colors(list(range(0, 48, 8)))  # six IDs that share one colour
    assert sorted(slots.values()) == list(range(6))
    assert line_colors([3, 4]) == {3: 3, 4: 4}  # a free colour is the cluster's own


def test_history_points_are_steps_over_their_intervals() -> None:
    xs, ys = step_points([5.0, 7.0], [0.0, 2.0, 23.0])
    assert xs == [-23.0, -21.0, -21.0, 0.0] and ys == [5.0, 5.0, 7.0, 7.0]
    xs, _ = step_points([1.0, 2.0, 3.0], [10.0, 12.0])  # times kept for the last only
    assert xs == [-2.0, 0.0]


@ui_test
async def test_a_finished_replay_draws_its_capture_span_with_a_legend() -> None:
    world = make_world(40, 3)
    snap = world.snapshot(1, finished=True)
    clusters = tuple(replace(c, history=(c.byte_rate,)) for c in snap.clusters)
    # One tick read the whole 23 s capture: one point, spanning it.
    last = replace(snap, clusters=clusters, clock="capture", elapsed=23.1,
                   history_times=(0.0, 23.1), averaged=True)
    app = make_app(Settings(), FixedFeed([last]), FakeLink(world))
    async with app.run_test(size=(100, 30)) as pilot:
        await clusters_shown(pilot)
        chart = app.screen.query_one(RateChart)
        await wait_until(pilot, lambda: chart.builds and "capture time" in screen_text(app))
        text = screen_text(app)
        assert "last 23.1s of capture time" in text
        assert "-20s" in text and "now" in text  # the x axis spans the capture
        assert "up 23.1s of capture" in text and " average " in text
        legend = chart.render().plain.splitlines()[-1]
        for c in clusters:
            assert f"━ {c.cluster_id} {c.label[:8]}" in legend


@ui_test
async def test_the_table_is_as_tall_as_its_rows_and_the_chart_takes_the_rest() -> None:
    world = make_world(40, 2)
    app = make_app(Settings(), FixedFeed(world.snapshots(12)), FakeLink(world))
    async with app.run_test(size=(160, 45)) as pilot:
        await clusters_shown(pilot)
        table, chart = app.screen.query_one(ClusterTable), app.screen.query_one(RateChart)
        await wait_until(pilot, lambda: chart.builds)
        assert table.size.height <= 4  # header, two rows (min-height 4)
        assert chart.region.y <= table.region.bottom + 1
        assert chart.size.height >= 30
        # The axis tops near the peak, not at the next power of ten above it.
        top = next(line for line in chart.render().plain.splitlines() if "┤" in line)
        peak = max(max(c.history) for c in world.snapshot(12).clusters)
        assert 0.99 * peak <= rate_value(top.split("┤")[0]) <= 2 * peak, (top, peak)


def rate_value(label: str) -> float:
    """ "6.9MB/s" -> 6.9e6."""
    text = label.strip().removesuffix("B/s")
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}.get(text[-1:], 1.0)
    return float(text.rstrip("kMG")) * scale
