"""The cluster list adds up: a row for traffic in no cluster (the clusterer's warm-up,
flows not placed yet) and clusters whose flows all ended, kept and greyed."""

from __future__ import annotations

from dataclasses import replace

from netmon.core.settings import Settings
from netmon.core.values import Unclustered
from netmon.testing.fake_engine import FakeLink, make_world
from netmon.ui import FixedFeed, make_app
from netmon.ui.screens import FlowsScreen
from netmon.ui.widgets import UNCLUSTERED
from tests.ui_support import clusters_shown, screen_text, ui_test, wait_until


@ui_test
async def test_unclustered_traffic_and_idle_clusters_are_rows() -> None:
    world = make_world(40, 3)
    snaps = list(world.snapshots(2))
    last = snaps[-1]
    idle = replace(last.clusters[1], flows=0, pkt_rate=0.0, byte_rate=0.0, flows_total=17)
    snaps[-1] = replace(last, clusters=(last.clusters[0], idle, *last.clusters[2:]),
                        unclustered=Unclustered(5, 12.0, 3000.0, 5))
    app = make_app(Settings(), FixedFeed(snaps), FakeLink(world))
    async with app.run_test(size=(160, 45)) as pilot:
        table = await clusters_shown(pilot)
        await wait_until(pilot, lambda: UNCLUSTERED in table.keys)
        text = screen_text(app)
        assert "not in a cluster (yet)" in text
        assert "request-response · idle, 17 flows" in text, text
        for _ in range(2):  # last whatever the sort: it is not a cluster
            assert table.keys[-1] == UNCLUSTERED
            await pilot.press("s")
        await pilot.press("end", "enter")
        await pilot.pause()
        assert not isinstance(app.screen, FlowsScreen)  # nothing to open: a message
        assert any("no cluster shown" in n.message for n in app._notifications)
