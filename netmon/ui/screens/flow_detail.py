"""One flow: its counters and the packets netmon keeps of it (first and most recent).

UI thread only. The packet list (and the flow's latest counters, which come with it)
is asked for again about once a second while the view is live. From here ``f``
follows the flow's stream and ``w`` writes its kept packets as a pcapng. A flow that
has no packets at all (a listener connection, a NetFlow/IPFIX record) says so and
shows what is known of it instead, and every key that has nothing to work on says
why rather than doing nothing.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Static

from netmon.core.link import (
    ExportRequest,
    FlowQuery,
    PacketExportRequest,
    PacketList,
    no_packets_reason,
)
from netmon.core.text import safe_text
from netmon.core.units import duration, human_bytes, si
from netmon.core.values import PROTO_TCP, PROTO_UDP, FlowView, proto_name
from netmon.ui.format import (
    clock,
    flow_filter,
    flow_title,
    grouped,
)
from netmon.ui.messages import PacketsListed
from netmon.ui.screens._base import NetmonScreen, Refresher
from netmon.ui.screens.follow import FollowScreen
from netmon.ui.screens.packet import PacketScreen
from netmon.ui.widgets import LiveTable, PacketsTable, ViewState


def flow_stats(flow: FlowView) -> Text:
    """The flow's counters as a few short lines (they fit 80 columns)."""
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(flow_title(flow), "bold")
    t.append("\n")
    if flow.cluster_id is not None:
        t.append(f"cluster {flow.cluster_id} {safe_text(flow.cluster_label, 40)} · ")
    t.append(f"oddness {flow.outlier:.1f}")
    if flow.observer:
        t.append(f" · seen at {safe_text(flow.observer, 40)}")
    t.append("\n")
    t.append(f"a→b {si(flow.pkts_a2b)} pkts {human_bytes(flow.bytes_a2b)} · "
             f"b→a {si(flow.pkts_b2a)} pkts {human_bytes(flow.bytes_b2a)} · "
             f"total {si(flow.packets)} pkts {human_bytes(flow.bytes)}\n")
    t.append(f"first {clock(flow.first_epoch)} · last {clock(flow.last_epoch)} · "
             f"{duration(flow.duration)}")
    if flow.end_reason:
        t.append(f" · ended: {safe_text(flow.end_reason)}")
    t.append("\n")
    if flow.proto == 6:
        t.append(f"TCP flags: SYN {flow.syn} · SYN-ACK {flow.synack} · FIN {flow.fin} · "
                 f"RST {flow.rst} · PSH {flow.psh}\n")
    if flow.exported:
        # Flow records give totals only: no per-packet sizes, gaps or packets to list.
        t.append(f"size {flow.size_mean:.0f}B mean · gap {duration(flow.iat_mean)} mean · "
                 "no per-packet detail (exported records)")
        return t
    t.append(f"size {flow.size_mean:.0f}±{flow.size_std:.0f}B · "
             f"gap {duration(flow.iat_mean)}±{duration(flow.iat_std)}")
    if flow.first_sizes:
        t.append(" · first " + " ".join(f"{s:+d}" for s in flow.first_sizes))
    return t


#: Characters of a listener connection's escaped first bytes shown.
PREVIEW_MAX = 160


def known_text(flow: FlowView) -> Text:
    """What is known of a flow that has no packets, instead of a packet list."""
    t = Text()
    if flow.listener:
        t.append("a connection to netmon's listener", "bold")
        t.append(": counted from the socket, so there are no packets to list, dissect, "
                 "follow or write\n")
        t.append("first bytes: ")
        t.append(safe_text(flow.first_class or "not classified yet", 20), "bold")
        t.append("\n")
        if flow.preview:
            # Already escaped by the listener (\\xNN); made inert and capped again here.
            t.append("first bytes, escaped: ")
            t.append(safe_text(flow.preview, PREVIEW_MAX), "italic")
        else:
            t.append("first bytes: none received", "italic")
    elif flow.exported:
        t.append("an exported flow record", "bold")
        where = f" from {safe_text(flow.observer, 60)}" if flow.observer else ""
        t.append(f"{where}: packets, bytes and times as the exporter counted them; no "
                 "packet of it was captured here, so there is nothing to list, dissect, "
                 "follow or write")
    return t


