"""Frozen value types shared by every layer: packets, flow views, snapshots.

Pure module (no textual, no twisted). Values here are immutable so they can cross
from the reactor thread to the UI thread without locks.

Hot-path note: the decoder emits ``PacketRecord``s as *plain tuples* in the field
order below (building a NamedTuple instance costs ~3x a tuple literal at 300 k
packets/s); ``PacketRecord`` names the layout and can wrap one for readability
(``PacketRecord(*t)``) in tests and slow paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from netmon.core.sourcestats import CollectorStats, ListenerStats

#: IP protocol numbers netmon names.
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_NAMES = {PROTO_ICMP: "ICMP", PROTO_TCP: "TCP", PROTO_UDP: "UDP", PROTO_ICMPV6: "ICMPv6",
               2: "IGMP", 47: "GRE", 50: "ESP", 51: "AH", 89: "OSPF", 132: "SCTP", 112: "VRRP"}

#: TCP flag bits as they sit in the header's flags byte.
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10


class PacketRecord(NamedTuple):
    """One decoded frame (layout of the tuples the decoder emits).

    ``src``/``dst`` are packed addresses (4 or 16 bytes). ``sport``/``dport`` are 0
    for protocols without ports. ``flags`` is the TCP flags byte for TCP, the ICMP
    type for ICMP/ICMPv6, 0 otherwise. Non-first IP fragments carry the ports of
    their datagram's first fragment when it was seen.
    """

    ts: float
    wirelen: int
    proto: int
    src: bytes
    sport: int
    dst: bytes
    dport: int
    flags: int


class ConnectionRecord(NamedTuple):
    """One TCP connection seen by the listener source, with its totals so far.

    ``peer``/``local`` are packed addresses (4 or 16 bytes). Bytes are payload bytes
    and packets are reads, not frames. ``end_reason`` is "" while the connection is
    open (``end`` is then its last activity), else how it ended ("client-closed",
    "reset", "idle-timeout", "byte-cap", "connection-cap", "lifetime-cap",
    "stopped"). ``first_class`` is the class of its first bytes (see
    ``netmon.sources.firstbytes``) and ``preview`` their escaped text, never raw payload.
    ``sizesq``, ``iat_mean``/``iat_m2`` (Welford) and ``first_sizes`` (+ = from the
    peer) describe the reads as the flow table describes packets.
    """

    start: float
    end: float
    peer: bytes
    peer_port: int
    local: bytes
    local_port: int
    bytes_in: int
    bytes_out: int
    pkts_in: int
    pkts_out: int
    end_reason: str = ""
    first_class: str = ""
    preview: str = ""
    sizesq: float = 0.0
    iat_mean: float = 0.0
    iat_m2: float = 0.0
    first_sizes: tuple[int, ...] = ()


def proto_name(proto: int) -> str:
    """IP protocol number -> short name ("TCP", "UDP", "proto 99")."""
    return PROTO_NAMES.get(proto, f"proto {proto}")


@dataclass(frozen=True, slots=True)
class FlowView:
    """An immutable copy of one flow's counters, safe to hand to another thread.

    ``a`` is the initiator: the sender of the first packet seen, or of the SYN for
    TCP when the handshake was seen.
    """

    flow_id: int
    proto: int
    addr_a: str
    port_a: int
    addr_b: str
    port_b: int
    pkts_a2b: int
    bytes_a2b: int
    pkts_b2a: int
    bytes_b2a: int
    first_epoch: float
    last_epoch: float
    syn: int = 0
    synack: int = 0
    fin: int = 0
    rst: int = 0
    psh: int = 0
    size_mean: float = 0.0
    size_std: float = 0.0
    iat_mean: float = 0.0
    iat_std: float = 0.0
    first_sizes: tuple[int, ...] = ()
    end_reason: str = ""
    cluster_id: int | None = None
    cluster_label: str = ""
    outlier: float = 0.0
    #: Where it was seen: the source's name, or "exporter ADDR" for collected records.
    observer: str = ""
    #: Built from exported flow records (NetFlow/IPFIX): counts and times come from the
    #: exporter; packet sizes, gaps and first packets are unknown (see netmon.cluster.features).
    exported: bool = False
    #: The outer flow of a tunnel (GRE, IP-in-IP, VXLAN, GENEVE) whose inner packets
    #: are also flows: totals count its frames once, as the inner flows' packets.
    tunnel: bool = False
    #: A connection accepted by the listener source: measured from its socket, so no
    #: packets exist; what is known of its first bytes is their class (see
    #: netmon.sources.firstbytes; "" until classified) and an escaped preview.
    listener: bool = False
    first_class: str = ""
    preview: str = ""
    #: What the flow's own bytes (or a DNS answer for its responder) named: the server
    #: name, what it came from (NAME_SOURCES), the application protocol (ALPN or
    #: "http/1.1", "ssh", "dns", "quic"...), the client's TLS fingerprints and SSH
    #: software; all untrusted wire text, already capped and made terminal-safe.
    server_name: str = ""
    name_source: str = ""
    app: str = ""
    ja4: str = ""
    ja3: str = ""
    software: str = ""
    #: The local process behind the flow, for live capture on this machine (pid 0:
    #: not known; "unknown" once netmon gave up looking); container: the container it
    #: runs in. Both ends local (loopback): these are the initiator's, and
    #: ``peer_process`` is the responder's name.
    process: str = ""
    pid: int = 0
    user: str = ""
    container: str = ""
    peer_process: str = ""

    @property
    def packets(self) -> int:
        return self.pkts_a2b + self.pkts_b2a

    @property
    def bytes(self) -> int:
        return self.bytes_a2b + self.bytes_b2a

    @property
    def duration(self) -> float:
        return self.last_epoch - self.first_epoch

    @property
    def rate(self) -> float:
        """Bytes per second over its life (at least a second: a one-packet flow's
        rate is its size, not a division by zero)."""
        return self.bytes / max(self.last_epoch - self.first_epoch, 1.0)

    def to_json(self) -> dict:
        """The ``--flows-out`` line for this flow (a dict ready for ``json.dumps``)."""
        return {
            "flow_id": self.flow_id, "proto": self.proto,
            "addr_a": self.addr_a, "port_a": self.port_a,
            "addr_b": self.addr_b, "port_b": self.port_b,
            "pkts_a2b": self.pkts_a2b, "bytes_a2b": self.bytes_a2b,
            "pkts_b2a": self.pkts_b2a, "bytes_b2a": self.bytes_b2a,
            "first_epoch": round(self.first_epoch, 6), "last_epoch": round(self.last_epoch, 6),
            "syn": self.syn, "synack": self.synack, "fin": self.fin, "rst": self.rst,
            "psh": self.psh,
            "size_mean": round(self.size_mean, 3), "size_std": round(self.size_std, 3),
            "iat_mean": round(self.iat_mean, 6), "iat_std": round(self.iat_std, 6),
            "first_sizes": list(self.first_sizes), "end_reason": self.end_reason,
            "cluster_id": self.cluster_id, "cluster_label": self.cluster_label,
            "outlier": round(self.outlier, 3), "observer": self.observer,
            "exported": self.exported, "tunnel": self.tunnel,
            "server_name": self.server_name, "name_source": self.name_source,
            "app": self.app, "ja4": self.ja4, "ja3": self.ja3, "software": self.software,
            "process": self.process, "pid": self.pid, "user": self.user,
            "container": self.container, "peer_process": self.peer_process,
        }


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One display cluster as the UI and JSON output see it; immutable.

    ``history`` is the cluster's bytes/s per tick, oldest first (sparklines; the
    snapshot's ``history_times`` say when); ``share`` is its part of the tick's bytes,
    0..1 (of all bytes, in a finished replay's averages).
    """

    cluster_id: int
    label: str
    flows: int
    hosts: int
    pkt_rate: float
    byte_rate: float
    share: float
    top_ports: tuple[tuple[int, int], ...] = ()  # (server port, flows)
    top_hosts: tuple[tuple[str, int], ...] = ()  # (address, flows)
    history: tuple[float, ...] = ()
    outliers: int = 0  # member flows flagged as new behaviour
    new: bool = False  # minted within the last few ticks
    flows_total: int = 0  # flows seen in it: live (``flows``) and ended
    last_active: float = 0.0  # when it last had traffic (capture time in replays)
    packets: int = 0  # since the start (a tunnel's outer frames through its inner flows)
    bytes: int = 0

    def to_json(self) -> dict:
        return {
            "id": self.cluster_id, "label": self.label, "flows": self.flows,
            "hosts": self.hosts, "pkt_rate": round(self.pkt_rate, 3),
            "byte_rate": round(self.byte_rate, 3), "share": round(self.share, 4),
            "top_ports": [list(p) for p in self.top_ports],
            "top_hosts": [list(h) for h in self.top_hosts],
            "history": [round(x, 1) for x in self.history], "outliers": self.outliers,
            "new": self.new, "flows_total": self.flows_total,
            "last_active": round(self.last_active, 3), "packets": self.packets,
            "bytes": self.bytes,
        }


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """What a source says about itself: shown in the header and headless line."""

    name: str
    state: str  # "starting", "running", "finished", "failed", "restarting"
    detail: str = ""
    dropped: int = 0  # packets the capture tool reports as dropped
    listener: ListenerStats | None = None  # set by the listener source only
    collector: CollectorStats | None = None  # set by flow-export collectors only

    def to_json(self) -> dict:
        out = {"name": self.name, "state": self.state, "detail": self.detail,
               "dropped": self.dropped}
        if self.listener is not None:
            out["listener"] = self.listener.to_json()
        if self.collector is not None:
            out["collector"] = self.collector.to_json()
        return out


