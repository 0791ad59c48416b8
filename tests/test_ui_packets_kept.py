"""Pilot on the real engine at a high packet rate: a busy flow's screen says how many of
its packets are kept, and they are its first ones and its most recent ones."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from netmon.app.tui import EngineFeed
from netmon.core.link import FlowPage, FlowQuery
from netmon.core.settings import Settings
from netmon.engine.engine import Engine
from netmon.engine.link import EngineUILink
from netmon.sources.files import FileSource
from netmon.testing.synth import synthetic_pcap
from netmon.ui import make_app
from netmon.ui.screens import FlowScreen, PacketScreen
from netmon.ui.widgets import PacketsTable
from tests.ui_support import screen_text, ui_test, wait_until

pytestmark = pytest.mark.timeout(120)

KEPT = re.compile(r"([\d,]+) of ([\d,]+) packets kept · first (\d+)(?: · recent (\d+))?")


def busiest(link: EngineUILink) -> FlowPage:
    done = threading.Event()
    got: list[FlowPage] = []
    link.query_flows(FlowQuery(sort="packets", limit=1),
                     lambda page: (got.append(page), done.set()))
    assert done.wait(30)
    return got[0]


@ui_test
async def test_a_busy_flow_shows_its_first_and_recent_packets_while_ingest_runs(
        tmp_path: Path) -> None:
    path = tmp_path / "busy.pcap"
    # 400 k packets over 300 flows (~1300 each), replayed at ~100 k packets/s.
    synthetic_pcap(path, 400_000, 300, seed=7)
    feed = EngineFeed()
    settings = Settings(read=str(path), speed=50.0, cluster=False)
    engine = Engine(settings, [FileSource(str(path), speed=50.0)], feed.deliver)
    feed.engine = engine
    link = EngineUILink(engine)
    app = make_app(settings, feed, link)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, lambda: engine.table.packets > 50_000, timeout=30)
            flow = busiest(link).flows[0]
            assert flow.packets > 64
            await app.push_screen(FlowScreen(flow))
            table = app.screen.query_one(PacketsTable)
            seen = 0
            for _ in range(3):  # the list refreshes as packets arrive
                await wait_until(pilot, lambda: KEPT.search(screen_text(app))
                                 and table.row_count, timeout=10)
                m = KEPT.search(screen_text(app))
                kept, total = (int(g.replace(",", "")) for g in m.groups()[:2])
                assert total > 64 and kept >= min(total, 32), m.group(0)
                assert int(m.group(3)) == 32 and int(m.group(4) or 0) >= 1
                assert kept == 32 + int(m.group(4) or 0)
                keys = [int(k) for k in table.keys]
                assert keys[:32] == list(range(32)) and keys[-1] >= total - 32
                assert "Enter dissects" in screen_text(app)
                seen = max(seen, total)
                await pilot.pause(0.5)
            assert engine.table.packets > 50_000 and seen > 64
    finally:
        engine.stop()
        assert engine.join(15)
        link.stop()


def cluster_flows(link: EngineUILink, cluster_id: int, limit: int) -> list:
    done = threading.Event()
    got: list[FlowPage] = []
    link.query_flows(FlowQuery(cluster_id=cluster_id, sort="packets", limit=limit),
                     lambda page: (got.append(page), done.set()))
    assert done.wait(30)
    return list(got[0].flows)


@ui_test
async def test_the_three_busiest_clusters_flows_keep_first_and_recent_packets_and_dissect(
        tmp_path: Path) -> None:
    """The issue's check, on the real engine with clustering on at ~100 k packets/s:
    flows of the three busiest clusters each list their first packets and their most
    recent ones (K >= min(N, 32)), and a kept packet of each dissects with tshark."""
    path = tmp_path / "busy.pcap"
    synthetic_pcap(path, 400_000, 300, seed=11)
    feed = EngineFeed()
    settings = Settings(read=str(path), speed=50.0)
    engine = Engine(settings, [FileSource(str(path), speed=50.0)], feed.deliver)
    feed.engine = engine
    link = EngineUILink(engine)
    app = make_app(settings, feed, link)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_until(pilot, lambda: engine.table.packets > 100_000
                             and len(engine.snapshots.clusters) >= 3, timeout=60)
            clusters = sorted(engine.snapshots.clusters, key=lambda c: -c.pkt_rate)[:3]
            for cluster in clusters:
                flows = cluster_flows(link, cluster.cluster_id, 3)
                assert flows, cluster
                for n, flow in enumerate(flows):
                    await app.push_screen(FlowScreen(flow))
                    table = app.screen.query_one(PacketsTable)
                    await wait_until(pilot, lambda t=table: KEPT.search(screen_text(app))
                                     and t.row_count, timeout=10)
                    m = KEPT.search(screen_text(app))
                    kept, total = (int(g.replace(",", "")) for g in m.groups()[:2])
                    assert kept >= min(total, 32), m.group(0)
                    keys = [int(k) for k in table.keys]
                    assert keys[:min(total, 32)] == list(range(min(total, 32)))
                    if total > 64:  # the newest ones too, not only the first
                        assert keys[-1] >= total - 32 and int(m.group(4) or 0) >= 1
                    if n == 0:  # one packet of each cluster goes through tshark
                        # (its first: a busy flow's recent ones are replaced within
                        # milliseconds, and asking for one gone says so, as it should)
                        table.focus()
                        await pilot.press("home", "enter")
                        screen = app.screen
                        assert isinstance(screen, PacketScreen)
                        await wait_until(pilot, lambda s=screen: s.dissection or s.error,
                                         timeout=40)
                        assert not screen.error, screen.error
                        assert "Frame" in screen_text(app)
                        app.pop_screen()
                    app.pop_screen()
                    await pilot.pause()
    finally:
        engine.stop()
        assert engine.join(15)
        link.stop()
