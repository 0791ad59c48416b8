"""One packet as Wireshark shows it: tshark's protocol tree beside (wide terminal) or
above (narrow) the frame's bytes in hex and ASCII; the selected item's bytes are
highlighted there. ``n`` / ``p`` move to the next / previous kept packet of the flow.

UI thread only. A dissection takes a moment (tshark starts and reads the flow's kept
frames), so the screen says so until the answer arrives; at most one is asked at a
time (pressing ``n`` five times asks for the fifth packet once the first is back) and
the last few answers are kept, so going back and forth is instant. Every label is
untrusted packet content and goes through ``safe_text``; bytes are shown as hex and
printable ASCII only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Vertical
from textual.widget import Widget
from textual.widgets import Footer, Static, Tree

from netmon.core.link import Dissection, DissectNode, ExportRequest, FlowQuery
from netmon.core.text import safe_text
from netmon.ui.format import flow_filter, flow_title, grouped
from netmon.ui.messages import PacketDissected, PacketsListed
from netmon.ui.screens._base import NetmonScreen
from netmon.ui.widgets import HeaderBar, HexView, ProtocolTree
from netmon.ui.widgets._hex_view import row_width

if TYPE_CHECKING:
    from netmon.core.values import FlowView

#: From this many columns on, the bytes go beside the tree instead of under it.
WIDE = 140
#: Dissections kept on the screen (back and forth with n / p without tshark again).
CACHE = 16


class _Line(Widget):
    """One line of text whose updates repaint it alone (``Static.update`` lays out the
    whole screen again: 30+ ms a key with a big tree)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.text = Text()

    def show(self, text: Text) -> None:
        self.text = text
        self.refresh()

    def render(self) -> Text:
        return self.text


class PacketScreen(NetmonScreen):
    """The protocol tree and bytes of one packet; n / p step through the flow's kept
    packets."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "step(1)", "Next pkt"),
        # Shadows the app's p (pause) here: pausing a single packet means nothing.
        Binding("p", "step(-1)", "Prev pkt"),
    ]

    def __init__(self, flow: FlowView, index: int, kept: Sequence[int] = ()) -> None:
        super().__init__()
        self.flow = flow
        self.index = index
        """The packet on screen (or being dissected)."""
        self.kept: tuple[int, ...] = tuple(kept)
        """The flow's kept packets, oldest first (refreshed from the engine)."""
        self.dissection: Dissection | None = None
        """The answer on screen (None until it arrives, or after an error)."""
        self.error = ""
        self._asked: int | None = None  # the index tshark is working on
        self._cache: OrderedDict[int, Dissection] = OrderedDict()
        self.context = f"flow {flow.flow_id} › packet {index}"

    def compose(self) -> ComposeResult:
        yield self.compose_header()
        yield Static(id="packet-status", classes="status")
        yield Static(id="dissection-note")
        with Container(id="dissection-body"):
            yield ProtocolTree(id="protocol-tree")
            with Vertical(id="bytes-pane"):
                yield _Line(id="bytes-caption")
                yield HexView(id="hex-view")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#dissection-body").display = False
        self._layout(self.size.width)
        self.query_one(ProtocolTree).focus()
        self._go(self.index)
        self.netmon.engine.list_packets(self.flow.flow_id, self)

    def on_resize(self, event: events.Resize) -> None:
        self._layout(event.size.width)

    def _layout(self, width: int) -> None:
        body = self.query_one("#dissection-body")
        body.set_class(width >= WIDE, "-wide")
        pane = self.query_one("#bytes-pane")
        pane.styles.width = row_width() + 2 if width >= WIDE else "1fr"

    # ------------------------------------------------------------------ packets
    def action_step(self, step: int) -> None:
        here = self.index
        later = [k for k in self.kept if k > here] if step > 0 else \
            [k for k in self.kept if k < here]
        if not later:
            where = "last" if step > 0 else "first"
            self.notify(f"packet #{here} is the {where} kept packet of this flow",
                        timeout=2)
            # a live flow may have more by now: the next press will know
            self.netmon.engine.list_packets(self.flow.flow_id, self)
            return
        self._go(min(later) if step > 0 else max(later))

    def _go(self, index: int) -> None:
        """Show packet ``index``: from the cache, or ask tshark (one at a time)."""
        self.index = index
        self.context = f"flow {self.flow.flow_id} › packet {index}"
        self.query_one(HeaderBar).set_context(self.context)
        self._show_status()
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            self._show(cached)
            return
        self._note(Text(f"dissecting packet #{index} with tshark…"))
        if self._asked is None:
            self._asked = index
            self.netmon.engine.dissect(self.flow.flow_id, index, self)

    def on_packets_listed(self, message: PacketsListed) -> None:
        answer = message.packets
        if answer.flow_id != self.flow.flow_id or answer.error:
            return
        self.kept = tuple(p.index for p in answer.packets)
        self._show_status()

    def on_packet_dissected(self, message: PacketDissected) -> None:
        d = message.dissection
        if d.flow_id != self.flow.flow_id or d.index != self._asked:
            return
        self._asked = None
        if not d.error:
            self._cache[d.index] = d
            while len(self._cache) > CACHE:
                self._cache.popitem(last=False)
        if d.index != self.index:  # the user moved on meanwhile: ask for that one
            self._go(self.index)
            return
        self._show(d)

    # ------------------------------------------------------------------ drawing
    def _show(self, d: Dissection) -> None:
        body = self.query_one("#dissection-body")
        if d.error:
            self.dissection = None
            self.error = d.error
            self._note(Text(f"cannot dissect packet #{d.index}: {safe_text(d.error)}",
                            "bold"), error=True)
            body.display = False
            return
        self.error = ""
        self.dissection = d
        if not d.tree:
            self._note(Text("(tshark printed nothing for this packet)"))
            body.display = False
            return
        self._note(None)
        body.display = True
        hexview = self.query_one(HexView)
        hexview.show_bytes(d.data)
        self._caption()
        self.query_one(ProtocolTree).show_tree(d.tree)

    def _note(self, text: Text | None, *, error: bool = False) -> None:
        note = self.query_one("#dissection-note", Static)
        note.display = text is not None
        note.set_class(error, "-error")
        if text is not None:
            note.update(text)

    def _show_status(self) -> None:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f"packet #{self.index}", "bold")
        line.append(f" of flow {flow_title(self.flow)}")
        if self.index in self.kept:
            line.append(f" · {self.kept.index(self.index) + 1} of {len(self.kept)} kept")
        elif self.kept:
            line.append(f" · no longer kept ({len(self.kept)} others are)")
        self.query_one("#packet-status", Static).update(line)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[DissectNode]) -> None:
        item = event.node.data
        if item is not None:
            self.query_one(HexView).highlight(item.start, item.length)
            self._caption(item)

    def _caption(self, item: DissectNode | None = None) -> None:
        """The line over the bytes: the frame's size, the selected item's range."""
        size = len(self.query_one(HexView).data)
        line = Text(f"frame {grouped(size)} bytes", "bold", no_wrap=True,
                    overflow="ellipsis")
        if item is None:
            pass
        elif item.start >= 0 and item.length > 0:
            end = item.start + item.length - 1
            line.append(f" · selected: bytes {item.start}–{end} ({grouped(item.length)})")
        else:
            line.append(" · selected: no bytes of this frame (generated, or from "
                        "reassembled data)")
        self.query_one("#bytes-caption", _Line).show(line)

    def export_request(self) -> ExportRequest:
        return ExportRequest(self.netmon.export_dir, FlowQuery(filter=flow_filter(self.flow)))
