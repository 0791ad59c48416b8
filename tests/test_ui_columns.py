"""Responsive lists and htop/termshark manners: columns by priority and width,
addresses cut at the port side only, one-valued columns folded into the status line,
ended flows listed greyed with their state, sort by rate, header clicks and the F6
sort menu on every list."""

from __future__ import annotations

from dataclasses import replace

from textual.widgets import OptionList

from netmon.testing.fake_engine import make_world
from netmon.ui.screens import FlowsScreen
from netmon.ui.widgets import ClusterTable, Column, FlowsTable, column_widths
from tests.test_ui_keys import flow_queries
from tests.ui_support import build_app, clusters_shown, open_flows, screen_text, ui_test, wait_until


def test_least_important_columns_go_first_and_hidden_ones_never_show() -> None:
    cols = [Column("a", "a", 10), Column("b", "b", 10, priority=2),
            Column("c", "c", 10, priority=1), Column("d", "d", 10)]
    assert column_widths(cols, 43) == [10, 10, 10, 10]
    assert column_widths(cols, 40)[1] == 0 and column_widths(cols, 40)[2] > 0
    assert column_widths(cols, 25) == [10, 0, 0, 10]
    assert column_widths(cols, 60, hidden={"c"})[2] == 0
    # The sorted column's header keeps its title and arrow whole.
    wide_title = [Column("x", "packets", 4), Column("y", "y", 4)]
    assert column_widths(wide_title, 20, sort_key="x")[0] >= len("packets▼")


@ui_test
async def test_wide_terminals_get_more_columns_and_addresses_stay_whole() -> None:
    for size, wide in (((80, 24), False), ((160, 45), True)):
        app, _link, _feed = build_app(make_world(40, 2))
        async with app.run_test(size=size) as pilot:
            screen = await open_flows(pilot)
            table = screen.query_one(FlowsTable)
            header = screen_text(app).splitlines()[3]
            for title in ("a→b", "b→a", "rate", "last seen", "state"):
                assert (title in header) == wide, (size, title, header)
            for f in table.flows.values():  # every address whole, port included
                assert f"{f.addr_a}:{f.port_a}" in screen_text(app) or \
                    table.keys.index(f.flow_id) >= size[1] - 6


@ui_test
async def test_a_place_every_row_shares_folds_into_the_status_line() -> None:
    world = make_world(40, 2)
    world = replace(world, flows=tuple(replace(f, observer="ssh web1:eth0")
                                       for f in world.flows))
    app, _link, _feed = build_app(world)
    async with app.run_test(size=(120, 30)) as pilot:
        await clusters_shown(pilot)
        screen = FlowsScreen(None)
        await app.push_screen(screen)
        table = screen.query_one(FlowsTable)
        table.observers = True  # as with several sources
        await wait_until(pilot, lambda: table.row_count)
        table.show_flows(list(table.flows.values()))
        screen._show_status()
        await pilot.pause()
        text = screen_text(app)
        assert "seen at web1:eth0" in text.splitlines()[2]
        assert "seen at" not in text.splitlines()[3]  # no column of one value
        assert "cluster" in text.splitlines()[3]  # all clusters: which each is in


@ui_test
async def test_ended_flows_are_listed_greyed_with_how_they_ended() -> None:
    world = make_world(40, 2)
    flows = list(world.flows)
    flows[0] = replace(flows[0], end_reason="idle-timeout")
    app, _link, _feed = build_app(replace(world, flows=tuple(flows)))
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_flows(pilot)
        table = screen.query_one(FlowsTable)
        cells = table.row(flows[0].flow_id)
        assert cells is not None
        assert cells[-2].plain == "idle" and "dim" in str(cells[-2].style)


@ui_test
async def test_header_clicks_and_the_sort_menu_sort_every_list() -> None:
    app, link, _feed = build_app(make_world(40, 3))
    async with app.run_test(size=(120, 30)) as pilot:
        table = await clusters_shown(pilot)
        assert isinstance(table, ClusterTable)
        x = screen_text(app).splitlines()[2].index("flows")
        await pilot.click(ClusterTable, offset=(x + 1, 0))
        assert table.sort_key == "flows" and table.sort_descending
        await pilot.click(ClusterTable, offset=(x + 1, 0))  # again: the other way
        assert table.sort_key == "flows" and not table.sort_descending
        await pilot.press("f6")
        menu = app.screen.query_one(OptionList)
        assert "flows ▲ (again: reverse)" in str(menu.get_option_at_index(
            menu.highlighted).prompt)
        await pilot.press("home", "enter")  # the first entry: bytes/s
        await pilot.pause()
        assert table.sort_key == "byte_rate"

        await pilot.press("enter")
        flows = app.screen.query_one(FlowsTable)
        await wait_until(pilot, lambda: flows.row_count)
        header = screen_text(app).splitlines()[3]
        await pilot.click(FlowsTable, offset=(header.index("rate") + 1, 0))
        await wait_until(pilot, lambda: flow_queries(link)[-1].sort == "rate")
        await wait_until(pilot, lambda: "by rate ▼" in screen_text(app))
        rates = [flows.flows[k].rate for k in flows.keys]
        assert rates == sorted(rates, reverse=True)
        await pilot.press("o")  # the menu's other key
        await pilot.press("escape")
        assert flow_queries(link)[-1].sort == "rate"  # left without a choice
