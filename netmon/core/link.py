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
                  "port_b", "proto", "outlier", "cluster_id", "rate")


@dataclass(frozen=True, slots=True)
class FlowQuery:
    """Which flows to list: a cluster (None = all), a filter in netmon's filter
    language (``host 10.0.0.1 and not port 22``), a sort column and a page."""

    cluster_id: int | None = None
    filter: str = ""
    sort: str = "bytes"
    descending: bool = True
    offset: int = 0
    limit: int = 200
    #: Also the ended flows still kept (``--keep-ended``), as a finished replay's list.
    ended: bool = True


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
    #: A name the traffic gave this address (server name of flows it answered, or a
    #: DNS answer); untrusted wire text, escaped and capped; "" when none.
    name: str = ""


@dataclass(frozen=True, slots=True)
class HostPage:
    query: FlowQuery
    hosts: tuple[HostRow, ...]
    total: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class PacketInfo:
    """One kept packet of a flow (``index``: its number in the flow, 0 = first).
    ``direction`` is +1 a->b, -1 b->a; ``kept`` says where it is kept ("first": one of
    the flow's first packets, "recent": one of its most recent); ``has_bytes`` whether
    its bytes are (dissection needs them)."""

    index: int
    ts: float
    direction: int
    size: int
    flags: str  # "SYN,ACK" for TCP, "echo-request" style for ICMP, "" otherwise
    kept: str = "recent"
    has_bytes: bool = True


@dataclass(frozen=True, slots=True)
class PacketList:
    """The packets netmon keeps of a flow (its first and most recent ones): ``kept`` (K)
    of its ``total`` (N) packets, of which ``packets`` lists the newest MAX_PACKETS."""

    flow_id: int
    flow: FlowView | None
    packets: tuple[PacketInfo, ...]
    total: int = 0  # the flow's packets (N), kept or not
    error: str = ""
    kept: int = 0  # packets of the flow kept (K)
    tier: str = "memory"  # where the bytes come from: "memory", or "disk" (--keep-packets)


@dataclass(frozen=True, slots=True)
class Dissection:
    """tshark's full dissection of one packet: its protocol tree (top-level layers,
    each with its fields) and the frame's bytes, which the tree's ranges point into."""

    flow_id: int
    index: int
    tree: tuple[DissectNode, ...] = ()
    data: bytes = b""  # the frame as tshark read it (may be shorter than on the wire)
    error: str = ""

    @property
    def lines(self) -> tuple[str, ...]:
        """The tree as ``tshark -V`` prints it: one line per node, 4 spaces a level."""
        return tree_lines(self.tree)


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
    flows: int = 0  # flow rows written (every live flow of the view)
    clusters: int = 0  # cluster rows written
    bpf_cluster: int | None = None  # the cluster the BPF matches


@dataclass(frozen=True, slots=True)
class FollowChunk:
    """One piece of a followed stream, in the order tshark's ``-z follow`` prints them.

    ``direction`` is +1 for bytes the initiator (a) sent, -1 for the responder's, 0 when
    unknown. A chunk holds either payload (``data``) or a note that bytes were not kept:
    ``missing`` of this direction's bytes (known from TCP sequence numbers or a snapped
    payload's lengths), or ``packets`` whole packets whose size is unknown (UDP packets
    not kept, TCP packets before the first kept one).
    """

    direction: int
    data: bytes = b""
    missing: int = 0
    packets: int = 0


@dataclass(frozen=True, slots=True)
class FollowStream:
    """A flow's TCP or UDP payload in both directions from its kept packets.

    ``packets_used`` frames gave payload; ``packets_not_kept`` of the flow's packets had
    no bytes kept; ``bytes_*`` count payload shown, ``missing_*`` bytes known to be
    missing, each way (a = the initiator).
    """

    flow_id: int
    flow: FlowView | None
    chunks: tuple[FollowChunk, ...] = ()
    bytes_a2b: int = 0
    bytes_b2a: int = 0
    missing_a2b: int = 0
    missing_b2a: int = 0
    packets_used: int = 0
    packets_not_kept: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class PacketExportRequest:
    """Write the kept packets of some flows as one pcapng in ``directory``: one flow
    (``flow_id``) or every live flow of a cluster (``cluster_id``)."""

    directory: str
    flow_id: int | None = None
    cluster_id: int | None = None


@dataclass(frozen=True, slots=True)
class PacketExportResult:
    """What was written: ``packets`` kept packets of ``flows`` flows to ``path``, and
    ``not_kept`` packets of these flows whose bytes netmon no longer had."""

    path: str = ""
    packets: int = 0
    flows: int = 0
    not_kept: int = 0
    error: str = ""


def no_packets_reason(flow: FlowView) -> str:
    """Why ``flow`` has no packets at all ("" when it was captured as packets)."""
    if flow.exported:
        return ("no packets exist for this flow: it comes from exported flow records "
                "(NetFlow/IPFIX), which carry totals only")
    if flow.listener:
        return ("no packets exist for this flow: it is a connection to netmon's listener, "
                "measured from the socket, not captured")
    return ""


@dataclass(frozen=True, slots=True)
class DissectNode:
    """One item of a protocol tree: its text as tshark shows it (untrusted: packet
    content), the bytes of the frame it covers, and its sub-items.

    ``start`` is -1 when the item covers no bytes of the frame: a generated field, or
    one of data that tshark reassembled, decrypted or decompressed from several frames.
    """

    label: str
    start: int = -1
    length: int = 0
    children: tuple[DissectNode, ...] = ()


def tree_lines(nodes: tuple[DissectNode, ...], depth: int = 0) -> tuple[str, ...]:
    """``nodes`` and their sub-items as indented lines, depth first."""
    out: list[str] = []
    stack = [(depth, n) for n in reversed(nodes)]
    while stack:
        d, node = stack.pop()
        out.append("    " * d + node.label)
        stack.extend((d + 1, c) for c in reversed(node.children))
    return tuple(out)


class EngineLink(Protocol):
    """What the UI may ask of the engine; every reply arrives once, off the UI thread."""

    def query_flows(self, query: FlowQuery, reply: Callable[[FlowPage], None]) -> None: ...

    def query_hosts(self, query: FlowQuery, reply: Callable[[HostPage], None]) -> None: ...

    def query_packets(self, flow_id: int, reply: Callable[[PacketList], None]) -> None: ...

    def dissect(self, flow_id: int, index: int,
                reply: Callable[[Dissection], None]) -> None: ...

    def export(self, request: ExportRequest, reply: Callable[[ExportResult], None]) -> None: ...

    def stop(self) -> None: ...

    def follow(self, flow_id: int, reply: Callable[[FollowStream], None]) -> None: ...

    def export_packets(self, request: PacketExportRequest,
                       reply: Callable[[PacketExportResult], None]) -> None: ...
