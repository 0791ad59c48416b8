"""The UI's questions to the engine and the engine's answers: frozen value types and
the :class:`EngineLink` protocol.

Pure module. The UI (main thread) calls an ``EngineLink`` method; the engine runs the
request on its reactor thread and calls ``reply`` there with one of the answer types
below. ``reply`` must not block: the UI's implementation posts a Textual message.
Tests give the UI a fake link that answers from fixed data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from netmon.core.values import FlowView

#: Columns a flow list can be sorted by (FlowView attribute names).
FLOW_SORT_KEYS = ("bytes", "packets", "pkts_a2b", "pkts_b2a", "bytes_a2b", "bytes_b2a",
                  "first_epoch", "last_epoch", "duration", "addr_a", "addr_b", "port_a",
                  "port_b", "proto", "outlier", "cluster_id")


@dataclass(frozen=True, slots=True)
class FlowQuery:
    """Which live flows to list: a cluster (None = all), a filter in netmon's filter
    language (``host 10.0.0.1 and not port 22``), a sort column and a page."""

    cluster_id: int | None = None
    filter: str = ""
    sort: str = "bytes"
    descending: bool = True
    offset: int = 0
    limit: int = 200


@dataclass(frozen=True, slots=True)
class FlowPage:
    """Answer to a FlowQuery. ``error`` is a one-line reason when the filter is bad."""

    query: FlowQuery
    flows: tuple[FlowView, ...]
    total: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class HostRow:
    """One host among a flow list's flows (the hosts view of a cluster)."""

    address: str
    flows: int
    peers: int
    ports: int
    packets: int
    bytes: int


@dataclass(frozen=True, slots=True)
class HostPage:
    query: FlowQuery
    hosts: tuple[HostRow, ...]
    total: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class PacketInfo:
    """One retained packet of a flow. ``direction`` is +1 a->b, -1 b->a."""

    index: int
    ts: float
    direction: int
    size: int
    flags: str  # "SYN,ACK" for TCP, "echo-request" style for ICMP, "" otherwise


@dataclass(frozen=True, slots=True)
class PacketList:
    """The recent packets netmon still holds for a flow (a bounded ring keeps them)."""

    flow_id: int
    flow: FlowView | None
    packets: tuple[PacketInfo, ...]
    dropped_older: int = 0  # packets of this flow no longer in the ring
    error: str = ""
    tier: str = "memory"  # where the bytes come from: "memory", or "disk" (--keep-packets)


@dataclass(frozen=True, slots=True)
class Dissection:
    """tshark's full dissection of one packet, as indented text lines."""

    flow_id: int
    index: int
    lines: tuple[str, ...]
    error: str = ""


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """Write the current view: flows (the query's) and clusters, CSV and JSON."""

    directory: str
    query: FlowQuery
    cluster_id: int | None = None  # also write the BPF filter matching this cluster


@dataclass(frozen=True, slots=True)
class ExportResult:
    paths: tuple[str, ...]
    bpf: str = ""
    error: str = ""


class EngineLink(Protocol):
    """What the UI may ask of the engine; every reply arrives once, off the UI thread."""

    def query_flows(self, query: FlowQuery, reply: Callable[[FlowPage], None]) -> None: ...

    def query_hosts(self, query: FlowQuery, reply: Callable[[HostPage], None]) -> None: ...

    def query_packets(self, flow_id: int, reply: Callable[[PacketList], None]) -> None: ...

    def dissect(self, flow_id: int, index: int,
                reply: Callable[[Dissection], None]) -> None: ...

    def export(self, request: ExportRequest, reply: Callable[[ExportResult], None]) -> None: ...

    def stop(self) -> None: ...
