"""Follow stream: a flow's TCP or UDP payload, both directions, as text or hex.

UI thread only. The engine reassembles the stream from the flow's kept packets (see
netmon.ingest.follow) and answers once; this screen renders it the way Wireshark's
"Follow Stream" window does: the initiator's bytes in red, the responder's in blue,
in the order they were sent, with a note where bytes were not kept. Payload is
untrusted: the text view shows printable ASCII and line breaks only (every other byte
a dot, as ``tshark -z follow,...,ascii`` prints it), the hex view only hex digits and
that same ASCII; nothing raw reaches the terminal. ``h`` switches between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from netmon.core.link import FollowChunk, FollowStream, PacketExportRequest
from netmon.core.text import payload_ascii, safe_text
from netmon.core.units import human_bytes
from netmon.ui.format import flow_title, grouped
from netmon.ui.messages import StreamFollowed
from netmon.ui.screens._base import NetmonScreen

if TYPE_CHECKING:
    from netmon.core.values import FlowView

#: Wireshark's colours for the two sides of a conversation.
CLIENT_STYLE = "red"
SERVER_STYLE = "blue"
#: Payload bytes rendered at most (the rest is counted, not drawn: a long stream
#: would make the screen slow to lay out).
MAX_SHOWN = 256 * 1024
_HEX_ROW = 16


def _gap_note(c: FollowChunk) -> str:
    if c.missing:
        noun = "byte" if c.missing == 1 else "bytes"
        return f"[{grouped(c.missing)} {noun} not kept]"
    noun = "packet" if c.packets == 1 else "packets"
    return f"[{grouped(c.packets)} {noun} not kept]"


def _style(direction: int) -> str:
    return CLIENT_STYLE if direction > 0 else SERVER_STYLE if direction < 0 else "bold"


def stream_text(chunks: Sequence[FollowChunk], limit: int = MAX_SHOWN) -> Text:
    """The stream as text: each side's bytes in its colour, gaps as notes."""
    out = Text()
    shown = 0
    at_line_start = True
    last = None
    for c in chunks:
        if c.missing or c.packets:
            if not at_line_start:
                out.append("\n")
            out.append(_gap_note(c), f"{_style(c.direction)} reverse")
            out.append("\n")
            at_line_start, last = True, c.direction
            continue
        if shown >= limit:
            break
        data = c.data[:limit - shown]
        shown += len(data)
        if last is not None and c.direction != last and not at_line_start:
            out.append("\n")  # a new side starts on a line of its own
        text = payload_ascii(data, keep_cr=False)
        out.append(text, _style(c.direction))
        at_line_start, last = text.endswith("\n") or (at_line_start and not text), c.direction
    left = sum(len(c.data) for c in chunks) - shown
    if left > 0:
        out.append(f"\n… {grouped(left)} more bytes not shown", "italic")
    return out


def stream_hex(chunks: Sequence[FollowChunk], limit: int = MAX_SHOWN) -> Text:
    """The stream as a hex dump, chunk by chunk, offsets counted per direction
    (Wireshark's hex dump view; each side in its colour, not indented, so a row fits
    80 columns)."""
    out = Text(no_wrap=True)
    offset = {1: 0, -1: 0, 0: 0}
    shown = 0
    for c in chunks:
        if c.missing or c.packets:
            out.append(f"{_gap_note(c)}\n", f"{_style(c.direction)} reverse")
            offset[c.direction] += c.missing
            continue
        if shown >= limit:
            break
        data = c.data[:limit - shown]
        shown += len(data)
        for i in range(0, len(data), _HEX_ROW):
            row = data[i:i + _HEX_ROW]
            hexes = " ".join(f"{b:02x}" for b in row)
            line = (f"{offset[c.direction] + i:08x}  {hexes:<{_HEX_ROW * 3 - 1}}  "
                    f"{payload_ascii(row).replace(chr(10), '.').replace(chr(13), '.')}\n")
            out.append(line, _style(c.direction))
        offset[c.direction] += len(c.data)
    left = sum(len(c.data) for c in chunks) - shown
    if left > 0:
        out.append(f"… {grouped(left)} more bytes not shown", "italic")
    return out


def stream_header(stream: FollowStream) -> Text:
    """Bytes each way, what is missing, and which colour is which side."""
    t = Text(no_wrap=True, overflow="ellipsis")
    flow = stream.flow
    a = f"{flow.addr_a}:{flow.port_a}" if flow else "a"
    b = f"{flow.addr_b}:{flow.port_b}" if flow else "b"
    t.append(safe_text(f"{a} → {human_bytes(stream.bytes_a2b)}", 60), CLIENT_STYLE)
    if stream.missing_a2b:
        t.append(f" (+{human_bytes(stream.missing_a2b)} not kept)")
    t.append(" · ")
    t.append(safe_text(f"{b} → {human_bytes(stream.bytes_b2a)}", 60), SERVER_STYLE)
    if stream.missing_b2a:
        t.append(f" (+{human_bytes(stream.missing_b2a)} not kept)")
    t.append("\n")
    t.append(f"from {grouped(stream.packets_used)} kept packets")
    if stream.packets_not_kept:
        t.append(f" · {grouped(stream.packets_not_kept)} packets of this flow not kept")
    return t


class FollowScreen(NetmonScreen):
    """A flow's stream; ``h`` toggles the hex dump, arrows and PgUp/PgDn scroll."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("h", "toggle_hex", "Hex/text"),
        Binding("w", "write_packets", "Write pcapng"),
    ]

    def __init__(self, flow: FlowView) -> None:
        super().__init__()
        self.flow = flow
        self.stream: FollowStream | None = None
        self.hex = False
        self.context = f"flow {flow.flow_id} › stream"

    def compose(self) -> ComposeResult:
        yield self.compose_header()
        yield Static(Text(f"stream of {flow_title(self.flow)}", "bold", no_wrap=True,
                          overflow="ellipsis"), id="follow-title", classes="status")
        yield Static(Text("reassembling the kept packets…"), id="follow-status")
        with VerticalScroll(id="follow-scroll"):
            yield Static(id="follow-body")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#follow-scroll").focus()
        self.netmon.engine.follow(self.flow.flow_id, self)

    def on_stream_followed(self, message: StreamFollowed) -> None:
        s = message.stream
        if s.flow_id != self.flow.flow_id:
            return
        self.stream = s
        status = self.query_one("#follow-status", Static)
        if s.error:
            status.update(Text(f"cannot follow this flow: {safe_text(s.error, 300)}", "bold"))
            status.add_class("-error")
            return
        status.update(stream_header(s))
        self._render_body()

    def _render_body(self) -> None:
        s = self.stream
        if s is None or s.error:
            return
        body = self.query_one("#follow-body", Static)
        if not s.chunks:
            body.update(Text("(no payload in the kept packets: handshakes and "
                             "acknowledgements only)", "italic"))
            return
        body.update(stream_hex(s.chunks) if self.hex else stream_text(s.chunks))

    def action_toggle_hex(self) -> None:
        self.hex = not self.hex
        if self.stream is None or self.stream.error:
            self.notify("nothing to show yet" if self.stream is None
                        else "this flow has no stream to show", timeout=3)
            return
        self._render_body()

    def packets_request(self) -> PacketExportRequest:
        return PacketExportRequest(self.netmon.export_dir, flow_id=self.flow.flow_id)
