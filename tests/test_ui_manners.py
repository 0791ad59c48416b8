"""Keys users of htop and termshark reach for: F1 help, F3 filter, F10 quit, S to
reverse the cluster list; a question with no answer says so where the rows would be."""

from __future__ import annotations

from netmon.ui.screens import FlowsScreen
from netmon.ui.screens.help import HelpScreen
from netmon.ui.widgets import FilterBar
from tests.ui_support import (
    build_app,
    clusters_shown,
    open_flows,
    screen_text,
    ui_test,
    wait_until,
)


@ui_test
async def test_function_keys_and_reverse_on_the_cluster_list() -> None:
    app, _link, _feed = build_app()
    async with app.run_test(size=(100, 30)) as pilot:
        table = await clusters_shown(pilot)
        first = list(table.keys)
        assert len(first) >= 3
        await pilot.press("S")
        await pilot.pause()
        assert list(table.keys) == first[::-1]
        await pilot.press("S")
        await pilot.pause()
        assert list(table.keys) == first
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert "F10" in screen_text(app)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, HelpScreen))
        await pilot.press("f3")
        bar = app.screen.query_one(FilterBar)
        assert bar.is_open
        await pilot.press("escape")
        await pilot.press("f10")
        await wait_until(pilot, lambda: not app.is_running)


@ui_test
async def test_a_list_whose_question_fails_says_so_instead_of_waiting() -> None:
    app, _link, _feed = build_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await clusters_shown(pilot)
        await pilot.press("slash", *"bogus 1", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, FlowsScreen))
        screen = app.screen
        await wait_until(pilot, lambda: screen.error)
        text = screen_text(app)
        assert "no answer: " in text and "unknown filter term" in text
        assert "asking the engine" not in text


@ui_test
async def test_end_home_and_page_keys_reach_the_whole_flow_list() -> None:
    from netmon.core.link import FlowQuery
    from netmon.testing.fake_engine import make_world
    from netmon.ui.widgets import FlowsTable

    app, link, _feed = build_app(make_world(1200, 2))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_flows(pilot)  # the biggest cluster: several pages
        table = screen.query_one(FlowsTable)
        await wait_until(pilot, lambda: table.row_count == 200 and screen.total > 400)
        total = screen.total

        def offset() -> int:
            return [r for r in link.requests if isinstance(r, FlowQuery)][-1].offset

        await pilot.press("end")  # the last flow of the list, not of the page
        last_page = (total - 1) // 200 * 200
        await wait_until(pilot, lambda: offset() == last_page
                         and table.row_count == total - last_page
                         and table.cursor == table.row_count - 1)
        assert f"{last_page + 1}-{total} of" in screen_text(app)
        await pilot.press("home")
        await wait_until(pilot, lambda: offset() == 0 and table.row_count == 200
                         and table.cursor == 0)
        await pilot.press("end")
        await wait_until(pilot, lambda: offset() == last_page)
        await pilot.press("home")
        await wait_until(pilot, lambda: offset() == 0 and table.cursor == 0)
        await pilot.press("pagedown")  # within the page first
        await pilot.pause()
        assert offset() == 0 and table.cursor > 0
        while table.cursor < table.row_count - 1:
            await pilot.press("pagedown")
        await pilot.press("pagedown")  # on the last row: the next page, at its top
        await wait_until(pilot, lambda: offset() == 200 and table.cursor == 0)
        await pilot.press("pageup")  # on the first row: the page before, at its bottom
        await wait_until(pilot, lambda: offset() == 0 and table.cursor == 199)


@ui_test
async def test_listener_connections_show_their_first_bytes_in_the_flow_list() -> None:
    from netmon.testing.fake_engine import make_world, with_packetless_flows
    from netmon.ui.widgets import FlowsTable

    app, _link, _feed = build_app(with_packetless_flows(make_world(40, 2)))
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_flows(pilot)  # cluster 0 holds the listener connection
        table = screen.query_one(FlowsTable)
        await wait_until(pilot, lambda: table.listener)
        text = screen_text(app)
        assert "first bytes" in text
        assert "http  GET /\\x1b[2J HTTP/1.1" in text, text  # escaped, never raw
        assert "\x1b" not in text


@ui_test
async def test_a_page_with_a_known_process_grows_a_process_column() -> None:
    from dataclasses import replace

    from netmon.testing.fake_engine import make_world
    from netmon.ui.widgets import FlowsTable

    world = make_world(40, 2)
    world = replace(world, flows=tuple(replace(f, pid=4242, process="curl")
                                       for f in world.flows))
    app, _link, _feed = build_app(world)
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_flows(pilot)
        table = screen.query_one(FlowsTable)
        await wait_until(pilot, lambda: table.processes)
        text = screen_text(app)
        assert " process " in text and "curl[4242]" in text
