"""The UI's side of :class:`~netmon.core.link.EngineLink`: every question names the
widget or screen that wants the answer, and the reply becomes a message posted to it.

Methods are called on the UI thread; the ``reply`` callables they hand to the link run
on whatever thread the engine answers on and only call ``post_message`` (thread
safe, never blocks). An answer for a screen that has since closed is dropped by
Textual (``post_message`` on a closed pump does nothing).
"""

from __future__ import annotations

from textual.message_pump import MessagePump

from netmon.core.link import (
    Dissection,
    EngineLink,
    ExportRequest,
    ExportResult,
    FlowPage,
    FlowQuery,
    FollowStream,
    HostPage,
    PacketExportRequest,
    PacketExportResult,
    PacketList,
)
from netmon.ui.messages import (
    ExportFinished,
    FlowsListed,
    HostsListed,
    PacketDissected,
    PacketsExported,
    PacketsListed,
    StreamFollowed,
)


class EngineBridge:
    """Ask the engine; get the answer back as a message."""

    def __init__(self, link: EngineLink) -> None:
        self.link = link

    def list_flows(self, query: FlowQuery, target: MessagePump) -> None:
        def reply(page: FlowPage) -> None:
            target.post_message(FlowsListed(page))

        self.link.query_flows(query, reply)

    def list_hosts(self, query: FlowQuery, target: MessagePump) -> None:
        def reply(page: HostPage) -> None:
            target.post_message(HostsListed(page))

        self.link.query_hosts(query, reply)

    def list_packets(self, flow_id: int, target: MessagePump) -> None:
        def reply(packets: PacketList) -> None:
            target.post_message(PacketsListed(packets))

        self.link.query_packets(flow_id, reply)

    def dissect(self, flow_id: int, index: int, target: MessagePump) -> None:
        def reply(dissection: Dissection) -> None:
            target.post_message(PacketDissected(dissection))

        self.link.dissect(flow_id, index, reply)

    def export(self, request: ExportRequest, target: MessagePump) -> None:
        def reply(result: ExportResult) -> None:
            target.post_message(ExportFinished(result))

        self.link.export(request, reply)

    def stop(self) -> None:
        self.link.stop()

    def follow(self, flow_id: int, target: MessagePump) -> None:
        def reply(stream: FollowStream) -> None:
            target.post_message(StreamFollowed(stream))

        self.link.follow(flow_id, reply)

    def export_packets(self, request: PacketExportRequest, target: MessagePump) -> None:
        def reply(result: PacketExportResult) -> None:
            target.post_message(PacketsExported(result))

        self.link.export_packets(request, reply)
