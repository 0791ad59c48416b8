"""The help screen (``?``) and the "terminal too small" screen.

UI thread only.
"""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

#: (keys, what they do) in the order the help lists them.
KEYS: tuple[tuple[str, str], ...] = (
    ("Enter", "open: cluster → its flows → a flow → packet dissection"),
    ("Esc", "back; also closes the filter bar and this help"),
    ("↑ ↓ PgUp PgDn", "move the cursor (also j / k, Home, End)"),
    ("/  F3", "filter: host A, port N, proto udp, cluster N, at NAME; and, or, not, ( )"),
    ("s  S", "sort by the next column; S reverses the order"),
    ("F6  o", "sort menu: pick the column (also: click a column's title)"),
    ("h", "flow list: the hosts among its flows, and back"),
    ("[  ]", "flow list: previous / next page"),
    ("p  Space", "pause the view; capture goes on, the header counts it"),
    ("n  p", "packet: next / previous kept packet of the flow"),
    ("← →", "packet: collapse / expand; the item's bytes light up"),
    ("e", "export the view: flows, clusters (CSV, JSON), a BPF"),
    ("f", "flow: follow its TCP/UDP stream, both directions (h there: hex / text)"),
    ("w", "write kept packets as a pcapng: a flow's, or a cluster's (cluster row, "
          "cluster flow list)"),
    ("t", "next colour theme"),
    ("?  F1", "this help"),
    ("q  F10", "quit"),
)


def keys_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True, style="bold")
    table.add_column()
    for keys, what in KEYS:
        table.add_row(keys, what)
    return table


class HelpScreen(ModalScreen[None]):
    """Every key, over the current view."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,enter", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box") as box:
            box.border_title = "netmon keys"
            box.border_subtitle = "Esc closes"
            yield Static(keys_table())
            yield Static(Text("Over SSH, netmon leaves its own connection out of the "
                              "capture; the header says so."), id="help-note")

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)


class TooSmallScreen(Screen[None]):
    """Shown instead of everything else while the terminal is below the minimum size."""

    def __init__(self, need: tuple[int, int]) -> None:
        super().__init__()
        self.need = need

    def compose(self) -> ComposeResult:
        yield Static(id="too-small")

    def show_size(self, width: int, height: int) -> None:
        w, h = self.need
        self.query_one("#too-small", Static).update(
            Text(f"netmon needs a terminal of at least {w}x{h}; this one is "
                 f"{width}x{height}.\nEnlarge it, or press q to quit."))

    def on_mount(self) -> None:
        self.show_size(*self.app.size)
