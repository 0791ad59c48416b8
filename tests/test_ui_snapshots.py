"""Screen snapshots (SVG, under tests/__snapshots__) of every view on a fixed feed.

Regenerate after an intended change with
``pytest tests/test_ui_snapshots.py --snapshot-update`` and look at the report.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from netmon.testing.fake_engine import make_world
from netmon.ui.themes import THEME_ORDER
from tests.ui_support import build_app

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Packet times are local wall-clock times: pin the zone so the pictures agree."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def app_on_fixed_feed(ticks: int = 30):
    app, _link, _feed = build_app(make_world(240, 8), ticks=ticks)
    return app


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
def test_main_screen(snap_compare, size) -> None:
    assert snap_compare(app_on_fixed_feed(), terminal_size=size)


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
def test_cluster_flows(snap_compare, size) -> None:
    assert snap_compare(app_on_fixed_feed(), press=["down", "enter"], terminal_size=size)


def test_cluster_hosts(snap_compare) -> None:
    assert snap_compare(app_on_fixed_feed(), press=["enter", "h"], terminal_size=(80, 24))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_flow_packets(snap_compare, size) -> None:
    assert snap_compare(app_on_fixed_feed(), press=["enter", "down", "enter"],
                        terminal_size=size)


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
def test_packet_dissection(snap_compare, size) -> None:
    # the tree's cursor to the IP layer, expanded, on its source address (highlighted)
    press = ["enter", "enter", "end", "enter", "up", "up", "right", "down", "down", "down",
             "down", "down"]
    assert snap_compare(app_on_fixed_feed(), press=press, terminal_size=size)


def test_help(snap_compare) -> None:
    assert snap_compare(app_on_fixed_feed(), press=["question_mark"], terminal_size=(80, 24))


def test_paused_with_pending_updates(snap_compare) -> None:
    world = make_world(240, 8)
    app, _link, _feed = build_app(world, ticks=30)

    async def more_ticks(pilot) -> None:
        await pilot.press("p")
        for seq in range(31, 36):
            app.publish(world.snapshot(seq))
        await pilot.pause()

    assert snap_compare(app, run_before=more_ticks, terminal_size=(80, 24))


@pytest.mark.parametrize("theme", THEME_ORDER[1:])
def test_themes(snap_compare, theme) -> None:
    async def use_theme(pilot) -> None:
        pilot.app.theme = theme  # as ``t`` does, without the toast over the chart
        await pilot.pause()

    assert snap_compare(app_on_fixed_feed(), run_before=use_theme, terminal_size=(80, 24))


def test_no_color(snap_compare, monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(app_on_fixed_feed(), terminal_size=(80, 24))


def test_too_small(snap_compare) -> None:
    assert snap_compare(app_on_fixed_feed(), terminal_size=(50, 12))


def test_follow_stream(snap_compare) -> None:
    assert snap_compare(app_on_fixed_feed(), press=["enter", "enter", "f"],
                        terminal_size=(80, 24))


def test_follow_stream_hex(snap_compare) -> None:
    assert snap_compare(app_on_fixed_feed(), press=["enter", "enter", "f", "h"],
                        terminal_size=(80, 24))


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
def test_listener_connections_in_the_flow_list(snap_compare, size) -> None:
    from netmon.testing.fake_engine import with_packetless_flows

    app, _link, _feed = build_app(with_packetless_flows(make_world(240, 8)), ticks=30)
    assert snap_compare(app, press=["enter"], terminal_size=size)


def test_listener_flow_without_packets(snap_compare) -> None:
    from netmon.testing.fake_engine import with_packetless_flows
    from netmon.ui.screens import FlowScreen

    world = with_packetless_flows(make_world(240, 8))
    app, _link, _feed = build_app(world, ticks=30)

    async def open_listener(pilot) -> None:
        await app.push_screen(FlowScreen(next(f for f in world.flows if f.listener)))
        await pilot.pause()

    assert snap_compare(app, run_before=open_listener, terminal_size=(80, 24))
