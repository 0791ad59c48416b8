"""Pilot tests for every key path of the TUI, on a fixed feed and a fake engine link."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import pytest
from textual import events

from netmon.core.link import ExportRequest, FlowPage, FlowQuery
from netmon.core.values import SourceStatus
from netmon.testing.fake_engine import make_world
from netmon.ui.messages import FlowsListed, SnapshotPublished, SourceFailed
from netmon.ui.screens import (
    FlowScreen,
    FlowsScreen,
    HelpScreen,
    MainScreen,
    PacketScreen,
    TooSmallScreen,
)
from netmon.ui.themes import THEME_ORDER
from netmon.ui.widgets import ClusterTable, FilterBar, FlowsTable, HostsTable, PacketsTable
from tests.ui_support import (
    build_app,
    clusters_shown,
    open_flows,
    screen_text,
    ui_test,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


def flow_queries(link) -> list[FlowQuery]:
    return [r for r in link.requests if isinstance(r, FlowQuery)]


@ui_test
async def test_first_snapshot_fills_header_table_and_chart() -> None:
    app, _link, _feed = build_app()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(ClusterTable)
        await wait_until(pilot, lambda: table.row_count == 6)
        text = screen_text(app)
        assert "file demo.pcap" in text and "running" in text
        assert "pkt/s" in text and "flows" in text and "undecodable" in text
        assert "TCP/443 bulk download" in text
        # Busiest first by default, and the cursor starts on it.
        assert table.cursor_key == 0
        await wait_until(pilot, lambda: "busiest clusters" in screen_text(app))


@ui_test
async def test_enter_drills_down_to_a_dissection_and_esc_comes_back() -> None:
    app, link, _feed = build_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await clusters_shown(pilot)
        await pilot.press("down", "enter")  # second busiest cluster
        assert isinstance(app.screen, FlowsScreen)
        cluster_id = app.screen.cluster.cluster_id
        flows = app.screen.query_one(FlowsTable)
        await wait_until(pilot, lambda: flows.row_count > 0)
        assert flow_queries(link)[-1].cluster_id == cluster_id
        assert all(f.cluster_id == cluster_id for f in flows.flows.values())

        first = flows.cursor_key
        await pilot.press("enter")
        assert isinstance(app.screen, FlowScreen)
        assert app.screen.flow.flow_id == first
        packets = app.screen.query_one(PacketsTable)
        await wait_until(pilot, lambda: packets.row_count > 0)
        assert "packets kept" in screen_text(app)

        await pilot.press("end", "enter")
        assert isinstance(app.screen, PacketScreen)
        await wait_until(pilot, lambda: app.screen.dissection)
        text = screen_text(app)
        assert "Frame" in text and "Hypertext Transfer Protocol" in text
        # Packet content is shown escaped, never sent to the terminal raw.
        assert "\x1b" not in text and "\\x1b[2J" in text

        await pilot.press("escape")
        assert isinstance(app.screen, FlowScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, FlowsScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("escape")  # nothing behind the main screen
        assert isinstance(app.screen, MainScreen)


@ui_test
async def test_answers_from_the_engine_thread_arrive_as_messages() -> None:
    seen: list[object] = []
    app, link, _feed = build_app(threaded=True)
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        await clusters_shown(pilot)
        await pilot.press("enter")
        flows = app.screen.query_one(FlowsTable)
        await wait_until(pilot, lambda: flows.row_count > 0)
        await pilot.press("enter")
        packets = app.screen.query_one(PacketsTable)
        await wait_until(pilot, lambda: packets.row_count > 0)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen.dissection)
    assert any(isinstance(m, FlowsListed) for m in seen)
    assert any(isinstance(m, SnapshotPublished) for m in seen)
    assert link.stopped


@ui_test
async def test_filter_on_a_flow_list_and_a_bad_filter_says_why() -> None:
    app, link, _feed = build_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_flows(pilot)
        await pilot.press("slash")
        bar = screen.query_one(FilterBar)
        assert bar.is_open and bar.has_focus
        await pilot.press(*"port 443", "enter")
        assert not bar.is_open
        assert flow_queries(link)[-1].filter == "port 443"
        await wait_until(pilot, lambda: "filter port 443" in screen_text(app))

        await pilot.press("slash", *" and bogus 1", "enter")
        await wait_until(pilot, lambda: screen.error)
        assert "unknown filter term" in screen_text(app)
        assert screen.query_one(FlowsTable).row_count > 0  # the last good page stays

        # Esc closes the bar without changing the filter.
        before = len(flow_queries(link))
        await pilot.press("slash", "x", "escape")
        assert not bar.is_open and len(flow_queries(link)) == before
        assert isinstance(app.screen, FlowsScreen)


@ui_test
async def test_keys_typed_into_the_filter_are_not_commands() -> None:
    app, link, _feed = build_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await clusters_shown(pilot)
        await pilot.press("slash", *"proto tcp", "space", "q", "p", "t", "s", "backspace")
        bar = app.screen.query_one(FilterBar)
        assert bar.value == "proto tcp qpt"
        assert not app.view.paused and app.theme == THEME_ORDER[0]
        await pilot.press("ctrl+u", *"proto udp", "enter")
        # On the main screen a filter opens the flows of all clusters.
        assert isinstance(app.screen, FlowsScreen)
        assert app.screen.cluster is None
        await wait_until(pilot, lambda: app.screen.query_one(FlowsTable).row_count > 0)
        assert flow_queries(link)[-1] == FlowQuery(filter="proto udp", limit=200)
        assert all(f.proto == 17 for f in app.screen.query_one(FlowsTable).flows.values())


@ui_test
async def test_s_sorts_clusters_and_flows() -> None:
    app, link, _feed = build_app()
    async with app.run_test(size=(80, 24)) as pilot:
        table = await clusters_shown(pilot)
        await pilot.press("s")
        assert table.sort_key == "pkt_rate"
        rates = [table.row(k) for k in table.keys]
        assert len(rates) == 6
        by_rate = sorted(table.clusters, key=lambda c: -c.pkt_rate)
        assert table.keys == [c.cluster_id for c in by_rate]
        for _ in range(6):
            await pilot.press("s")
        assert table.sort_key == "cluster_id" and table.keys == sorted(table.keys)

        await pilot.press("enter")
        flows = app.screen.query_one(FlowsTable)
        await wait_until(pilot, lambda: flows.row_count)
        await pilot.press("s")
        assert flow_queries(link)[-1].sort == "rate"
        await pilot.press("s")
        assert flow_queries(link)[-1].sort == "packets"
        await wait_until(pilot, lambda: "by packets ▼" in screen_text(app))
        await pilot.press("S")
        assert flow_queries(link)[-1].descending is False
        await wait_until(pilot, lambda: "by packets ▲" in screen_text(app))
        shown = [flows.flows[k].packets for k in flows.keys]
        assert shown == sorted(shown)


@ui_test
async def test_pause_freezes_the_view_and_counts_what_is_pending() -> None:
    world = make_world(120, 6)
    app, _link, _feed = build_app(world, ticks=3)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await clusters_shown(pilot)
        await pilot.press("p")
        assert app.view.paused
        frozen = table.clusters
        for seq in (4, 5, 6):
            app.publish(world.snapshot(seq))
        await wait_until(pilot, lambda: app.view.latest.seq == 6)
        assert table.clusters == frozen and app.view.shown.seq == 3
        text = screen_text(app)
        assert "PAUSED" in text and "3 updates" in text and "pending" in text
        await pilot.press("space")
        assert not app.view.paused and app.view.shown.seq == 6
        assert table.clusters == world.snapshot(6).clusters
        assert "PAUSED" not in screen_text(app)


@ui_test
async def test_pause_stops_the_flow_list_from_refreshing() -> None:
    world = make_world(120, 6)
    app, link, _feed = build_app(world, ticks=2)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_flows(pilot)
        await pilot.press("p")
        asked = len(link.requests)
        screen.refresher.asked_at -= 10  # as if a refresh were long due
        app.publish(world.snapshot(3))
        await wait_until(pilot, lambda: app.view.latest.seq == 3)
        assert len(link.requests) == asked
        await pilot.press("p")
        app.publish(world.snapshot(4))
        await wait_until(pilot, lambda: len(link.requests) > asked)


@ui_test
async def test_e_exports_the_view_and_reports_the_files() -> None:
    app, link, _feed = build_app()
    app.export_dir = "/tmp/netmon-export"
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        table = await clusters_shown(pilot)
        await pilot.press("down", "e")
        request = link.requests[-1]
        assert isinstance(request, ExportRequest)
        assert request.cluster_id == table.cursor_key
        assert request.directory == "/tmp/netmon-export"
        await wait_until(pilot, lambda: "netmon-flows.csv" in screen_text(app))
        text = screen_text(app)
        # What was written, exactly: every flow and cluster, and which cluster the BPF
        # matches; the directory once, so no path is broken across lines.
        flows = len(link.world.flows)
        assert f"wrote {flows} flows and 6 clusters" in text, text
        assert "to /tmp/netmon-export/" in text
        assert f"BPF matching cluster {table.cursor_key}'s flows" in text

        await pilot.press("enter", "slash", *"port 53", "enter", "e")
        request = link.requests[-1]
        assert isinstance(request, ExportRequest)
        assert request.query.filter == "port 53"
        assert request.query.cluster_id == request.cluster_id == table.cursor_key


@ui_test
async def test_t_cycles_the_themes() -> None:
    app, _link, _feed = build_app()
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.theme == "netmon-dark"
        seen = [app.theme]
        for _ in THEME_ORDER:
            await pilot.press("t")
            seen.append(app.theme)
        assert seen == [*THEME_ORDER, THEME_ORDER[0]]
        assert len(THEME_ORDER) >= 4


@ui_test
async def test_theme_from_settings_and_unknown_theme_warns() -> None:
    app, _link, _feed = build_app(theme="netmon-ansi")
    async with app.run_test(size=(80, 24)):
        assert app.theme == "netmon-ansi"
    app, _link, _feed = build_app(theme="no-such-theme")
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        assert app.theme == "netmon-dark"
        await wait_until(pilot, lambda: "unknown theme" in screen_text(app))


@ui_test
async def test_question_mark_shows_help_and_esc_closes_it() -> None:
    app, _link, _feed = build_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await wait_until(pilot, lambda: "pause the view" in screen_text(app))
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


@ui_test
async def test_q_quits_and_stops_feed_and_engine() -> None:
    app, link, feed = build_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0
    assert link.stopped and feed._stop.is_set()


@ui_test
async def test_h_toggles_the_hosts_view_and_enter_filters_by_host() -> None:
    app, link, _feed = build_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_flows(pilot)
        await pilot.press("h")
        hosts = screen.query_one(HostsTable)
        assert hosts.display and not screen.query_one(FlowsTable).display
        assert link.requests[-1][0] == "hosts"
        await wait_until(pilot, lambda: hosts.row_count)
        assert "host" in screen_text(app) and "peers" in screen_text(app)
        await pilot.press("s")  # hosts sort locally
        assert hosts.sort_key == "packets"
        host = hosts.cursor_key
        await pilot.press("enter")
        assert not screen.hosts_mode and screen.query_one(FlowsTable).display
        assert flow_queries(link)[-1].filter == f"host {host}"
        flows = screen.query_one(FlowsTable)
        await wait_until(pilot, lambda: flows.row_count
                         and all(host in (f.addr_a, f.addr_b) for f in flows.flows.values()))


@ui_test
async def test_cursor_stays_on_its_cluster_while_rows_move() -> None:
    world = make_world(120, 6)
    app, _link, _feed = build_app(world, ticks=1)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await clusters_shown(pilot)
        await pilot.press("down", "down", "down")
        chosen = table.cursor_key
        positions = []
        for seq in range(2, 8):
            snap = world.snapshot(seq)
            if seq % 2:  # the two busiest clusters come and go above the cursor
                snap = replace(snap, clusters=snap.clusters[2:])
            app.publish(snap)
            await wait_until(pilot, lambda s=seq: app.view.shown.seq == s)
            assert table.cursor_key == chosen
            positions.append(table.cursor)
        assert positions == [3, 1, 3, 1, 3, 1]


@ui_test
async def test_cursor_stays_on_its_flow_across_refreshes() -> None:
    world = make_world(120, 6)
    app, link, _feed = build_app(world, ticks=1)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_flows(pilot)
        flows = screen.query_one(FlowsTable)
        await pilot.press("down", "down", "down")
        chosen = flows.cursor_key
        asked = len(link.requests)
        screen.refresher.asked_at -= 10
        app.publish(world.snapshot(2))
        await wait_until(pilot, lambda: len(link.requests) > asked)
        await pilot.pause()
        assert flows.cursor_key == chosen


@ui_test
async def test_answers_to_old_questions_are_ignored() -> None:
    app, link, _feed = build_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_flows(pilot)
        flows = screen.query_one(FlowsTable)
        old = flow_queries(link)[-1]
        link.hold = True  # the engine is slow to answer the new question
        await pilot.press("slash", *"port 1", "enter")
        screen.post_message(FlowsListed(FlowPage(old, (), 0)))  # a late, stale answer
        await pilot.pause()
        assert flows.row_count > 0 and screen.total > 0
        assert screen.refresher.in_flight


@ui_test
async def test_below_the_minimum_size_a_plain_message_shows() -> None:
    app, _link, _feed = build_app()
    async with app.run_test(size=(50, 12)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, TooSmallScreen)
        await wait_until(pilot, lambda: "at least 60x16" in screen_text(app))
        assert "50x12" in screen_text(app)
        await pilot.resize_terminal(80, 24)
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen))
        await pilot.resize_terminal(59, 30)
        await wait_until(pilot, lambda: isinstance(app.screen, TooSmallScreen))
        await pilot.press("q")
    assert app.return_code == 0


@ui_test
async def test_a_failed_source_is_announced_once() -> None:
    world = make_world(60, 3)
    seen: list[object] = []
    app, _link, _feed = build_app(world, ticks=1)
    async with app.run_test(size=(80, 24), message_hook=seen.append,
                            notifications=True) as pilot:
        await wait_until(pilot, lambda: app.view.shown is not None)
        bad = replace(world.snapshot(2), sources=(
            SourceStatus("live eth0", "failed", "dumpcap: \x1b[31mpermission denied"),))
        app.publish(bad)
        app.publish(replace(bad, seq=3))
        await wait_until(pilot, lambda: app.view.shown.seq == 3)
        text = screen_text(app)
        assert "failed" in text and "permission denied" in text and "\x1b" not in text
    assert sum(isinstance(m, SourceFailed) for m in seen) == 1


@ui_test
async def test_untrusted_names_are_neutralised_in_the_header() -> None:
    world = make_world(60, 3, source="file \x1b]0;evil\x07.pcap")
    app, _link, _feed = build_app(world, ticks=1)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.view.shown is not None)
        text = screen_text(app)
        assert "\x1b" not in text and "\x07" not in text
        assert "\\x1b]0;evil\\x07.pcap" in text


@ui_test
async def test_ssh_exclusion_is_shown_in_the_header() -> None:
    world = make_world(60, 3)
    app, _link, _feed = build_app(world, ticks=0)
    async with app.run_test(size=(100, 24)) as pilot:
        app.publish(world.snapshot(1, ssh_excluded="10.0.0.9:50022 <-> 10.0.0.1:22"))
        await wait_until(pilot, lambda: app.view.shown is not None)
        assert "excluding ssh 10.0.0.9:50022" in screen_text(app)


@ui_test
async def test_header_lists_every_source_with_its_own_state() -> None:
    from dataclasses import replace as dc_replace

    from netmon.core.sourcestats import CollectorStats
    from netmon.core.values import SourceStatus

    world = make_world(60, 3)
    app, _link, _feed = build_app(world, ticks=0)
    collector = CollectorStats("0.0.0.0:2055", exporters=2, records=1234, lost=5)
    sources = (
        SourceStatus("ssh web1:eth0", "running"),
        SourceStatus("ssh web2:any", "reconnecting",
                     detail="ssh web2:any: connection refused; reconnecting in 4 s"),
        SourceStatus("collect udp 0.0.0.0:2055", "running", detail=collector.summary(),
                     collector=collector),
    )
    async with app.run_test(size=(160, 24)) as pilot:
        app.publish(dc_replace(world.snapshot(1), sources=sources))
        await wait_until(pilot, lambda: app.view.shown is not None)
        text = screen_text(app)
        first = text.splitlines()[0]
        assert ("ssh web1:eth0 running, ssh web2:any reconnecting, "
                "collect udp 0.0.0.0:2055 running") in first
        assert "connection refused; reconnecting in 4 s" in text
        assert "2 exporters, 1,234 records, 5 lost" in text


@ui_test
async def test_an_exported_flow_says_what_it_cannot_show() -> None:
    from dataclasses import replace as dc_replace

    from netmon.ui.screens.flow_detail import flow_stats

    dc_flow = dc_replace(make_world(10, 1).flows[0], exported=True, observer="exporter 10.0.0.1/7",
                         first_sizes=())
    text = flow_stats(dc_flow).plain
    assert "seen at exporter 10.0.0.1/7" in text
    assert "no per-packet detail (exported records)" in text
    assert "±" not in text  # no spread shown that nobody measured


@ui_test
async def test_no_color_draws_chart_lines_with_cluster_digits(monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app, _link, _feed = build_app(ticks=20)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.no_color
        chart = app.screen.query_one("#chart")
        await wait_until(pilot, lambda: chart.builds > 0)
        rows = chart.render().plain.splitlines()[1:-2]  # inside the frame
        plotted = "".join(row.split("┤", 1)[-1].split("│", 1)[-1] for row in rows)
        assert any(ch.isdigit() for ch in plotted)


@ui_test
async def test_brackets_page_through_a_long_flow_list() -> None:
    world = make_world(1200, 2)
    app, link, _feed = build_app(world, ticks=2)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_flows(pilot)
        flows = screen.query_one(FlowsTable)
        assert flows.row_count == 200
        total = screen.total
        assert total > 400
        first_page = set(flows.keys)
        await pilot.press("right_square_bracket")
        assert flow_queries(link)[-1].offset == 200
        await wait_until(pilot, lambda: set(flows.keys).isdisjoint(first_page))
        assert f"flows 201-400 of {total:,}" in screen_text(app)
        await pilot.press("left_square_bracket", "left_square_bracket")  # 2nd: no page -1
        assert flow_queries(link)[-1].offset == 0
        await wait_until(pilot, lambda: set(flows.keys) == first_page)


@ui_test
async def test_table_keys_move_the_cursor_within_bounds() -> None:
    world = make_world(600, 2)
    app, _link, _feed = build_app(world, ticks=1)
    async with app.run_test(size=(80, 24)) as pilot:
        flows = (await open_flows(pilot)).query_one(FlowsTable)
        await pilot.press("up")
        assert flows.cursor == 0
        await pilot.press("j", "j", "k")
        assert flows.cursor == 1
        await pilot.press("pagedown")
        assert flows.cursor > 10
        await pilot.press("end")
        assert flows.cursor == flows.row_count - 1
        assert screen_text(app).count("\n") == 23  # the cursor row is on screen
        assert flows.row(flows.cursor_key)[1] in screen_text(app)
        await pilot.press("down", "home")
        assert flows.cursor == 0


@ui_test
async def test_sigterm_and_sighup_quit_like_q() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        app, link, feed = build_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await clusters_shown(pilot)
            os.kill(os.getpid(), sig)
            await wait_until(pilot, lambda a=app: a.exit_signal is not None)
        assert app.return_code == 128 + sig
        assert link.stopped and feed._stop.is_set()
    # The handlers are gone with the app: the default dispositions are back.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def burst(app, *keys: str) -> None:
    """Queue ``keys`` all at once, as a busy UI thread or a slow SSH link gets them."""
    names = {"/": "slash", " ": "space", "\r": "enter", "\x1b": "escape", "\x7f": "backspace"}
    for key in keys:
        printable = key if len(key) == 1 and key.isprintable() else None
        app.post_message(events.Key(names.get(key, key), printable))


@ui_test
async def test_a_burst_of_keys_is_applied_in_order() -> None:
    app, link, _feed = build_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_flows(pilot)
        # "/", a filter with a typo fixed by Backspace, Enter, then "p" (pause).
        burst(app, *"/port 4", "backspace", *"53", "enter", "p")
        await wait_until(pilot, lambda: app.view.paused)
        assert flow_queries(link)[-1].filter == "port 53"
        bar = screen.query_one(FilterBar)
        assert not bar.is_open and screen.query_one(FlowsTable).has_focus
        # Escape in a burst closes the bar before the next key acts on the table.
        burst(app, *"/xyz", "escape", "s")
        await wait_until(pilot, lambda: flow_queries(link)[-1].sort == "rate")
        assert flow_queries(link)[-1].filter == "port 53" and not bar.is_open
        # A "/" typed inside the bar is text (CIDR-style), not a new bar.
        burst(app, "/", "ctrl+u", *"host 10.0.0.0/8")
        await wait_until(pilot, lambda: bar.value == "host 10.0.0.0/8")


def test_an_empty_theme_setting_picks_by_colour_depth(monkeypatch) -> None:
    monkeypatch.delenv("COLORTERM", raising=False)
    monkeypatch.delenv("TEXTUAL_COLOR_SYSTEM", raising=False)
    monkeypatch.setenv("TERM", "xterm")  # 16 colours
    app, _link, _feed = build_app(theme="")
    assert app.console.color_system == "standard" and app.theme == "netmon-ansi"
    monkeypatch.setenv("TERM", "xterm-256color")
    app, _link, _feed = build_app(theme="")
    assert app.theme == "netmon-dark"


@ui_test
async def test_shrinking_to_40x10_and_back_keeps_the_drilldown() -> None:
    app, _link, _feed = build_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        await wait_until(pilot, lambda: "› flows" in screen_text(app))
        under = type(app.screen_stack[-1])
        await pilot.resize_terminal(40, 10)
        await wait_until(pilot, lambda: isinstance(app.screen, TooSmallScreen))
        assert "40x10" in screen_text(app)
        await pilot.resize_terminal(100, 30)
        await wait_until(pilot, lambda: isinstance(app.screen, under))
        assert "› flows" in screen_text(app)
        await pilot.press("q")
    assert app.return_code == 0