@dataclass(frozen=True, slots=True)
class HostView:
    """One source address (the initiator of its flows) over the live flows; immutable.

    ``conns_per_min`` counts flows it started within the last minute (or the idle
    timeout, if shorter, scaled to a minute); ``ports``/``peers`` are the distinct
    responder ports and addresses it touched; durations are of its live flows.
    ``cluster_id``/``label`` group hosts that behave alike (scanners, chatty
    clients, bulk clients, ...).
    """

    addr: str
    flows: int
    conns_per_min: float
    ports: int
    peers: int
    bytes_out: int  # sent by this host
    bytes_in: int  # received by this host
    dur_mean: float
    dur_std: float
    dur_max: float
    cluster_id: int = 0
    label: str = ""

    def to_json(self) -> dict:
        return {"addr": self.addr, "flows": self.flows,
                "conns_per_min": round(self.conns_per_min, 2), "ports": self.ports,
                "peers": self.peers, "bytes_out": self.bytes_out, "bytes_in": self.bytes_in,
                "dur_mean": round(self.dur_mean, 6), "dur_std": round(self.dur_std, 6),
                "dur_max": round(self.dur_max, 6), "cluster_id": self.cluster_id,
                "label": self.label}


@dataclass(frozen=True, slots=True)
class Totals:
    """Cumulative counters since start."""

    packets: int = 0
    bytes: int = 0
    ip_packets: int = 0
    nonip_frames: int = 0
    skipped: int = 0  # frames the decoder could not decode
    skipped_reasons: tuple[tuple[str, int], ...] = ()
    flows_live: int = 0
    flows_seen: int = 0
    flows_expired: int = 0
    flows_evicted: int = 0
    #: IP fragments whose first fragment never came (counted in a port-0 flow).
    fragments_unmatched: int = 0


