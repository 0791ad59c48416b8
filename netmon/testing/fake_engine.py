"""A made-up network for the UI: deterministic flows, clusters, snapshots and an
:class:`~netmon.core.link.EngineLink` that answers from them.

Pure Python, no Textual. Used by the UI tests, the snapshot tests and the UI
benchmark (``netmon.bench.ui``), so the screens can be exercised without a reactor,
tshark or a network. ``FakeLink(threaded=True)`` answers on its own thread, as the
engine does; the default answers inside the call, which keeps tests deterministic.
"""

from __future__ import annotations

import heapq
import math
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from netmon.core.link import (
    Dissection,
    ExportRequest,
    ExportResult,
    FlowPage,
    FlowQuery,
    FollowChunk,
    FollowStream,
    HostPage,
    HostRow,
    PacketExportRequest,
    PacketExportResult,
    PacketInfo,
    PacketList,
    no_packets_reason,
)
from netmon.core.values import (
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    ClusterView,
    FlowView,
    Snapshot,
    SourceStatus,
    Totals,
    proto_name,
)
from netmon.testing.fake_dissect import fake_dissection

#: (label, protocol, server port, mean bytes/s, flows per 1000) of the made-up clusters.
BEHAVIOURS = (
    ("TCP/443 bulk download", PROTO_TCP, 443, 4.2e6, 180),
    ("UDP/53 request-response", PROTO_UDP, 53, 3.1e4, 260),
    ("TCP/22 interactive", PROTO_TCP, 22, 5.5e3, 20),
    ("SYN-only probes", PROTO_TCP, 8080, 1.2e3, 120),
    ("TCP/80 short web", PROTO_TCP, 80, 2.5e5, 150),
    ("ICMP echo", PROTO_ICMP, 0, 8.0e2, 30),
    ("UDP/123 time sync", PROTO_UDP, 123, 3.0e2, 40),
    ("UDP/443 streaming", PROTO_UDP, 443, 1.8e6, 200),
)

EPOCH = 1_700_000_000.0


