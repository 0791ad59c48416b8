"""Helpers for the UI tests: an app on a fake world, and waiting for the screen."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any

from textual.pilot import Pilot

from netmon.core.settings import Settings
from netmon.testing.fake_engine import FakeLink, FakeWorld, make_world
from netmon.ui import FixedFeed, NetmonApp, make_app
from netmon.ui.screens import FlowsScreen
from netmon.ui.widgets import ClusterTable, FlowsTable


def ui_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test in its own event loop (no asyncio plugin needed)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run


def build_app(world: FakeWorld | None = None, ticks: int = 5, *, threaded: bool = False,
              **settings: object) -> tuple[NetmonApp, FakeLink, FixedFeed]:
    """An app showing ``ticks`` snapshots of ``world`` (published at once)."""
    world = world or make_world(120, 6)
    link = FakeLink(world, threaded=threaded)
    feed = FixedFeed(world.snapshots(ticks))
    return make_app(Settings(**settings), feed, link), link, feed


async def wait_until(pilot: Pilot, condition: Callable[[], object],
                     timeout: float = 3.0) -> None:
    """Let the app run until ``condition()`` is true (fails the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        await pilot.pause(0.01)
    await pilot.pause()


def screen_text(app: NetmonApp) -> str:
    """What the terminal shows now, as plain text (one line per row)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def clusters_shown(pilot: Pilot) -> ClusterTable:
    """Wait for the main screen's cluster table to fill; return it."""
    table = pilot.app.screen.query_one(ClusterTable)
    await wait_until(pilot, lambda: table.row_count)
    return table


async def open_flows(pilot: Pilot, *keys: str) -> FlowsScreen:
    """From the main screen: press ``keys`` then Enter, and wait for the first page."""
    await clusters_shown(pilot)
    await pilot.press(*keys, "enter")
    screen = pilot.app.screen
    assert isinstance(screen, FlowsScreen)
    flows = screen.query_one(FlowsTable)
    await wait_until(pilot, lambda: flows.row_count)
    return screen
