"""What every ingest source shares: the sink contract, status and a pcap-stream feeder.

Runs on the reactor thread only. A source turns bytes (from a file, a pipe or a
capture process) into columnar PacketBatches and hands them to the engine's
``sink``; it reports its end once, through ``on_done``, with an error text or
None. Sources that produce connections or flow records instead take those sinks
from :class:`EngineSinks` in :meth:`Source.connect`, which the engine calls on
every source before starting it. Sources never touch the FlowTable themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from netmon.core.errors import SourceError
from netmon.core.values import ConnectionRecord, SourceStatus
from netmon.ingest.batch import PacketBatch
from netmon.ingest.pcapstream import PcapStreamDecoder
from netmon.netflow.templates import FlowRecords

Sink = Callable[[PacketBatch], None]
#: Where a listener's connection records go.
ConnectionSink = Callable[[list[ConnectionRecord]], None]
#: Where a collector's flow records go, with the observation point of each row.
FlowRecordSink = Callable[[FlowRecords, np.ndarray], None]
DoneCallback = Callable[["Source", "SourceError | None"], None]


@dataclass(frozen=True)
class EngineSinks:
    """The engine's sinks, offered to every source by :meth:`Source.connect`; each
    source takes the ones for what it produces."""

    #: Decoded packets (every pcap source).
    packets: Sink
    #: Connection records (the listener).
    connections: ConnectionSink
    #: Flow records from exporters (the collector).
    flow_records: FlowRecordSink
    #: Registers an observation point by name and returns its index in the flow table.
    observer_id: Callable[[str], int]


class Source(ABC):
    """Base class: name, state, and the done-callback plumbing."""

    kind = "source"
    #: The pcap feeder of sources that decode a pcap stream (for decoder counters).
    feed: PcapFeed | None = None
    #: Something the header should say about this source (e.g. an SSH exclusion).
    note: str = ""
    #: Its observation point in the flow table (set by the engine; 0 = the first).
    obs: int = 0

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = "starting"
        self.detail = ""
        self.dropped = 0
        self._sink: Sink | None = None
        self._on_done: DoneCallback | None = None
        self._done = False

    def connect(self, sinks: EngineSinks) -> Sink:
        """Take what this source needs of the engine's ``sinks`` (before :meth:`start`);
        return the packet sink to start it with, which stamps every batch with this
        source's observation point :attr:`obs` unless that is the first (0).
        Sources that produce connections or flow records extend this to keep theirs."""
        packets = sinks.packets
        if not self.obs:
            return packets

        def stamped(batch: PacketBatch, obs: int = self.obs) -> None:
            packets(batch.observed_at(obs))

        return stamped

    def start(self, reactor: Any, sink: Sink, on_done: DoneCallback) -> None:
        """Begin producing records into ``sink``; call ``on_done`` once at the end."""
        self._sink = sink
        self._on_done = on_done
        self._begin(reactor)

    @abstractmethod
    def _begin(self, reactor: Any) -> None:
        """Start producing (each concrete source knows how)."""

    def pause(self) -> None:  # noqa: B027 - optional: live captures cannot wait
        """Stop delivering for a while (replays wait for the clusterer)."""

    def resume(self) -> None:  # noqa: B027 - optional, as pause()
        """Deliver again after :meth:`pause`."""

    @abstractmethod
    def stop(self) -> None:
        """Ask the source to stop; ``on_done`` follows when it has."""

    def status(self) -> SourceStatus:
        return SourceStatus(name=self.name, state=self.state, detail=self.detail,
                            dropped=self.dropped)

    def _finish(self, error: SourceError | None = None) -> None:
        if self._done:
            return
        self._done = True
        if error is not None:
            self.state = "failed"
            self.detail = error.message
        elif self.state != "failed":
            self.state = "finished"
        if self._on_done is not None:
            self._on_done(self, error)


class PcapFeed:
    """Bytes of a pcap/pcapng stream -> decoder -> sink; shared by every pcap source."""

    def __init__(self, sink_getter: Callable[[], Sink | None]) -> None:
        self.decoder = PcapStreamDecoder()
        self._sink_getter = sink_getter
        self.bytes_in = 0

    def data(self, chunk: bytes) -> None:
        self.bytes_in += len(chunk)
        self._deliver(self.decoder.feed_batch(chunk))

    def _deliver(self, batch: PacketBatch) -> None:
        if len(batch):
            sink = self._sink_getter()
            if sink is not None:
                sink(batch)

    def end(self) -> None:
        # Fragments still held for a first fragment that never came count now.
        self._deliver(self.decoder.close_batch())

    def restart(self) -> None:
        """A new stream (a restarted capture writes a new file header): fresh decoder,
        counters carried over so nothing counted so far is lost."""
        old, new = self.decoder, PcapStreamDecoder()
        new.frags = old.frags  # held fragments wait on across the restart
        for name in ("frames", "ip_frames", "nonip", "partial", "resync_bytes"):
            setattr(new, name, getattr(old, name))
        new.skipped = old.skipped
        self.decoder = new

    @property
    def error(self) -> str:
        return self.decoder.error

    @property
    def warning(self) -> str:
        return self.decoder.warning
