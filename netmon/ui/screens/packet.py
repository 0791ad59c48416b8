"""One packet's full dissection by tshark (through pyshark, on the engine's side).

UI thread only. The dissection takes a moment (tshark starts and reads the flow's
retained frames), so the screen says so until the answer arrives. Every line is
untrusted packet content and goes through ``safe_text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from netmon.core.link import ExportRequest, FlowQuery
from netmon.core.text import safe_text
from netmon.ui.format import flow_filter, flow_title
from netmon.ui.messages import PacketDissected
from netmon.ui.screens._base import NetmonScreen

if TYPE_CHECKING:
    from netmon.core.values import FlowView


def dissection_text(lines: Sequence[str]) -> Text:
    """tshark's protocol tree: top-level layers bold, everything made safe to print."""
    out = Text(no_wrap=True, overflow="ellipsis")
    for n, raw in enumerate(lines):
        line = safe_text(raw.rstrip("\r\n"))
        if n:
            out.append("\n")
        out.append(line, "bold" if line and not line[0].isspace() else "")
    return out


class PacketScreen(NetmonScreen):
    """The protocol tree of one packet; arrows and PgUp/PgDn scroll."""

    BINDINGS: ClassVar[list[BindingType]] = []

    def __init__(self, flow: FlowView, index: int) -> None:
        super().__init__()
        self.flow = flow
        self.index = index
        self.lines: tuple[str, ...] = ()
        self.error = ""
        self.context = f"flow {flow.flow_id} › packet {index}"

    def compose(self) -> ComposeResult:
        yield self.compose_header()
        yield Static(Text(f"packet #{self.index} of {flow_title(self.flow)}", "bold"),
                     id="packet-status", classes="status")
        with VerticalScroll(id="dissection-scroll"):
            yield Static(Text(f"dissecting packet #{self.index} with tshark…"),
                         id="dissection")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#dissection-scroll").focus()
        self.netmon.engine.dissect(self.flow.flow_id, self.index, self)

    def on_packet_dissected(self, message: PacketDissected) -> None:
        d = message.dissection
        if (d.flow_id, d.index) != (self.flow.flow_id, self.index):
            return
        body = self.query_one("#dissection", Static)
        if d.error:
            self.error = d.error
            body.update(Text(f"cannot dissect packet #{self.index}: {safe_text(d.error)}",
                             "bold"))
            body.add_class("-error")
            return
        self.lines = d.lines
        body.update(dissection_text(d.lines) if d.lines else Text("(tshark printed nothing)"))

    def export_request(self) -> ExportRequest:
        return ExportRequest(self.netmon.export_dir, FlowQuery(filter=flow_filter(self.flow)))
