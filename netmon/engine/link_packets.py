"""The engine link's answers about a flow's packet bytes: follow stream and packet
export (mixed into :class:`netmon.engine.link.EngineUILink`).

Threads, as for the rest of the link: the UI calls these methods on its thread; the
question runs on the reactor thread (or, once the engine has stopped, the link's own
thread), which copies what it needs (a FlowView, the flow's kept frames) out of the
flow table and packet store, and a worker thread does the slow part (reassembly,
writing the pcapng file) and replies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from netmon.core.link import (
    FollowStream,
    PacketExportRequest,
    PacketExportResult,
    no_packets_reason,
)
from netmon.core.values import PROTO_TCP, PROTO_UDP, FlowView, proto_name
from netmon.export.bundle import ExportError
from netmon.export.packets import write_packets
from netmon.ingest.follow import follow_frames

if TYPE_CHECKING:
    from netmon.flows.table import FlowTable
    from netmon.ingest.keptpackets import RingFrame


class FollowExportMixin:
    """``follow`` and ``export_packets`` of the EngineLink protocol; uses the link's
    ``engine``, ``_submit``, ``_guarded`` and ``_flow_view``."""

    engine: Any
    _submit: Callable
    _guarded: Callable
    _flow_view: Callable[[int], FlowView | None]
    _store: Callable[[int], tuple[Any, str]]

    # ------------------------------------------------------------------ follow stream
    def follow(self, flow_id: int, reply: Callable[[FollowStream], None]) -> None:
        def fail(msg: str) -> None:
            reply(FollowStream(flow_id, None, error=msg))

        def work(background: Callable) -> None:
            flow = self._flow_view(flow_id)
            if flow is None:
                fail(f"flow {flow_id} has ended: its stream can no longer be followed")
                return
            why = no_packets_reason(flow)
            if why:
                reply(FollowStream(flow_id, flow, error=why))
                return
            if flow.proto not in (PROTO_TCP, PROTO_UDP):
                reply(FollowStream(flow_id, flow, error="only TCP and UDP streams can be "
                                   f"followed; this is a {proto_name(flow.proto)} flow"))
                return
            frames = self._store(flow_id)[0].frames_of(flow_id)
            if not frames:
                reply(FollowStream(flow_id, flow, packets_not_kept=flow.packets,
                                   error=f"none of the {flow.packets:,} packets of flow "
                                   f"{flow_id} are kept: there is no payload to follow"))
                return
            background(lambda: self._follow_in_worker(flow, frames, reply))

        self._submit("follow", work, fail)

    def _follow_in_worker(self, flow: FlowView, frames: list[RingFrame],
                          reply: Callable[[FollowStream], None]) -> None:
        def run() -> None:
            a = (ipaddress.ip_address(flow.addr_a).packed, flow.port_a)
            b = (ipaddress.ip_address(flow.addr_b).packed, flow.port_b)
            out = follow_frames(frames, flow.proto, a, b)
            sums = {1: [0, 0], -1: [0, 0], 0: [0, 0]}
            for c in out.chunks:
                sums[c.direction][0] += len(c.data)
                sums[c.direction][1] += c.missing
            reply(FollowStream(flow.flow_id, flow, out.chunks, bytes_a2b=sums[1][0],
                               bytes_b2a=sums[-1][0], missing_a2b=sums[1][1],
                               missing_b2a=sums[-1][1], packets_used=out.frames_used,
                               packets_not_kept=max(flow.packets - len(frames), 0)))

        self._guarded("follow", run, lambda msg: reply(FollowStream(flow.flow_id, flow,
                                                                    error=msg)))

    # ------------------------------------------------------------------ export packets
    def export_packets(self, request: PacketExportRequest,
                       reply: Callable[[PacketExportResult], None]) -> None:
        def fail(msg: str) -> None:
            reply(PacketExportResult(error=msg))

        def work(background: Callable) -> None:
            t: FlowTable = self.engine.table
            live = t.live_slots()
            if request.flow_id is not None:
                slots = live[t.flow_id[live] == request.flow_id]
                what, name = f"flow {request.flow_id}", f"flow{request.flow_id}"
            elif request.cluster_id is not None:
                slots = live[t.cluster[live] == request.cluster_id]
                what, name = f"cluster {request.cluster_id}", f"cluster{request.cluster_id}"
            else:
                fail("nothing written: no flow or cluster was named")
                return
            if not len(slots):
                fail(f"nothing written: {what} has no live flows")
                return
            ids = t.flow_id[slots].tolist()
            total = int((t.pkts_ab[slots] + t.pkts_ba[slots]).sum())
            frames = []
            flows_with = 0
            for fid in ids:
                got = self._store(fid)[0].frames_of(fid)
                flows_with += bool(got)
                frames.extend(got)
            if not frames:
                conns = t.connections
                never = sum(1 for s, fid in zip(slots.tolist(), ids, strict=True)
                            if t.exported[s] or conns.get(s, (-1,))[0] == fid)
                nobody = ("no packets exist for them (exported flow records or listener "
                          "connections)" if never == len(ids)
                          else f"none of their {total:,} packets are kept")
                fail(f"nothing written: {what} ({len(ids):,} flows): {nobody}")
                return
            frames.sort(key=lambda f: f.ts)  # one capture in time order (sort is stable)
            background(lambda: self._export_packets_in_worker(
                request.directory, frames, name, flows_with, max(total - len(frames), 0),
                reply))

        self._submit("export_packets", work, fail)

    def _export_packets_in_worker(self, directory: str, frames: list[RingFrame], name: str,
                                  flows: int, not_kept: int,
                                  reply: Callable[[PacketExportResult], None]) -> None:
        def run() -> None:
            try:
                path = write_packets(directory, frames, name)
            except ExportError as exc:
                reply(PacketExportResult(error=str(exc)))
                return
            reply(PacketExportResult(path, len(frames), flows, not_kept))

        self._guarded("export_packets", run, lambda msg: reply(PacketExportResult(error=msg)))
