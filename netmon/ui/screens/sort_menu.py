"""The sort menu (F6 or ``o`` on a list, as htop's "Sort by"): every column the list
sorts by, the current one marked with its direction; Enter picks, Esc leaves.

UI thread only. It returns the chosen sort key (None when left) to the screen that
opened it, which sorts (picking the current key again turns the order round).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import OptionList
from textual.widgets.option_list import Option


class SortMenu(ModalScreen[str | None]):
    """A pick list of ``sorts`` ((key, name) pairs) over the current screen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f6,o", "leave", "Close"),
    ]

    def __init__(self, sorts: Sequence[tuple[str, str]], current: str,
                 descending: bool) -> None:
        super().__init__()
        self.sorts = tuple(sorts)
        self.current = current
        self.descending = descending

    def compose(self) -> ComposeResult:
        arrow = "▼" if self.descending else "▲"
        options = [Option(Text(f"{name} {arrow} (again: reverse)" if key == self.current
                               else name), id=key) for key, name in self.sorts]
        menu = OptionList(*options, id="sort-menu")
        menu.border_title = "sort by"
        menu.border_subtitle = "Enter picks · Esc closes"
        yield menu

    def on_mount(self) -> None:
        menu = self.query_one(OptionList)
        keys = [k for k, _ in self.sorts]
        menu.highlighted = keys.index(self.current) if self.current in keys else 0
        menu.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_leave(self) -> None:
        self.dismiss(None)