@dataclass(frozen=True, slots=True)
class ProcessTotal:
    """Traffic of one local process (by name and container) since the start: packets,
    bytes and flows of its flows, ended and live. ``kind`` is "process", or "other"
    (the processes past the top few, together) or "unknown" (traffic no process was
    found for); a snapshot's entries add up to its IP packets, bytes and flows."""

    name: str
    packets: int
    bytes: int
    flows: int
    container: str = ""
    kind: str = "process"

    def to_json(self) -> dict:
        return {"name": self.name, "container": self.container, "kind": self.kind,
                "packets": self.packets, "bytes": self.bytes, "flows": self.flows}


@dataclass(frozen=True, slots=True)
class Unclustered:
    """Traffic of a tick in no cluster shown: the clusterer's warm-up, flows it has not
    placed. With the clusters' rates it adds up to the header's (tunnels' outer
    frames aside, counted once through their inner flows)."""

    flows: int = 0  # live flows in no cluster shown
    pkt_rate: float = 0.0
    byte_rate: float = 0.0
    flows_total: int = 0  # ... and the ended flows in none

    def to_json(self) -> dict:
        return {"flows": self.flows, "pkt_rate": round(self.pkt_rate, 3),
                "byte_rate": round(self.byte_rate, 3), "flows_total": self.flows_total}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the UI or a headless printer needs for one tick; immutable."""

    seq: int
    wall_time: float
    capture_time: float
    elapsed: float
    totals: Totals
    pkt_rate: float
    byte_rate: float
    sources: tuple[SourceStatus, ...] = ()
    top_flows: tuple[FlowView, ...] = ()
    clusters: tuple[ClusterView, ...] = ()
    unclustered: Unclustered = Unclustered()
    warnings: tuple[str, ...] = ()
    finished: bool = False
    hosts: tuple[HostView, ...] = ()  # busiest source addresses, see netmon.cluster.hosts
    ssh_excluded: str = ""  # the SSH connection left out of the capture ("" = none)
    #: Per-process totals where flows are attributed (live capture here, --ssh hosts
    #: with ss); empty otherwise (replays). See ProcessTotal.
    processes: tuple[ProcessTotal, ...] = ()
    #: What rates, ``elapsed`` and the history follow: "wall" (live sources) or
    #: "capture" (replays: seconds of capture time played, see CaptureClock).
    clock: str = "wall"
    #: When each point of the clusters' histories ended, on that clock, oldest first,
    #: with the start of the oldest one first (one more than the longest history).
    history_times: tuple[float, ...] = ()
    #: Rates are averages over the whole run (a finished replay), not the last tick's.
    averaged: bool = False
    #: Wall-clock seconds since the run began (``elapsed`` is on ``clock``).
    wall_elapsed: float = 0.0

    def to_json(self) -> dict:
        """The ``--json`` line for this tick (a dict ready for ``json.dumps``)."""
        t = self.totals
        return {
            "seq": self.seq, "time": round(self.wall_time, 3),
            "capture_time": round(self.capture_time, 6), "elapsed": round(self.elapsed, 3),
            "clock": self.clock, "averaged": self.averaged,
            "wall_elapsed": round(self.wall_elapsed, 3),
            "history_times": [round(x, 3) for x in self.history_times],
            "finished": self.finished,
            "packets": t.packets, "bytes": t.bytes, "ip_packets": t.ip_packets,
            "nonip_frames": t.nonip_frames, "skipped": t.skipped,
            "skipped_reasons": dict(t.skipped_reasons),
            "flows_live": t.flows_live, "flows_seen": t.flows_seen,
            "flows_expired": t.flows_expired, "flows_evicted": t.flows_evicted,
            "fragments_unmatched": t.fragments_unmatched,
            "pkt_rate": round(self.pkt_rate, 3), "byte_rate": round(self.byte_rate, 3),
            "sources": [s.to_json() for s in self.sources],
            "top_flows": [f.to_json() for f in self.top_flows],
            "clusters": [c.to_json() for c in self.clusters],
            "unclustered": self.unclustered.to_json(),
            "warnings": list(self.warnings),
            "hosts": [h.to_json() for h in self.hosts],
            "ssh_excluded": self.ssh_excluded,
            "processes": [p.to_json() for p in self.processes],
        }

