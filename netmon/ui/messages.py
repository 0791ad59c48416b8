"""Typed, past-tense messages that carry the engine's news and answers into the UI.

Created on any thread (the engine's callbacks run on the reactor thread) and posted
with ``post_message``, which is thread safe; handled on the UI thread. Snapshots
carry ``can_replace`` so a burst that arrives while the UI is busy collapses into
the newest one.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from netmon.core.link import (
    Dissection,
    ExportResult,
    FlowPage,
    FollowStream,
    HostPage,
    PacketExportResult,
    PacketList,
)
from netmon.core.values import Snapshot


@dataclass
class SnapshotPublished(Message):
    """The engine published a new tick."""

    snapshot: Snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotPublished)


@dataclass
class FlowsListed(Message):
    """The engine answered a flow query with one page of flows."""

    page: FlowPage


@dataclass
class HostsListed(Message):
    """The engine answered a hosts query."""

    page: HostPage


@dataclass
class PacketsListed(Message):
    """The engine listed the retained packets of one flow."""

    packets: PacketList


@dataclass
class PacketDissected(Message):
    """tshark (through pyshark) dissected one packet."""

    dissection: Dissection


@dataclass
class ExportFinished(Message):
    """An export of the current view was written (or failed: ``result.error``)."""

    result: ExportResult


@dataclass
class SourceFailed(Message):
    """A source reported itself failed in a snapshot (posted once per failure)."""

    name: str
    reason: str


@dataclass
class StreamFollowed(Message):
    """The engine reassembled a flow's stream from its kept packets."""

    stream: FollowStream


@dataclass
class PacketsExported(Message):
    """Kept packets were written as a pcapng (or not: ``result.error``)."""

    result: PacketExportResult