class FlowScreen(NetmonScreen):
    """A flow's stats over its kept packets; Enter dissects the packet, ``f``
    follows the stream, ``w`` writes the kept packets."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "follow", "Follow"),
        Binding("w", "write_packets", "Write pcapng"),
        Binding("enter", "explain", "Open", show=False),  # only when the table is hidden
    ]

    def __init__(self, flow: FlowView) -> None:
        super().__init__()
        self.flow = flow
        self.refresher = Refresher()
        self.listed: PacketList | None = None  # the latest answer without an error
        self.error = ""
        self.context = f"flow {flow.flow_id}"

    def compose(self) -> ComposeResult:
        yield self.compose_header()
        yield Static(flow_stats(self.flow), id="flow-stats")
        yield Static(id="packets-status", classes="status")
        yield Static(id="flow-known")
        yield PacketsTable(id="packets")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._show_known()
        self._show_status()
        self.ask()

    def _show_known(self) -> None:
        packetless = bool(no_packets_reason(self.flow))
        self.query_one("#flow-known", Static).display = packetless
        table = self.query_one(PacketsTable)
        table.display = not packetless
        table.can_focus = not packetless  # Enter then reaches the screen, which says why
        if packetless and self.focused is table:
            self.set_focus(None)
        if packetless:
            self.query_one("#flow-known", Static).update(known_text(self.flow))

    def ask(self) -> None:
        self.refresher.asked()
        self.netmon.engine.list_packets(self.flow.flow_id, self)

    def show_view(self, view: ViewState) -> None:
        super().show_view(view)
        if not view.paused and self.refresher.due():
            self.ask()

    def on_packets_listed(self, message: PacketsListed) -> None:
        answer = message.packets
        if answer.flow_id != self.flow.flow_id:
            return
        self.refresher.answered()
        self.error = answer.error
        if answer.flow is not None and answer.flow != self.flow:
            self.flow = answer.flow
            self.query_one("#flow-stats", Static).update(flow_stats(self.flow))
            self._show_known()
        if not answer.error:
            self.listed = answer
            table = self.query_one(PacketsTable)
            table.empty_text = ("a flow from exported records: its packets were never here"
                                if self.flow.exported
                                else "no packets of this flow are kept")
            table.show_packets(answer.packets, self.flow.first_epoch)
        self._show_status()

    def _show_status(self) -> None:
        line = Text(no_wrap=True, overflow="ellipsis")
        if no_packets_reason(self.flow):
            line.append("no packets exist for this flow", "bold")
            line.append(" · what is known of it is below")
            self.query_one("#packets-status", Static).update(line)
            return
        listed = self.listed
        if listed is None:
            line.append("asking which packets are kept…")
        else:
            total = max(listed.total, self.flow.packets)
            line.append(f"{grouped(listed.kept)} of {grouped(total)} packets kept", "bold")
            for where in ("first", "recent", "disk"):
                n = sum(1 for p in listed.packets if p.kept == where)
                if n:
                    line.append(f" · {where} {grouped(n)}")
            if any(p.has_bytes for p in listed.packets):
                line.append(" · Enter dissects with tshark")
        if self.error:
            line.append(" · ")
            line.append(safe_text(self.error), "bold reverse")
        self.query_one("#packets-status", Static).update(line)

    def on_live_table_selected(self, event: LiveTable.Selected) -> None:
        self.app.push_screen(PacketScreen(self.flow, int(event.key)))  # type: ignore[arg-type]

    def export_request(self) -> ExportRequest:
        return ExportRequest(self.netmon.export_dir, FlowQuery(filter=flow_filter(self.flow)),
                             cluster_id=None)

    # ------------------------------------------------------------ keys with nothing to do
    def _why_nothing(self) -> str:
        return no_packets_reason(self.flow) or (
            "no packet of this flow is kept now: nothing to dissect")

    def on_live_table_nothing_selected(self, _event: LiveTable.NothingSelected) -> None:
        self.notify(self._why_nothing(), severity="warning", timeout=5, markup=False)

    def action_explain(self) -> None:
        self.notify(self._why_nothing(), severity="warning", timeout=5, markup=False)

    def action_follow(self) -> None:
        why = no_packets_reason(self.flow)
        if not why and self.flow.proto not in (PROTO_TCP, PROTO_UDP):
            why = (f"only TCP and UDP streams can be followed; this is a "
                   f"{proto_name(self.flow.proto)} flow")
        if why:
            self.notify(why, severity="warning", timeout=5, markup=False)
            return
        self.app.push_screen(FollowScreen(self.flow))

    def packets_request(self) -> PacketExportRequest | str:
        return no_packets_reason(self.flow) or PacketExportRequest(
            self.netmon.export_dir, flow_id=self.flow.flow_id)
