"""What every netmon screen shares: the header, Esc/export keys, snapshot hand-off,
and the pacing of repeated questions to the engine.

UI thread only.
"""

from __future__ import annotations

import time
from typing import ClassVar, Protocol, cast

from textual.binding import Binding, BindingType
from textual.screen import Screen

from netmon.core.link import ExportRequest, PacketExportRequest
from netmon.ui.link import EngineBridge
from netmon.ui.widgets import HeaderBar, ViewState


class ScreenHost(Protocol):
    """What a screen uses of the app that hosts it (:class:`netmon.ui.app.NetmonApp`):
    typed here so screens need not import the app, which imports them."""

    engine: EngineBridge
    """The UI's end of the link to the engine: drill-down questions go through it."""
    tick: float
    """Seconds between snapshots (the x step of the rate chart)."""
    export_dir: str
    """Where ``e`` writes its files."""
    view: ViewState
    """The snapshot on screen, the newest one, and whether the view is paused."""

    def start_export(self, request: ExportRequest) -> None:
        """Write the export files off the UI thread; a toast says how it went."""

    def start_packet_export(self, request: PacketExportRequest) -> None:
        """Write kept packets as a pcapng off the UI thread; a toast says what was
        written."""


class Refresher:
    """Paces a question asked again and again (a flow page, a packet list): at most
    one in flight, at most one per ``interval`` seconds, and a lost answer is given
    up after ``timeout`` seconds."""

    def __init__(self, interval: float = 1.0, timeout: float = 5.0) -> None:
        self.interval = interval
        self.timeout = timeout
        self.in_flight = False
        self.asked_at = -1e9

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if self.in_flight and now - self.asked_at < self.timeout:
            return False
        return now - self.asked_at >= self.interval

    def asked(self) -> None:
        self.in_flight = True
        self.asked_at = time.monotonic()

    def answered(self) -> None:
        self.in_flight = False


class NetmonScreen(Screen):
    """A screen with the header bar, fed with the app's view state."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("e", "export", "Export"),
    ]

    context = ""
    """Where the user is, for the header's second line ("cluster 3 › flows")."""

    @property
    def netmon(self) -> ScreenHost:
        return cast(ScreenHost, self.app)

    def compose_header(self) -> HeaderBar:
        header = HeaderBar()
        header.context = self.context
        return header

    def on_screen_resume(self) -> None:
        self.show_view(self.netmon.view)

    def show_view(self, view: ViewState) -> None:
        """A snapshot arrived or the pause state changed; subclasses add their panes."""
        self.query_one(HeaderBar).show(view)

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def action_export(self) -> None:
        request = self.export_request()
        if request is not None:
            self.netmon.start_export(request)

    def export_request(self) -> ExportRequest | None:
        """What ``e`` writes on this screen (None: nothing to export here)."""
        return None

    def action_write_packets(self) -> None:
        request = self.packets_request()
        if isinstance(request, str):
            self.notify(request, severity="warning", timeout=5, markup=False)
        else:
            self.netmon.start_packet_export(request)

    def packets_request(self) -> PacketExportRequest | str:
        """What ``w`` writes on this screen as a pcapng, or why nothing can be."""
        return "w writes kept packets as a pcapng: on a cluster, a cluster's flow list or a flow"
