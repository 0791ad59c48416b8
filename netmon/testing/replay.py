"""Decode a capture file into counted batches, as the engine's ingest does, without an
engine: for tests and benchmarks that feed a packet store or the disk ring directly.

Pure module; runs on the caller's thread.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from netmon.flows.table import FlowTable
from netmon.ingest.batch import PacketBatch
from netmon.ingest.pcapstream import PcapStreamDecoder

CHUNK = 1 << 20  # bytes per decoder feed, as the file source reads


def counted_batches(path: str, chunk: int = CHUNK, table: FlowTable | None = None
                    ) -> Iterator[tuple[PacketBatch, np.ndarray, np.ndarray, np.ndarray]]:
    """Each decoded batch of ``path`` (read ``chunk`` bytes at a time) with its rows'
    flow ids, directions (a to b) and per-flow sequence numbers from ``table`` (a
    fresh one, flows never idle out, when not given)."""
    table = table if table is not None else FlowTable(max_flows=8_000_000,
                                                      idle_timeout=1e9, active_timeout=1e9)
    decoder = PcapStreamDecoder()
    with open(path, "rb") as fh:
        while data := fh.read(chunk):
            batch = decoder.feed_batch(data)
            if not len(batch):
                continue
            slots, lo_first, seq = table.add_batch(batch)
            yield batch, table.flow_id[slots], lo_first == table.a_is_lo[slots], seq