@dataclass(frozen=True)
class FakeWorld:
    """Flows grouped into clusters; :meth:`snapshot` makes the engine's tick ``seq``."""

    flows: tuple[FlowView, ...]
    cluster_ids: tuple[int, ...]
    source: str = "file demo.pcap"
    tick: float = 0.5
    history: int = 240

    def cluster_view(self, cid: int, seq: int, flows: int, hosts: int) -> ClusterView:
        label, _proto, port, _rate, _ = BEHAVIOURS[cid % len(BEHAVIOURS)]
        if cid >= len(BEHAVIOURS):
            label = f"{label} #{cid // len(BEHAVIOURS) + 1}"
        hist = tuple(self.rate(cid, s) for s in range(max(seq - self.history + 1, 1), seq + 1))
        byte_rate = hist[-1] if hist else 0.0
        return ClusterView(
            cluster_id=cid, label=label, flows=flows, hosts=hosts,
            pkt_rate=byte_rate / 700.0, byte_rate=byte_rate, share=0.0,
            top_ports=((port, flows),) if port else (),
            top_hosts=((f"192.0.2.{cid % 250 + 1}", flows),), history=hist,
            outliers=(cid * 7) % 3 if cid % 4 == 1 else 0, new=(cid == 3 and seq < 40),
        )

    @staticmethod
    def rate(cid: int, seq: int) -> float:
        base = BEHAVIOURS[cid % len(BEHAVIOURS)][3] / (1 + cid // len(BEHAVIOURS))
        return round(base * (1.0 + 0.6 * math.sin(seq / 6.0 + cid)) + base * 0.05, 1)

    def snapshot(self, seq: int, *, finished: bool = False, paused_source: bool = False,
                 ssh_excluded: str = "") -> Snapshot:
        counts: dict[int, int] = {}
        hosts: dict[int, set[str]] = {}
        for f in self.flows:
            counts[f.cluster_id] = counts.get(f.cluster_id, 0) + 1
            hosts.setdefault(f.cluster_id, set()).update((f.addr_a, f.addr_b))
        views = [self.cluster_view(c, seq, counts.get(c, 0), len(hosts.get(c, ())))
                 for c in self.cluster_ids]
        total = sum(v.byte_rate for v in views) or 1.0
        views = [replace(v, share=v.byte_rate / total) for v in views]
        byte_rate = sum(v.byte_rate for v in views)
        pkt_rate = sum(v.pkt_rate for v in views)
        packets = int(pkt_rate * self.tick * seq)
        state = "finished" if finished else ("starting" if paused_source else "running")
        return Snapshot(
            seq=seq, wall_time=EPOCH + seq * self.tick, capture_time=EPOCH + seq * self.tick,
            elapsed=seq * self.tick,
            totals=Totals(packets=packets, bytes=int(byte_rate * self.tick * seq),
                          ip_packets=packets, skipped=3, flows_live=len(self.flows),
                          flows_seen=len(self.flows) + 17, flows_evicted=0),
            pkt_rate=pkt_rate, byte_rate=byte_rate,
            sources=(SourceStatus(self.source, state, dropped=0),),
            clusters=tuple(views), finished=finished, ssh_excluded=ssh_excluded,
            history_times=tuple(s * self.tick for s in range(max(seq - self.history, 0),
                                                             seq + 1)),
        )

    def snapshots(self, count: int, first: int = 1) -> list[Snapshot]:
        return [self.snapshot(s) for s in range(first, first + count)]


def make_world(n_flows: int = 120, n_clusters: int = 6, **kw: object) -> FakeWorld:
    """A deterministic world of ``n_flows`` flows in ``n_clusters`` clusters."""
    flows = []
    weights = [BEHAVIOURS[c % len(BEHAVIOURS)][4] for c in range(n_clusters)]
    total_w = sum(weights)
    fid = 0
    for cid in range(n_clusters):
        label, proto, port, _rate, _ = BEHAVIOURS[cid % len(BEHAVIOURS)]
        n = max(1, n_flows * weights[cid] // total_w)
        for i in range(n):
            fid += 1
            client = f"10.{cid}.{i // 250}.{i % 250 + 1}"
            server = (f"2001:db8::{cid:x}:{i % 7 + 1}" if cid == 7
                      else f"192.0.2.{cid * 10 + i % 5 + 1}")
            pk = 4 + (i * 37 + cid * 11) % 900
            by = pk * (60 + (i * 13) % 1400)
            first = EPOCH - 30 + (i % 97) * 0.25
            flows.append(FlowView(
                flow_id=fid, proto=proto, addr_a=client,
                port_a=0 if proto == PROTO_ICMP else 40000 + (i * 7919) % 25000,
                addr_b=server, port_b=port, pkts_a2b=pk // 3, bytes_a2b=by // 4,
                pkts_b2a=pk - pk // 3, bytes_b2a=by - by // 4, first_epoch=first,
                last_epoch=first + 0.5 + (i % 41) * 0.7, syn=1 if proto == PROTO_TCP else 0,
                synack=1 if proto == PROTO_TCP and cid != 3 else 0,
                fin=2 if proto == PROTO_TCP and i % 3 == 0 else 0, psh=pk // 5,
                size_mean=by / pk, size_std=(by / pk) / 3, iat_mean=0.02 + (i % 9) / 100,
                iat_std=0.01, first_sizes=(74, -74, 66, 583, -1514),
                cluster_id=cid, cluster_label=label, outlier=((i * 31) % 100) / 25.0,
            ))
    return FakeWorld(flows=tuple(flows), cluster_ids=tuple(range(n_clusters)), **kw)


def with_packetless_flows(world: FakeWorld) -> FakeWorld:
    """``world`` plus two flows without packets, in cluster 0: a listener connection
    (its first bytes an HTTP request with an escape sequence in it, escaped as the
    listener escapes it) and a NetFlow record."""
    top = max(f.flow_id for f in world.flows)
    base = dict(proto=PROTO_TCP, pkts_b2a=0, bytes_b2a=0, first_epoch=EPOCH - 20,
                last_epoch=EPOCH - 18, cluster_id=0, cluster_label=world.flows[0].cluster_label)
    listener = FlowView(flow_id=top + 1, addr_a="10.9.9.9", port_a=51000, addr_b="10.0.0.1",
                        port_b=8080, pkts_a2b=3, bytes_a2b=96, syn=1, synack=1,
                        observer="listener :8080", listener=True, first_class="http",
                        preview="GET /\\x1b[2J HTTP/1.1\\r\\nHost: x\\r\\n", **base)
    exported = FlowView(flow_id=top + 2, addr_a="10.8.8.8", port_a=52000, addr_b="192.0.2.1",
                        port_b=443, pkts_a2b=120, bytes_a2b=90_000,
                        observer="exporter 127.0.0.1", exported=True, **base)
    return replace(world, flows=(*world.flows, listener, exported))


def fake_stream(flow: FlowView) -> tuple[FollowChunk, ...]:
    """A made-up stream for ``flow``: an HTTP exchange with a hole for TCP, a few
    datagrams for UDP; with bytes a terminal would act on, as real payload has."""
    if flow.proto == PROTO_UDP:
        return (FollowChunk(1, b"\x12\x34\x01\x00\x00\x01query.example\x00"),
                FollowChunk(-1, b"\x12\x34\x81\x80\x00\x01answer\x00\xc0\x0c"),
                FollowChunk(0, packets=3),
                FollowChunk(1, b"\x56\x78 second query"))
    body = b"".join(b"line %d of the page\n" % i for i in range(40))
    return (FollowChunk(1, b"GET /index.html HTTP/1.1\r\nHost: example.test\r\n"
                           b"User-Agent: \x1b[2J\x1b]0;pwned\x07curl\r\n\r\n"),
            FollowChunk(-1, b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n" + body[:300]),
            FollowChunk(-1, missing=1234),
            FollowChunk(-1, body[300:] + b"\x00\x01\xff binary tail"),
            FollowChunk(1, b"GET /favicon.ico HTTP/1.1\r\n\r\n"))


# ------------------------------------------------------------------ filter language
def _compile(text: str) -> Callable[[FlowView], bool]:
    """A tiny version of the engine's filter language: ``host A``, ``port N``,
    ``proto tcp``, ``cluster N``, joined by ``and``, negated by ``not``."""
    words = text.split()
    tests: list[Callable[[FlowView], bool]] = []
    i = 0
    while i < len(words):
        negate = False
        while i < len(words) and words[i] == "not":
            negate, i = not negate, i + 1
        if i + 1 >= len(words):
            raise ValueError(f"expected 'host A', 'port N', 'proto P' or 'cluster N' "
                             f"at {' '.join(words[i:]) or 'end'!r}")
        kind, arg = words[i], words[i + 1]
        i += 2
        if kind == "host":
            def test(f: FlowView, a: str = arg) -> bool:
                return a in (f.addr_a, f.addr_b)
        elif kind == "port" and arg.isdigit():
            def test(f: FlowView, p: int = int(arg)) -> bool:
                return p in (f.port_a, f.port_b)
        elif kind == "proto":
            def test(f: FlowView, p: str = arg.upper()) -> bool:
                return proto_name(f.proto).upper() == p
        elif kind == "cluster" and arg.isdigit():
            def test(f: FlowView, c: int = int(arg)) -> bool:
                return f.cluster_id == c
        else:
            raise ValueError(f"unknown filter term {kind} {arg!r}")
        tests.append((lambda f, t=test: not t(f)) if negate else test)
        if i < len(words):
            if words[i] != "and":
                raise ValueError(f"expected 'and' before {words[i]!r}")
            i += 1
            if i == len(words):
                raise ValueError("filter ends with 'and'")
    return lambda f: all(t(f) for t in tests)


def _sort_value(flow: FlowView, key: str) -> object:
    return getattr(flow, key)


class FakeLink:
    """Answers the UI's questions from a :class:`FakeWorld`."""

    def __init__(self, world: FakeWorld, *, threaded: bool = False) -> None:
        self.world = world
        self.requests: list[object] = []
        """Every question asked, in order (tests look at them)."""
        self.stopped = False
        self.hold = False
        """While True, questions are recorded but not answered (tests of "loading")."""
        self._by_id = {f.flow_id: f for f in world.flows}
        self._by_cluster: dict[int | None, list[FlowView]] = {None: list(world.flows)}
        for f in world.flows:
            self._by_cluster.setdefault(f.cluster_id, []).append(f)
        self._queue: queue.SimpleQueue | None = None
        if threaded:
            self._queue = queue.SimpleQueue()
            threading.Thread(target=self._serve, name="netmon-fake-link", daemon=True).start()

    def _serve(self) -> None:
        assert self._queue is not None
        while True:
            job = self._queue.get()
            if job is None:
                return
            job()

    def _answer(self, request: object, job: Callable[[], None]) -> None:
        self.requests.append(request)
        if self.hold:
            return
        if self._queue is not None:
            self._queue.put(job)
        else:
            job()

    def _select(self, q: FlowQuery) -> list[FlowView]:
        flows = self._by_cluster.get(q.cluster_id, [])
        if q.filter.strip():
            match = _compile(q.filter)
            flows = [f for f in flows if match(f)]
        return flows

    def query_flows(self, query: FlowQuery, reply: Callable[[FlowPage], None]) -> None:
        def job() -> None:
            try:
                flows = self._select(query)
            except ValueError as exc:
                reply(FlowPage(query, (), 0, error=str(exc)))
                return
            end = query.offset + query.limit

            def key(f: FlowView) -> tuple:
                return (_sort_value(f, query.sort), -f.flow_id)

            if query.descending:
                page = heapq.nlargest(end, flows, key=key)
            else:
                page = heapq.nsmallest(end, flows, key=key)
            reply(FlowPage(query, tuple(page[query.offset:end]), len(flows)))

        self._answer(query, job)

    def query_hosts(self, query: FlowQuery, reply: Callable[[HostPage], None]) -> None:
        def job() -> None:
            try:
                flows = self._select(query)
            except ValueError as exc:
                reply(HostPage(query, (), 0, error=str(exc)))
                return
            acc: dict[str, list] = {}
            for f in flows:
                for addr, peer, port in ((f.addr_a, f.addr_b, f.port_b),
                                         (f.addr_b, f.addr_a, f.port_b)):
                    row = acc.setdefault(addr, [0, set(), set(), 0, 0])
                    row[0] += 1
                    row[1].add(peer)
                    row[2].add(port)
                    row[3] += f.packets
                    row[4] += f.bytes
            rows = sorted((HostRow(a, r[0], len(r[1]), len(r[2]), r[3], r[4])
                           for a, r in acc.items()), key=lambda h: (-h.bytes, h.address))
            reply(HostPage(query, tuple(rows[query.offset:query.offset + query.limit]),
                           len(rows)))

        self._answer(("hosts", query), job)

    def query_packets(self, flow_id: int, reply: Callable[[PacketList], None]) -> None:
        def job() -> None:
            flow = self._by_id.get(flow_id)
            if flow is None:
                reply(PacketList(flow_id, None, (), error="flow no longer live"))
                return
            # As the packet store keeps them: the first 32 and the most recent 32.
            kept = [*range(min(flow.packets, 32)), *range(max(flow.packets - 32, 32),
                                                          flow.packets)]
            packets = []
            for i in kept:
                forward = i % 3 != 1
                flags = ""
                if flow.proto == PROTO_TCP:
                    flags = ("SYN" if i == 0 else "SYN,ACK" if i == 1
                             else "FIN,ACK" if i == flow.packets - 1
                             else "PSH,ACK" if i % 4 == 3 else "ACK")
                packets.append(PacketInfo(index=i, ts=flow.first_epoch + i * flow.iat_mean,
                                          direction=1 if forward else -1,
                                          size=60 + (i * 211) % 1454, flags=flags,
                                          kept="first" if i < 32 else "recent"))
            reply(PacketList(flow_id, flow, tuple(packets), total=flow.packets,
                             kept=len(packets)))

        self._answer(("packets", flow_id), job)

    def dissect(self, flow_id: int, index: int, reply: Callable[[Dissection], None]) -> None:
        def job() -> None:
            flow = self._by_id.get(flow_id)
            if flow is None:
                reply(Dissection(flow_id, index, (), error="packet no longer retained"))
                return
            reply(fake_dissection(flow, index))

        self._answer(("dissect", flow_id, index), job)

    def export(self, request: ExportRequest, reply: Callable[[ExportResult], None]) -> None:
        def job() -> None:
            base = request.directory.rstrip("/")
            paths = tuple(f"{base}/netmon-{kind}" for kind in
                          ("flows.csv", "flows.json", "clusters.csv", "clusters.json"))
            bpf = ""
            if request.cluster_id is not None:
                ports = sorted({f.port_b for f in self._by_cluster.get(request.cluster_id, [])
                                if f.port_b})
                bpf = " or ".join(f"port {p}" for p in ports[:5]) or "icmp"
            reply(ExportResult(paths, bpf=bpf, flows=len(self.world.flows),
                               clusters=len(self.world.cluster_ids),
                               bpf_cluster=request.cluster_id if bpf else None))

        self._answer(request, job)

    def stop(self) -> None:
        self.stopped = True
        if self._queue is not None:
            self._queue.put(None)

    def follow(self, flow_id: int, reply: Callable[[FollowStream], None]) -> None:
        def job() -> None:
            flow = self._by_id.get(flow_id)
            if flow is None:
                reply(FollowStream(flow_id, None, error="flow no longer live"))
                return
            why = no_packets_reason(flow)
            if flow.proto not in (PROTO_TCP, PROTO_UDP) and not why:
                why = f"only TCP and UDP streams can be followed; this is a " \
                      f"{proto_name(flow.proto)} flow"
            if why:
                reply(FollowStream(flow_id, flow, error=why))
                return
            chunks = fake_stream(flow)

            def total(d: int, field: str) -> int:
                return sum(len(c.data) if field == "data" else c.missing
                           for c in chunks if c.direction == d)

            reply(FollowStream(flow_id, flow, chunks, bytes_a2b=total(1, "data"),
                               bytes_b2a=total(-1, "data"), missing_a2b=total(1, "missing"),
                               missing_b2a=total(-1, "missing"), packets_used=12,
                               packets_not_kept=max(flow.packets - 40, 0)))

        self._answer(("follow", flow_id), job)

    def export_packets(self, request: PacketExportRequest,
                       reply: Callable[[PacketExportResult], None]) -> None:
        def job() -> None:
            if request.flow_id is not None:
                flows = [f for f in (self._by_id.get(request.flow_id),) if f is not None]
                name = f"flow{request.flow_id}"
            else:
                flows = list(self._by_cluster.get(request.cluster_id, []))
                name = f"cluster{request.cluster_id}"
            with_packets = [f for f in flows if not no_packets_reason(f)]
            if not with_packets:
                what = "flow" if request.flow_id is not None else "cluster"
                reply(PacketExportResult(error=f"nothing written: the {what} has no "
                                         "packets (exported records or listener "
                                         "connections)" if flows else
                                         f"nothing written: no such {what}"))
                return
            kept = sum(min(f.packets, 40) for f in with_packets)
            total = sum(f.packets for f in flows)
            reply(PacketExportResult(f"{request.directory.rstrip('/')}/netmon-{name}.pcapng",
                                     kept, len(with_packets), total - kept))

        self._answer(request, job)
