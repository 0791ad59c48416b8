"""Keys users of htop and termshark reach for: F1 help, F3 filter, F10 quit, S to
reverse the cluster list; a question with no answer says so where the rows would be."""

from __future__ import annotations

from netmon.ui.screens import FlowsScreen
from netmon.ui.screens.help import HelpScreen
from netmon.ui.widgets import FilterBar
from tests.ui_support import build_app, clusters_shown, screen_text, ui_test, wait_until


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
